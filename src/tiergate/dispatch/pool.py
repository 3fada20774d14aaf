"""The configured backends, by name and tier: health, circuit breakers and per-backend concurrency limits.

Each backend has ``max_concurrency`` slots and a wait queue of ``max_queue``; when both are full the
backend is *saturated* and :meth:`Pool.acquire` refuses at once, so the dispatcher overflows to the next
target by decision rather than queueing without bound.

A request holds a backend through a :class:`Lease` (:meth:`Pool.lease`): the slot, and the verdict its
breaker is owed. However the lease ends, the slot is freed once and the breaker hears exactly one thing:
success, failure, or (cancelled, a rejected prompt, overflow) nothing, which frees a half-open probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tiergate.backends import Backend, BackendFactory, build_backend
from tiergate.config import BackendConfig
from tiergate.dispatch.breaker import Breaker
from tiergate.errors import Saturated, UpstreamTimeout
from tiergate.types import Tier

log = logging.getLogger("tiergate.dispatch")


@dataclass(slots=True)
class BackendState:
    backend: Backend
    breaker: Breaker
    slots: asyncio.Semaphore
    healthy: bool = True
    in_flight: int = 0
    waiting: int = 0
    last_error: str | None = None
    served: int = field(default=0)
    #: Until when (``time.monotonic()``) the backend asked not to be sent more work: its last ``Retry-After``.
    resting_until: float = 0.0
    #: Learned: the backend refused a final assistant turn, so it is not asked to continue one again.
    prefill_rejected: bool = False

    @property
    def config(self) -> BackendConfig:
        return self.backend.config

    @property
    def name(self) -> str:
        return self.backend.config.name

    @property
    def load(self) -> float:
        return (self.in_flight + self.waiting) / self.config.weight

    @property
    def continues_prefix(self) -> bool:
        """Declared by the backend (or its config) and not refused since: a cut stream may be continued here."""
        return self.backend.capabilities.continues_prefix and not self.prefill_rejected

    def learn_no_prefill(self, error: str) -> None:
        """The backend refused a prefix to continue: for the life of the process it is not asked to again."""
        if not self.prefill_rejected:
            log.warning("backend %s does not continue an assistant prefix (learned): %s", self.name, error)
        self.prefill_rejected = True

    def resting(self, now: float) -> bool:
        """Is the backend inside the pause its last ``Retry-After`` asked for?"""
        return now < self.resting_until

    @property
    def ready(self) -> bool:
        """Could this backend take a request at once? Healthy, circuit closed, not resting after a
        ``Retry-After``, and a free slot or room in the queue (:meth:`Pool.acquire` would not refuse). A half-open
        circuit is not ready: its one probe is left to the request whose turn it is, not spent on a detour from a
        failed sibling."""
        has_room = not self.slots.locked() or self.waiting < self.config.max_queue
        closed = self.breaker.state == "closed"
        return self.healthy and closed and not self.resting(time.monotonic()) and has_room


def _state(backend: Backend) -> BackendState:
    c = backend.config
    breaker = Breaker(failures=c.breaker_failures, window_s=c.breaker_window_s, cooldown_s=c.breaker_cooldown_s)
    return BackendState(backend, breaker, asyncio.Semaphore(c.max_concurrency))


class Pool:
    def __init__(self, configs: Sequence[BackendConfig], registry: dict[str, BackendFactory]) -> None:
        self.states = {c.name: _state(build_backend(c, registry)) for c in configs}

    async def start(self) -> None:
        await asyncio.gather(*(s.backend.start() for s in self.states.values()))

    async def close(self) -> None:
        await asyncio.gather(*(s.backend.close() for s in self.states.values()), return_exceptions=True)

    def get(self, name: str) -> BackendState | None:
        return self.states.get(name)

    def by_model(self, model: str) -> BackendState | None:
        return next((s for s in self.states.values() if s.backend.model == model), None)

    def tier(self, tier: Tier) -> list[BackendState]:
        """Backends of ``tier`` in the order to try them: available first (circuit not open, healthy, not resting
        after a ``Retry-After``), then higher ``priority``, then least outstanding per weight. A resting backend
        is tried last, not left out: with no sibling to take the request it is retried after its pause, as the
        server asked. An unavailable high-priority backend comes after an available lower-priority one."""
        now = time.monotonic()
        members = [s for s in self.states.values() if s.config.tier is tier]
        return sorted(
            members,
            key=lambda s: (s.breaker.refuses(now), not s.healthy, s.resting(now), -s.config.priority, s.load),
        )

    def has_tier(self, tier: Tier) -> bool:
        return any(s.config.tier is tier for s in self.states.values())

    async def check_health(self, states: Sequence[BackendState] | None = None) -> dict[str, bool]:
        """Run the active health check of ``states`` (all by default); returns each one's verdict.

        **Recovery**: a backend whose check failed and now passes again, while its circuit is open (or half-open),
        has its circuit closed at once: the check saw the outage and sees it over, so the backend gets its traffic
        back without waiting for the breaker's cooldown. A check that passed all along (the probe's endpoint up
        while requests fail) is no news and closes nothing: the breaker's own half-open probe decides.
        """
        chosen = list(self.states.values()) if states is None else list(states)
        results = await asyncio.gather(*(s.backend.health() for s in chosen), return_exceptions=True)
        out: dict[str, bool] = {}
        for state, ok in zip(chosen, results, strict=True):
            was = state.healthy
            state.healthy = ok is True
            if was != state.healthy:
                log.warning("backend %s is now %s", state.name, "healthy" if state.healthy else "unhealthy")
            if state.healthy and not was and state.breaker.state != "closed":
                log.warning("circuit for backend %s closed: its health check passes again", state.name)
                state.breaker.record_success(time.monotonic())
            out[state.name] = state.healthy
        return out

    def ailing(self) -> list[BackendState]:
        """Backends whose last check failed or whose circuit is not closed: checked every ``recovery_interval_s``."""
        return [s for s in self.states.values() if not s.healthy or s.breaker.state != "closed"]

    async def watch_health(self, interval_s: float, recovery_s: float) -> None:
        """Active health checks, with or without traffic, until cancelled: every backend every ``interval_s``,
        and the :meth:`ailing` ones every ``recovery_s``, so a recovered backend is seen (and its circuit closed)
        within about ``recovery_s``. A round that fails unexpectedly is logged; the next one still runs."""
        tick = min(interval_s, recovery_s)
        next_full = time.monotonic() + interval_s
        while True:
            await asyncio.sleep(tick)
            try:
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + interval_s
                    await self.check_health()
                elif ailing := self.ailing():
                    await self.check_health(ailing)
            except Exception:
                log.exception("active health check failed")

    async def acquire(self, state: BackendState, max_wait_s: float | None = None) -> None:
        """Take one of the backend's concurrency slots; refuse at once when slots and queue are full.

        A request waits in the queue at most ``max_wait_s`` (its remaining deadline), then gives up with
        :class:`UpstreamTimeout`, so a backend that stopped finishing requests cannot hold callers forever.
        """
        if not state.slots.locked():  # a free slot is taken at once: nothing to queue for, nothing to time out
            await state.slots.acquire()
            state.in_flight += 1
            return
        if state.waiting >= state.config.max_queue:
            raise Saturated(
                f"saturated ({state.config.max_concurrency} in flight, {state.waiting} waiting)", backend=state.name
            )
        state.waiting += 1
        try:
            async with asyncio.timeout(max_wait_s):
                await state.slots.acquire()
        except TimeoutError:
            raise UpstreamTimeout(
                f"no concurrency slot freed up within {max_wait_s:.1f}s ({state.config.max_concurrency} in flight)",
                backend=state.name,
            ) from None
        finally:
            state.waiting -= 1
        state.in_flight += 1

    def release(self, state: BackendState) -> None:
        state.in_flight -= 1
        state.slots.release()

    def success(self, state: BackendState) -> None:
        state.breaker.record_success(time.monotonic())
        state.healthy, state.last_error = True, None
        state.resting_until = 0.0
        state.served += 1

    def failure(self, state: BackendState, error: str, rest_s: float | None = None) -> None:
        """Record a failed exchange; ``rest_s`` (the server's ``Retry-After``, capped) puts the backend last in
        its tier's order, and out of the siblings a failed request may go to, for that long."""
        now = time.monotonic()
        before = state.breaker.state
        state.breaker.record_failure(now)
        state.last_error = error
        if rest_s is not None and rest_s > 0:
            state.resting_until = max(state.resting_until, now + rest_s)
        if state.breaker.state == "open" and before != "open":
            log.warning("circuit for backend %s opened: %s", state.name, error)

    @contextlib.asynccontextmanager
    async def lease(self, state: BackendState, max_wait_s: float | None = None) -> AsyncIterator[Lease]:
        """Hold one of ``state``'s slots for the block (:meth:`acquire`'s refusals propagate, the breaker's probe
        freed). A lease :meth:`Lease.kept` for a stream outlives the block: its holder closes it."""
        try:
            await self.acquire(state, max_wait_s)
        except BaseException:
            state.breaker.release()
            raise
        lease = Lease(self, state)
        try:
            yield lease
        finally:
            if not lease.kept:
                lease.close()


@dataclass(slots=True)
class Lease:
    """A slot taken on one backend and the verdict owed to its breaker (see :meth:`Pool.lease`)."""

    pool: Pool
    state: BackendState
    settled: bool = False
    kept: bool = False
    closed: bool = False

    def success(self) -> None:
        self.pool.success(self.state)
        self.settled = True

    def failure(self, error: str, rest_s: float | None = None) -> None:
        self.pool.failure(self.state, error, rest_s)
        self.settled = True

    def keep(self) -> Lease:
        """Keep the slot beyond the ``async with`` block (a stream being read); :meth:`close` frees it."""
        self.kept = True
        return self

    def close(self) -> None:
        """Free the slot (once); a lease that ended without a verdict frees the breaker's probe."""
        if self.closed:
            return
        self.closed = True
        if not self.settled:
            self.state.breaker.release()
        self.pool.release(self.state)
