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


def test_a_string_utf8_cannot_carry_is_escaped_not_an_error() -> None:
    """A lone surrogate from JSON the gateway decoded itself goes upstream escaped, for the upstream to judge."""
    assert json_bytes({"q": "a\ud800", "r": "é"}) == b'{"q":"a\\ud800","r":"\\u00e9"}'
    assert json_bytes({"r": "é"}) == '{"r":"é"}'.encode()
