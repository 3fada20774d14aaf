"""CPU-bound work on large inputs, off the event loop.

One event loop serves every connection: decoding, validating or scanning a 4 MB body on it stalls every
stream in flight for as long. :func:`off_loop` runs such work in the loop's default executor (at most
``min(32, CPUs + 4)`` threads, ``asyncio.to_thread``) when its input is large, and inline when it is small,
where the hop to a thread would cost more than the work. Work that holds the GIL in C (``json.loads``, a
pydantic validation) still pauses the loop while it runs: the request limits (:mod:`tiergate.api.intake`)
bound how long, and :class:`Parsers` sends the largest bodies' parse to a worker process instead.

    >>> import asyncio
    >>> asyncio.run(off_loop(10, sum, [1, 2, 3]))  # small: inline
    6
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

log = logging.getLogger("tiergate.offload")
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


class Parsers:
    """Where a request body is decoded and validated, by its size in bytes.

    - up to :data:`INLINE_LIMIT`: on the loop (the hop would cost more than the work);
    - up to ``process_bytes``: in a thread, one large body at a time, so that the GIL-holding steps of two parses
      (``json.loads``, pydantic's validation, both in C) never follow each other while the loop waits for both;
    - over it, when ``workers`` > 0: in one of ``workers`` processes (``spawn``, started on the first such body),
      which hold their own GIL. The loop's process only pickles the bytes out and unpickles the parsed result
      (a few ms for a 4 MB body, in the pool's own thread, with Python-level steps the loop can cut in between).

    A worker must get a module-level function and picklable arguments, and give back a picklable result or
    exception (:class:`~tiergate.errors.TiergateError` pickles whatever its ``__init__`` asks). A worker that dies
    (killed, out of memory) costs no request: the pool is built again and that body parsed in a thread.
    ``where`` (optional) is called with ``"inline"``, ``"thread"`` or ``"process"`` where each body is sent (a
    metric; a body whose worker died is sent to a thread after it).
    """

    def __init__(
        self, workers: int = 0, process_bytes: int = 1024 * 1024, where: Callable[[str], None] | None = None
    ) -> None:
        self.workers = workers
        self.process_bytes = process_bytes
        self._where = where
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._threads: asyncio.Semaphore | None = None  # made on the loop that uses it

    async def run(self, size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` for a body of ``size`` bytes, where its size says."""
        if size <= INLINE_LIMIT:
            self._count("inline")
            return fn(*args, **kwargs)
        if self.workers > 0 and size > self.process_bytes and not self._closed:
            self._count("process")
            try:
                return await asyncio.wrap_future(self._executor().submit(fn, *args, **kwargs))
            except BrokenProcessPool:
                log.warning("a body parser process died; starting another, this body parsed in a thread")
                self._reset()
        if self._threads is None:
            self._threads = asyncio.Semaphore(1)
        async with self._threads:
            self._count("thread")
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def close(self) -> None:
        """Stop the workers (at shutdown, waiting for a parse under way); bodies after this are parsed in threads."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _count(self, where: str) -> None:
        if self._where is not None:
            self._where(where)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # never fork a process that runs threads and a loop
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_started)
        return self._pool

    def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _worker_started() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the gateway's own shutdown stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
