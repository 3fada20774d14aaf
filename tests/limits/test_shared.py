"""The shared limiter against a real Redis: the same answers as the in-process book, atomic across replicas,
reservations that expire, spend seeded from the ledger, key changes picked up by every replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from tests.support.redis import redis_base_url, unique_prefix
from tiergate.accounting.budgets import Budgets, Limits, OverLimit, month_of
from tiergate.config import KeyConfig, RedisConfig
from tiergate.limits import KeyOverride, KeyStore, SharedLimiter, SharedReservation
from tiergate.limits.scripts import MONTH_OF, SETTLE, key_names


class Spend:
    """A stand-in for ``Ledger.spend_by_key`` that counts its calls."""

    def __init__(self, spent: Mapping[str, float] | None = None) -> None:
        self.spent = dict(spent or {})
        self.calls = 0

    async def __call__(self, since: datetime) -> Mapping[str, float]:
        self.calls += 1
        return self.spent


def key(**limits: object) -> KeyConfig:
    return KeyConfig.model_validate({"name": "team", "key": "sk", **limits})


def limiter(prefix: str, *keys: KeyConfig, ttl_s: float = 60.0) -> SharedLimiter:
    config = RedisConfig(url=redis_base_url(), prefix=prefix)
    return SharedLimiter(config, list(keys), reservation_ttl_s=ttl_s, registry=CollectorRegistry())


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url, prefix = redis_base_url(), unique_prefix()
    yield prefix
    client = aioredis.Redis.from_url(url)
    async for name in client.scan_iter(f"{prefix}:*"):
        await client.delete(name)
    await client.aclose()


async def started(lim: SharedLimiter, spend: Spend | None = None) -> SharedLimiter:
    await lim.start(spend or Spend())
    return lim


async def account(prefix: str, name: str = "team") -> dict[str, str]:
    client = aioredis.Redis.from_url(redis_base_url(), decode_responses=True)
    try:
        state = await client.hgetall(key_names(prefix, name)[0])
        return {str(k): str(v) for k, v in state.items()}
    finally:
        await client.aclose()


async def settled(lim: SharedLimiter) -> None:
    """Wait until the background task has sent every settlement."""
    for _ in range(500):
        if not lim.status()["pending_settlements"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("settlements never reached Redis")


async def test_the_month_is_the_same_in_lua_as_in_python() -> None:
    client = aioredis.Redis.from_url(redis_base_url(), decode_responses=True)
    moments = [
        datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 12, tzinfo=UTC),
        datetime(2100, 3, 1, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
    ]
    seconds = [int(m.timestamp()) for m in moments] + list(range(0, 5_000_000_000, 86_400 * 37 + 3_601))
    try:
        script = client.register_script(MONTH_OF + "return month_of(tonumber(ARGV[1]))")
        for s in seconds:
            year, month = month_of(float(s))
            assert await script(args=[s]) == f"{year:04d}-{month:02d}", s
    finally:
        await client.aclose()


async def test_reservations_count_until_settled_with_the_words_of_the_book(prefix: str) -> None:
    lim = await started(limiter(prefix, key(budget_usd_per_month=1.0)), Spend({"team": 0.25}))
    book = Budgets({"team": Limits(budget_usd_per_month=1.0)})
    book.load({"team": 0.25}, now=0.0)
    try:
        first = await lim.reserve("team", 0.4, 100)
        book.admit("team", 0.4, 100, now=0.0)
        with pytest.raises(OverLimit) as shared:
            await lim.reserve("team", 0.4, 100)
        with pytest.raises(OverLimit) as local:
            book.admit("team", 0.4, 100, now=0.0)
        assert shared.value.message == local.value.message
        assert "spent $0.2500 of its $1.00 monthly budget ($0.4000 more is held" in shared.value.message
        lim.settle(first, 0.1, 50)
        lim.settle(first, 0.1, 50)  # idempotent
        lim.settle(None, 9.0, 1)
        await settled(lim)
        state = await account(prefix)
        assert state["month"] == "{:04d}-{:02d}".format(*month_of(datetime.now(UTC).timestamp()))
        assert [float(state[f]) for f in ("spent", "reserved", "tokens")] == pytest.approx([0.35, 0.0, 0.0])
        assert await lim.reserve("team", 0.65, 1) is not None  # 0.35 + 0.65 fits exactly
    finally:
        await lim.close()


async def test_two_replicas_never_overshoot_together(prefix: str) -> None:
    keys = [key(budget_usd_per_month=1.0, requests_per_minute=400)]
    a, b = await started(limiter(prefix, *keys)), await started(limiter(prefix, *keys))

    async def one(lim: SharedLimiter) -> bool:
        try:
            await lim.reserve("team", 0.02, 10)
        except OverLimit:
            return False
        return True

    try:
        results = await asyncio.gather(*(one(a if n % 2 else b) for n in range(300)))
    finally:
        await a.close()
        await b.close()
    assert results.count(True) == 50  # $1.00 / $0.02, whichever replica each came through


async def test_requests_per_minute_are_exact_and_say_when_to_retry(prefix: str) -> None:
    lim = await started(limiter(prefix, key(requests_per_minute=3)))
    try:
        for _ in range(3):
            assert await lim.reserve("team", 0.0, 1) is not None
        with pytest.raises(OverLimit, match=r"3 requests per minute; retry in \d+\.\d s") as err:
            await lim.reserve("team", 0.0, 1)
    finally:
        await lim.close()
    assert err.value.retry_after is not None
    assert 0 < err.value.retry_after <= 60


async def test_tokens_per_minute_count_the_estimate_then_the_real_tokens(prefix: str) -> None:
    lim = await started(limiter(prefix, key(tokens_per_minute=1000)))
    try:
        r = await lim.reserve("team", 0.0, 900)
        with pytest.raises(OverLimit, match=r"1000 tokens per minute \(900 used"):
            await lim.reserve("team", 0.0, 200)
        lim.settle(r, 0.0, 300)
        await settled(lim)
        assert await lim.reserve("team", 0.0, 700) is not None
        with pytest.raises(OverLimit, match="lower max_tokens"):
            await lim.reserve("team", 0.0, 5000)
    finally:
        await lim.close()


async def test_downgrade_reserves_the_open_estimate(prefix: str) -> None:
    lim = await started(limiter(prefix, key(budget_usd_per_month=1.0, over_budget="downgrade")), Spend({"team": 0.99}))
    try:
        r = await lim.reserve("team", 0.5, 1, fallback_usd=0.001)
        assert isinstance(r, SharedReservation)
        assert (r.downgraded, r.usd) == (True, 0.001)
        with pytest.raises(OverLimit, match="monthly budget"):  # nowhere to downgrade to
            await lim.reserve("team", 0.5, 1)
    finally:
        await lim.close()


async def test_a_reservation_nobody_settles_is_released_after_its_ttl(prefix: str) -> None:
    lim = await started(limiter(prefix, key(budget_usd_per_month=1.0), ttl_s=1.0))
    try:
        await lim.reserve("team", 1.0, 1)  # its replica "dies": never settled
        with pytest.raises(OverLimit, match=r"\$1.0000 more is held"):
            await lim.reserve("team", 1.0, 1)
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                released = await lim.reserve("team", 1.0, 1)
            except OverLimit:
                continue
            break
        else:
            raise AssertionError("the reservation was never released")
    finally:
        await lim.close()
    assert released is not None
    assert float((await account(prefix))["spent"]) == 0.0  # released, never counted as spent


async def test_accounts_start_from_the_ledger_and_again_when_redis_loses_them(prefix: str) -> None:
    spend = Spend({"team": 0.75})
    lim = await started(limiter(prefix, key(budget_usd_per_month=1.0)), spend)
    try:
        with pytest.raises(OverLimit, match=r"spent \$0.7500"):
            await asyncio.gather(*(lim.reserve("team", 0.5, 1) for _ in range(20)))
        assert spend.calls == 1  # one ledger query, however many requests found the account missing
        client = aioredis.Redis.from_url(redis_base_url())
        await client.delete(*key_names(prefix, "team"))
        await client.aclose()
        spend.spent["team"] = 0.9
        with pytest.raises(OverLimit, match=r"spent \$0.9000"):
            await lim.reserve("team", 0.5, 1)
    finally:
        await lim.close()


async def test_key_changes_reach_every_replica(prefix: str) -> None:
    keys = [key(requests_per_minute=100), KeyConfig(name="other", key="o")]
    a, b = await started(limiter(prefix, *keys)), await started(limiter(prefix, *keys))
    client = aioredis.Redis.from_url(redis_base_url(), decode_responses=True)
    store = KeyStore(client, prefix)
    try:
        version = await store.change("team", KeyOverride(revoked=True, budget_usd_per_month=0.0))
        await store.change("other", KeyOverride(requests_per_minute=1))
        await store.change("ghost", KeyOverride(revoked=True))  # not a key of this config: ignored
        for replica in (a, b):
            for _ in range(200):
                if replica.status()["keys_version"] == version + 2:
                    break
                await asyncio.sleep(0.01)
            assert replica.revoked("team")
            assert not replica.revoked("other")
            assert replica.limits("team") == Limits(budget_usd_per_month=0.0, requests_per_minute=100)
            assert replica.limits("other") == Limits(requests_per_minute=1)
            assert replica.limits("ghost") is None
        await store.clear("team")
        await client.hset(f"{prefix}:keys", "other", "{not json")
        await client.incr(f"{prefix}:keys:version")
        for _ in range(200):
            if a.status()["keys_version"] == version + 4:
                break
            await asyncio.sleep(0.01)
        assert not a.revoked("team")
        assert a.limits("team") == Limits(requests_per_minute=100)
        assert a.limits("other") is None  # a hand-written override that does not parse is ignored
    finally:
        await client.aclose()
        await a.close()
        await b.close()


async def test_a_settlement_sent_twice_is_applied_once(prefix: str) -> None:
    """A batch whose reply was lost (Redis hung, the network cut) is sent again when Redis answers."""
    lim = await started(limiter(prefix, key(budget_usd_per_month=1.0)))
    client = aioredis.Redis.from_url(redis_base_url(), decode_responses=True)
    try:
        r = await lim.reserve("team", 0.5, 10)
        assert isinstance(r, SharedReservation)
        settle = client.register_script(SETTLE)
        replies = [await settle(keys=key_names(prefix, "team"), args=[r.rid, r.rid, "0.2", 5]) for _ in range(2)]
        fallback = [await settle(keys=key_names(prefix, "team"), args=["s-1", "", "0.1", -1]) for _ in range(2)]
    finally:
        await client.aclose()
        await lim.close()
    assert (replies, fallback) == ([1, 2], [1, 2])
    state = await account(prefix)
    assert [float(state[f]) for f in ("spent", "reserved", "tokens")] == pytest.approx([0.3, 0.0, 0.0])
