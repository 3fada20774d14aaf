"""Work on large inputs runs off the event loop's thread; small work stays on it."""

from __future__ import annotations

import threading

from tiergate.offload import INLINE_LIMIT, json_bytes, off_loop


async def test_large_work_runs_in_another_thread_and_small_work_inline() -> None:
    loop_thread = threading.get_ident()
    assert await off_loop(INLINE_LIMIT, threading.get_ident) == loop_thread
    assert await off_loop(INLINE_LIMIT + 1, threading.get_ident) != loop_thread


async def test_arguments_and_results_pass_through() -> None:
    assert await off_loop(10**7, json_bytes, {"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
