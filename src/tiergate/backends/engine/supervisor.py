"""The gateway's side of the embedded engine: one supervised worker process, requests multiplexed over its pipe.

States (``/readyz`` shows them): ``starting`` -> ``ready``; a worker that exits becomes ``restarting`` (each
request in flight on it fails with :class:`UpstreamUnavailable`, which the dispatcher handles as any failed
backend), is started again after a backoff (``restart_base_s``, doubling to ``restart_cap_s``; back to the base
once a worker has served for ``crash_window_s``), and ``ready`` again after its self-test. ``down`` is final: the
first worker failed its self-test (a broken engine build: one clear line in the log), or ``crash_loop`` exits
workers in a row each exited within ``crash_window_s`` of passing their self-test.

Requests that arrive while the worker (re)starts wait for it, bounded by the caller's own timeouts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from tiergate.errors import UpstreamUnavailable

log = logging.getLogger("tiergate.engine")
JSON = dict[str, Any]
State = Literal["starting", "ready", "restarting", "down", "closed"]
TERMINAL = frozenset({"end", "count", "error"})
TROUBLESHOOTING = "see README: Troubleshooting the embedded engine"


def describe_exit(code: int | None) -> str:
    """``-11`` -> ``SIGSEGV``, ``1`` -> ``exit 1``.

    >>> describe_exit(-11), describe_exit(-9), describe_exit(1)
    ('SIGSEGV', 'SIGKILL', 'exit 1')
    """
    if code is None:
        return "still running"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


@dataclass(slots=True)
class Restarts:
    base_s: float = 0.2
    cap_s: float = 30.0
    crash_loop: int = 5
    window_s: float = 60.0
    start_timeout_s: float = 180.0


class _Exited:
    """Put in each waiting request's queue when the worker died under it."""

    def __init__(self, message: str) -> None:
        self.message = message


class EngineProcess:
    def __init__(self, backend: str, settings: JSON, restarts: Restarts | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.policy = restarts or Restarts()
        self.state: State = "starting"
        self.reason: str | None = None
        self.last_exit: str | None = None
        self.restarts = 0
        self.info: JSON = {}
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Queue[JSON | _Exited]] = {}
        self._ids = itertools.count(1)
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()  # the first start is over (ready or down)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def status(self) -> JSON:
        out: JSON = {"state": self.state, "pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit}
        if self.reason:
            out["reason"] = self.reason
        return out | {k: self.info[k] for k in ("engine", "n_ctx", "n_ctx_train", "n_threads") if k in self.info}

    async def start(self) -> None:
        """Start the worker and wait until it passed its self-test or is down (never raises for a crash)."""
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"engine-{self.backend}")
        await self._settled.wait()

    async def close(self) -> None:
        self._closing = True
        self.state = "closed"
        self._ready.clear()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()  # the worker's request loop ends on EOF
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- requests ---

    async def wait_ready(self) -> None:
        while self.state != "ready":
            if self.state in ("down", "closed"):
                raise UpstreamUnavailable(f"the embedded engine is {self.state}: {self.reason}", backend=self.backend)
            await self._ready.wait()

    async def call(self, message: JSON) -> AsyncIterator[JSON]:
        """Send one request; yield its events up to the last (``end``, ``count`` or ``error``).

        A worker that dies meanwhile ends the iteration with :class:`UpstreamUnavailable`; a caller that stops
        iterating early has its generation cancelled in the worker.
        """
        await self.wait_ready()
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        rid = next(self._ids)
        events: asyncio.Queue[JSON | _Exited] = asyncio.Queue()
        self._pending[rid] = events
        finished = False
        try:
            try:
                proc.stdin.write(json.dumps({**message, "id": rid}).encode() + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the worker is dying: its exit reaches the queue below
            while True:
                event = await events.get()
                if isinstance(event, _Exited):
                    finished = True
                    raise UpstreamUnavailable(event.message, backend=self.backend)
                finished = event["event"] in TERMINAL
                yield event
                if finished:
                    return
        finally:
            self._pending.pop(rid, None)
            if not finished and proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(json.dumps({"op": "cancel", "id": rid}).encode() + b"\n")

    # --- the process ---

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tiergate.backends.engine.worker",
            json.dumps(self.settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,
            start_new_session=True,  # a Ctrl-C in the terminal is the gateway's to handle, not the worker's
        )

    async def _supervise(self) -> None:
        delay = self.policy.base_s
        quick = 0  # workers in a row that exited soon after they started
        became_ready = 0.0
        first = True
        while True:
            self.state = "starting" if first else "restarting"
            try:
                proc = self._proc = await self._spawn()
            except OSError as exc:
                self._down(f"the embedded engine's worker could not start: {exc}")
                return
            ready: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
            pump = asyncio.create_task(self._pump(proc, ready))
            errors = asyncio.create_task(self._read_stderr(proc))
            waiting: set[asyncio.Future[Any]] = {ready, pump}
            done, _ = await asyncio.wait(waiting, timeout=self.policy.start_timeout_s, return_when="FIRST_COMPLETED")
            if ready in done:
                self.info = ready.result()
                became_ready = time.monotonic()
                self.state, self.reason = "ready", None
                self._ready.set()
                self._settled.set()
                log.info(
                    "embedded engine %s ready (pid %s): %s; model %s, n_ctx %s (trained %s), %s threads; "
                    "build: %s; %s; self-test %.2fs",
                    self.backend, proc.pid, self.info.get("engine"), self.settings.get("model_path"),
                    self.info.get("n_ctx"), self.info.get("n_ctx_train"), self.info.get("n_threads"),
                    self.info.get("system_info"), self.info.get("extra_buffers_reason"),
                    self.info.get("self_test_s", 0.0),
                )  # fmt: skip
            elif not done:  # neither ready nor exited: a worker that hangs at start is killed
                proc.kill()
            await pump
            code = await proc.wait()
            await errors
            self._ready.clear()
            if self._closing:
                self._fail_pending("the embedded engine is closing")
                return
            was_ready = ready.done()
            timeout = f"no self-test result within {self.policy.start_timeout_s:.0f}s"
            exit_text = describe_exit(code) if done else timeout
            self.last_exit = exit_text
            tail = f" (last output: {self.stderr[-1]})" if self.stderr else ""
            self._fail_pending(f"the embedded engine's worker exited ({exit_text}) during the request")
            if first and not was_ready:
                self._down(f"the embedded engine crashed in its self-test: {exit_text}{tail}; {TROUBLESHOOTING}")
                return
            first = False
            lived = time.monotonic() - became_ready if was_ready else 0.0
            if lived > self.policy.window_s:  # a worker that served a while: a fresh start, not a loop
                quick, delay = 0, self.policy.base_s
            quick += 1
            if quick >= self.policy.crash_loop:
                self._down(
                    f"crash loop: {quick} workers in a row exited within {self.policy.window_s:.0f}s of starting, "
                    f"last {exit_text}{tail}; {TROUBLESHOOTING}"
                )
                return
            self.state, self.reason = "restarting", f"last exit {exit_text}"
            log.warning("embedded engine %s exited (%s)%s; restarting in %.1fs", self.backend, exit_text, tail, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.policy.cap_s)
            self.restarts += 1

    def _down(self, reason: str) -> None:
        self.state, self.reason = "down", reason
        self._ready.set()  # wake waiting requests: they fail with the reason
        self._settled.set()
        log.error("%s", reason)

    def _fail_pending(self, message: str) -> None:
        for events in self._pending.values():
            events.put_nowait(_Exited(message))

    async def _pump(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[JSON]) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("embedded engine %s wrote a line that is not JSON: %.200r", self.backend, line)
                continue
            if event.get("event") == "ready":
                if not ready.done():
                    ready.set_result(event.get("info") or {})
                continue
            events = self._pending.get(event.get("id", -1))
            if events is not None:
                events.put_nowait(event)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.stderr.append(text)
                log.debug("engine %s: %s", self.backend, text)
