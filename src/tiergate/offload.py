"""CPU-bound work on large inputs, off the event loop.

One event loop serves every connection: decoding, validating or scanning a 4 MB body on it stalls every
stream in flight for as long. :func:`off_loop` runs such work in the loop's default executor (at most
``min(32, CPUs + 4)`` threads, ``asyncio.to_thread``) when its input is large, and inline when it is small,
where the hop to a thread would cost more than the work. Work that holds the GIL in C (``json.loads``, a
pydantic validation) still pauses the loop while it runs: the request limits (:mod:`tiergate.api.intake`)
bound how long.

    >>> import asyncio
    >>> asyncio.run(off_loop(10, sum, [1, 2, 3]))  # small: inline
    6
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Inputs up to this size (bytes or characters) are handled on the loop.
INLINE_LIMIT = 64 * 1024


def json_bytes(value: object) -> bytes:
    """``value`` as a compact UTF-8 JSON body (as httpx encodes ``json=``); ``NaN`` is refused. A string UTF-8
    cannot carry (a lone surrogate, from JSON the gateway decoded itself) is sent escaped, for the upstream to
    judge, rather than failing here."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


async def off_loop(size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, in a worker thread when ``size`` is over :data:`INLINE_LIMIT`."""
    if size <= INLINE_LIMIT:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
