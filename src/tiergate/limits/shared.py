"""Budgets and rate limits shared by every replica, in Redis: one atomic script per reservation.

A request's reservation is one round trip (:data:`~tiergate.limits.scripts.RESERVE`: expire what is stale,
check the rate window and the budget, record the reservation, all in one script the server runs alone), so
any number of replicas admit exactly as one process would. Settlements leave the request at once and go
to Redis in pipelined batches from a background task.

Reservations expire: one that nobody settles (its replica was killed) is released after
``redis.reservation_ttl_s`` (default ``dispatch.deadline_s`` + 60 s). Until then it holds its share of the
budget; what that replica's requests in flight really cost is lost from the budget (it was at most their
reservations), as are its ledger rows not yet flushed (half a second of them).

While Redis does not answer, each limit does what ``redis.on_unavailable`` says (:func:`~.health.alone`):
by default a key with a budget is refused with a 503 (fail closed) and rate limits are enforced by each
replica alone (fail open with a local limit, ``local_share`` of each). Every settlement made meanwhile waits
in memory and reaches Redis when it answers again; a background task tries every ``redis.retry_s``. The
state is in ``/readyz`` (``limits``), the metrics (``tiergate_limits_*``) and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from tiergate.accounting.budgets import (
    Budgets,
    Limits,
    LocalReservation,
    OverLimit,
    Reservation,
    month_start,
    over_budget,
    over_rate,
)
from tiergate.config import KeyConfig, RedisConfig
from tiergate.errors import LimitsUnavailable
from tiergate.limits.base import SpendSource
from tiergate.limits.health import Health, alone
from tiergate.limits.keys import KeyOverride, KeyStore
from tiergate.limits.scripts import RESERVE, SEED, SETTLE, key_names

__all__ = ["MAX_PENDING", "SharedLimiter", "SharedReservation"]

log = logging.getLogger("tiergate.limits")

#: Settlements kept while Redis is down; beyond it the oldest are dropped (counted, and in the log).
MAX_PENDING = 100_000
_BATCH = 256
_ERRORS = (RedisError, OSError)


class _SeedFailed(Exception):
    """The ledger could not say what the keys spent this month, so their accounts cannot be created."""


@dataclass(slots=True, kw_only=True)
class SharedReservation(Reservation):
    """``rid``: the reservation's id in Redis, ``""`` for one admitted while Redis was down (``local``: its
    entry in this replica's stand-in rate window, if any)."""

    rid: str
    local: LocalReservation | None = None


@dataclass(frozen=True, slots=True)
class _Settlement:
    key: str
    sid: str  # applied once, however often it is sent
    rid: str
    usd: float
    tokens: int


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "tiergate_limits_store_up",
            "1 while the shared limits store (Redis) answers; 0 while limits follow redis.on_unavailable",
            registry=registry,
        )
        self.errors = Counter(
            "tiergate_limits_store_errors", "Failed operations on the shared limits store", ("op",), registry=registry
        )
        self.fallbacks = Counter(
            "tiergate_limits_fallback",
            "Requests decided without the shared store, by limit (budget, rate) and action (closed, open, local)",
            ("limit", "action"),
            registry=registry,
        )
        self.pending = Gauge(
            "tiergate_limits_pending_settlements", "Settlements waiting to reach the shared store", registry=registry
        )
        self.dropped = Counter(
            "tiergate_limits_settlements_dropped",
            f"Settlements dropped after {MAX_PENDING} waited (Redis down for long under load)",
            registry=registry,
        )


def _where(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or parts.path
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path if parts.hostname else ''}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class SharedLimiter:
    def __init__(
        self,
        config: RedisConfig,
        keys: list[KeyConfig],
        *,
        reservation_ttl_s: float,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.where = _where(config.url)
        self.ttl_ms = int(reservation_ttl_s * 1000)
        self._configured = {k.name: Limits.of(k) for k in keys}
        self._overrides: dict[str, KeyOverride] = {}
        self._version = 0
        self._clock = clock
        self.health = Health(since=clock())
        self.metrics = _Metrics(registry)
        self.metrics.up.set(1)
        pool = BlockingConnectionPool.from_url(
            config.url,
            max_connections=config.max_connections,
            timeout=max(10.0, config.timeout_s),  # waiting for a free connection under load is not an outage
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            retry=Retry(NoBackoff(), 1),  # one immediate retry on a fresh connection: a stale one is not an outage
            decode_responses=True,
        )
        self._redis = Redis(connection_pool=pool)
        self.store = KeyStore(self._redis, config.prefix)
        self._reserve = self._redis.register_script(RESERVE)
        self._settle = self._redis.register_script(SETTLE)
        self._seed_script = self._redis.register_script(SEED)
        self._alone = Budgets({})  # this replica's stand-in rate windows while Redis is down
        self._pending: deque[_Settlement] = deque()
        self._wake = asyncio.Event()
        self._seed_lock = asyncio.Lock()
        self._spend: SpendSource | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # ------------------------------------------------------------------------------------------ limits

    def limits(self, key: str) -> Limits | None:
        lim = self._configured.get(key)
        if lim is None:
            return None  # not a configured key (or the anonymous caller): nothing to enforce
        override = self._overrides.get(key)
        if override is not None:
            lim = override.apply(lim)
        return lim if lim.any else None

    def revoked(self, key: str) -> bool:
        override = self._overrides.get(key)
        return override is not None and override.revoked

    # ------------------------------------------------------------------------------------ life cycle

    async def start(self, spend: SpendSource) -> None:
        self._spend = spend
        try:
            await self._refresh(force=True)
        except _ERRORS as exc:
            self._failed("start", exc)
        else:
            log.info("shared limits: Redis at %s (key changes at version %d)", self.where, self._version)
        self._tasks = [
            asyncio.create_task(self._watch(), name="tiergate-limits-watch"),
            asyncio.create_task(self._settle_forever(), name="tiergate-limits-settle"),
        ]

    async def close(self) -> None:
        # A flag as well as cancel(): a cancellation that lands inside a Redis call may come out of it as a
        # connection error (and be handled as one), so the loops also check the flag.
        self._closing = True
        self._wake.set()
        if self._tasks:
            self._tasks[0].cancel()  # the watcher sleeps; the settler finishes the batch it is sending
            await asyncio.wait(self._tasks, timeout=5.0)
            for task in self._tasks:
                task.cancel()
        if self._pending and self.health.up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._flush()
        if self._pending:
            log.warning("shared limits: %d settlements could not reach Redis before exit", len(self._pending))
        with contextlib.suppress(*_ERRORS):
            await self._redis.aclose()
            await self._redis.connection_pool.disconnect()

    def affordable(self, key: str, usd: float) -> bool:
        """Without a round trip: a key with a budget may start a shadow pair while Redis is up (its cost is then
        settled like any spend, so the budget can be passed by at most the pairs in flight:
        ``router.shadow.max_in_flight``); while Redis is down, money fails closed."""
        lim = self.limits(key)
        if lim is None or lim.budget_usd_per_month is None:
            return True
        return self.health.up

    def charge(self, key: str, usd: float) -> None:
        """A settlement without a reservation: applied once in Redis, like a request's."""
        if usd > 0 and self.limits(key) is not None:
            self.settle(SharedReservation(key=key, usd=0.0, rid=""), usd, 0)

    def status(self) -> dict[str, object]:
        now = self._clock()
        return {
            "store": "redis",
            "redis": self.where,
            "state": "up" if self.health.up else "down",
            "down_for_s": round(self.health.down_for(now), 3),
            "last_error": self.health.last_error,
            "on_unavailable": self.config.on_unavailable.model_dump(),
            "local_share": self.config.local_share,
            "reservation_ttl_s": self.ttl_ms / 1000,
            "pending_settlements": len(self._pending),
            "keys_version": self._version,
            "revoked": sorted(name for name, o in self._overrides.items() if o.revoked),
        }

    # ---------------------------------------------------------------------------------- reservations

    async def reserve(
        self, key: str, usd: float, tokens: int, *, fallback_usd: float | None = None
    ) -> Reservation | None:
        lim = self.limits(key)
        if lim is None:
            return None
        tpm = lim.tokens_per_minute
        if tpm is not None and tokens > tpm:  # larger than the whole minute: no state needed to refuse
            refusal = over_rate(key, Limits(tokens_per_minute=tpm), tokens, requests=0, used=0.0, retry=None)
            assert refusal is not None
            raise refusal
        if self.health.up:
            try:
                return await self._reserve_shared(key, lim, usd, tokens, fallback_usd)
            except _ERRORS as exc:
                self._failed("reserve", exc)
            except _SeedFailed as exc:  # Redis answers, the ledger does not: decided as if Redis were down
                log.warning("shared limits: %s", exc)
        return self._reserve_alone(key, lim, usd, tokens)

    async def _reserve_shared(
        self, key: str, lim: Limits, usd: float, tokens: int, fallback_usd: float | None
    ) -> SharedReservation:
        rid = uuid.uuid4().hex
        downgrade = lim.over_budget == "downgrade" and fallback_usd is not None
        args: list[str | int | float] = [
            rid,
            repr(usd),
            tokens,
            _or_none(lim.requests_per_minute),
            _or_none(lim.tokens_per_minute),
            _or_none(lim.budget_usd_per_month),
            repr(fallback_usd) if downgrade else -1,
            self.ttl_ms,
        ]
        names = key_names(self.config.prefix, key)
        reply = await self._reserve(keys=names, args=args)
        if reply[0] == "unseeded":
            await self._seed(key)
            reply = await self._reserve(keys=names, args=args)
        code = reply[0]
        if code == "ok":
            return SharedReservation(key=key, usd=float(reply[1]), downgraded=int(reply[2]) == 1, rid=rid)
        if code == "rpm":
            retry = round(float(reply[1]) / 1000, 1)
            raise _refusal(over_rate(key, lim, tokens, requests=int(reply[2]), used=0.0, retry=retry))
        if code == "tpm":
            retry = round(float(reply[1]) / 1000, 1)
            only_tokens = Limits(tokens_per_minute=lim.tokens_per_minute)
            raise _refusal(over_rate(key, only_tokens, tokens, requests=0, used=float(reply[2]), retry=retry))
        if code == "budget":
            assert lim.budget_usd_per_month is not None
            raise over_budget(key, lim.budget_usd_per_month, float(reply[1]), float(reply[2]), usd, time.time())
        raise ResponseError(f"the reservation script answered {reply!r} for key {key!r}")

    async def _seed(self, key: str) -> None:
        """Create the accounts Redis lacks (first use, or Redis lost its data) with this month's spend from the
        ledger; one ledger query for every key, however many requests find them missing at once."""
        async with self._seed_lock:
            if await self._redis.exists(key_names(self.config.prefix, key)[0]):
                return  # created while this request waited for the lock
            assert self._spend is not None, "start() first"
            now = time.time()
            start = month_start(now)
            try:
                spent = await self._spend(start)
            except Exception as exc:
                raise _SeedFailed(f"this month's spend could not be read from the ledger ({_describe(exc)})") from exc
            month = start.strftime("%Y-%m")
            created = []
            for name in self._configured:
                reply = await self._seed_script(
                    keys=key_names(self.config.prefix, name), args=[month, repr(float(spent.get(name, 0.0)))]
                )
                if int(reply) == 1:
                    created.append(name)
            if created:
                log.info("shared limits: accounts of %s created in Redis from the ledger", ", ".join(created))

    def _reserve_alone(self, key: str, lim: Limits, usd: float, tokens: int) -> SharedReservation:
        policy = self.config.on_unavailable
        decision = alone(lim, policy, self.config.local_share)
        if isinstance(decision, str):
            self.metrics.fallbacks.labels(decision, "closed").inc()
            what = "budget" if decision == "budget" else "rate limits"
            raise LimitsUnavailable(
                f"the {what} of key {key!r} cannot be checked: the shared limits store (Redis) does not answer;"
                " retry shortly",
                retry_after=self.config.retry_s,
            )
        if lim.budget_usd_per_month is not None:
            self.metrics.fallbacks.labels("budget", policy.budget).inc()
        if lim.requests_per_minute is not None or lim.tokens_per_minute is not None:
            self.metrics.fallbacks.labels("rate", policy.rate).inc()
        self._alone.set_limits(key, decision)
        local = self._alone.admit(key, usd, tokens, time.time())
        return SharedReservation(key=key, usd=usd, rid="", local=local)

    # ----------------------------------------------------------------------------------- settlements

    def settle(self, reservation: Reservation | None, usd: float, tokens: int) -> None:
        if not isinstance(reservation, SharedReservation) or reservation.settled:
            return
        reservation.settled = True
        if reservation.local is not None:
            self._alone.settle(reservation.local, usd, tokens)
        if not reservation.rid and usd <= 0:
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.metrics.dropped.inc()
            log.warning("shared limits: over %d settlements wait for Redis; the oldest is dropped", MAX_PENDING)
        sid = reservation.rid or uuid.uuid4().hex
        self._pending.append(_Settlement(reservation.key, sid, reservation.rid, usd, tokens if reservation.rid else -1))
        self.metrics.pending.set(len(self._pending))
        self._wake.set()

    async def _settle_forever(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._pending and self.health.up:
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            try:
                await self._send(batch)
            except NoScriptError:  # Redis restarted without our scripts: load, send again (applied once)
                try:
                    await self._redis.script_load(SETTLE)
                    await self._send(batch)
                except _ERRORS as exc:
                    self._pending.extendleft(reversed(batch))
                    self._failed("settle", exc)
            except _ERRORS as exc:
                # Sent again when Redis answers; a batch that ran but whose reply was lost is applied once.
                self._pending.extendleft(reversed(batch))
                self._failed("settle", exc)
            self.metrics.pending.set(len(self._pending))

    async def _send(self, batch: list[_Settlement]) -> None:
        """One EVALSHA per settlement, pipelined (without the SCRIPT EXISTS round trip a script object's
        pipeline would add: the script is loaded at start, and again on NoScriptError)."""
        sha = self._settle.sha
        if len(batch) == 1:
            s = batch[0]
            await self._redis.evalsha(
                sha, 6, *key_names(self.config.prefix, s.key), s.sid, s.rid, repr(s.usd), s.tokens
            )
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for s in batch:
                pipe.evalsha(sha, 6, *key_names(self.config.prefix, s.key), s.sid, s.rid, repr(s.usd), s.tokens)
            await pipe.execute()

    # ------------------------------------------------------------------------------- health and keys

    async def _watch(self) -> None:
        """Every ``refresh_s`` look for key changes; while Redis is down, try it every ``retry_s``."""
        while not self._closing:
            was_up = self.health.up
            await asyncio.sleep(self.config.refresh_s if was_up else self.config.retry_s)
            try:
                await self._refresh(force=not self.health.up)
            except _ERRORS as exc:
                self._failed("refresh", exc)
                continue
            if not self.health.up:
                self._recovered()

    async def _refresh(self, *, force: bool) -> None:
        if not force and await self.store.version() == self._version:
            return
        version, overrides = await self.store.load()
        changed = overrides != self._overrides
        self._version, self._overrides = version, overrides
        if changed:
            revoked = sorted(n for n, o in overrides.items() if o.revoked)
            log.info(
                "shared limits: key changes at version %d (%d overrides; revoked: %s)",
                version,
                len(overrides),
                ", ".join(revoked) or "none",
            )

    def _failed(self, op: str, exc: BaseException) -> None:
        self.metrics.errors.labels(op).inc()
        if self.health.fail(_describe(exc), self._clock()):
            self.metrics.up.set(0)
            policy = self.config.on_unavailable
            log.warning(
                "shared limits: Redis at %s does not answer (%s during %s); budgets fail %s, rate limits %s,"
                " until it answers again (tried every %g s)",
                self.where,
                _describe(exc),
                op,
                policy.budget,
                policy.rate if policy.rate != "local" else f"local at {self.config.local_share:g} of each",
                self.config.retry_s,
            )

    def _recovered(self) -> None:
        outage = self.health.recover(self._clock())
        self.metrics.up.set(1)
        self._alone = Budgets({})  # the shared windows rule again
        log.warning(
            "shared limits: Redis at %s answers again after %.1f s; %d settlements to send",
            self.where,
            outage or 0.0,
            len(self._pending),
        )
        self._wake.set()


def _or_none(value: float | None) -> float | int:
    return -1 if value is None else value


def _refusal(refusal: OverLimit | None) -> OverLimit:
    assert refusal is not None, "the store refused what the same limits allow"
    return refusal
