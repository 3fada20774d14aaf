"""Budgets and rate limits through the real gateway: no overshoot under concurrency, downgrade, 429s, restarts."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import Delay, FakeAnthropic, FakeOpenAI, Reply, script_marker
from tests.support.ledger import rows_of
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.schema import LedgerRow
from tiergate.config import Config, parse_config
from tiergate.pipeline.admit import DEFAULT_OUTPUT_TOKENS, downgraded, estimate_usage
from tiergate.pipeline.gateway import Plan
from tiergate.types import ChatRequest, Message, Tier, Usage

Fakes = tuple[tuple[FakeAnthropic, str], tuple[FakeOpenAI, str]]


@pytest.fixture
def fakes(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Fakes:
    return fake_claude, fake_openai


def config(fakes: Fakes, url: str, **key: Any) -> Config:
    return parse_config(
        {
            "backends": backend_configs(fakes[0][1], fakes[1][1]),
            "router": {"kind": "rules"},
            "keys": [{"name": "team", "key": "sk-team", **key}],
            "ledger": {"url": url},
        }
    )


def body(model: str = "closed", text: str = "Hello", max_tokens: int = 100) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


AUTH = {"authorization": "Bearer sk-team"}


async def test_parallel_requests_never_overshoot_the_budget(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    budget = 0.01
    # Every request costs about its reservation (100 output tokens at $15/M) and is held 0.3 s upstream, so all
    # 24 are in flight together: without reservations each would see $0 spent and pass.
    slow = script_marker(Delay(0.3, Reply(text="ok", usage={"output_tokens": 100})))
    with serve_gateway(config(fakes, url, budget_usd_per_month=budget)) as base:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body(text=f"q{n} {slow}")) for n in range(24))
            )
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(ok) + len(refused) == 24
    assert 1 <= len(ok) < 24
    assert all("monthly budget" in r.json()["error"]["message"] for r in refused)
    rows = await rows_of(url)
    spent = sum(r.cost_usd for r in rows)
    assert spent <= budget
    assert spent + 2 * spent / len(ok) > budget  # and the budget was used, not refused early
    assert [r.status for r in rows].count("refused") == len(refused)


@pytest.mark.parametrize("kind", ["requests", "tokens"])
async def test_parallel_requests_never_overshoot_a_rate_limit(fakes: Fakes, tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    text = script_marker(Delay(0.3, Reply(text="ok", usage={"output_tokens": 1})))  # all 20 in flight at once
    chat = ChatRequest(model="open", messages=[Message.text("user", text)], max_tokens=100)
    reserved = estimate_usage(chat)
    per_request = reserved.input_tokens + reserved.output_tokens
    limit = {"requests_per_minute": 5} if kind == "requests" else {"tokens_per_minute": 5 * per_request}
    with serve_gateway(config(fakes, url, **limit)) as base:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body("open", text=text)) for _ in range(20))
            )
    codes = [r.status_code for r in replies]
    assert (codes.count(200), codes.count(429)) == (5, 15)
    message = f"{next(iter(limit.values()))} {kind} per minute"
    assert all(message in r.json()["error"]["message"] for r in replies if r.status_code == 429)


def test_downgrade_serves_the_open_tier(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve_gateway(config(fakes, url, budget_usd_per_month=0, over_budget="downgrade")) as base:
        auto = httpx.post(base + "/v1/chat/completions", json=body("closed"), headers=AUTH)
        pinned = httpx.post(base + "/v1/chat/completions", json=body("claude"), headers=AUTH)
    assert auto.status_code == 200, auto.text
    assert auto.headers["x-tiergate-tier"] == "open"
    assert auto.headers["x-tiergate-route"] == "explicit:closed;budget:downgrade"
    # A request pinned to one closed backend has no open target of its own: refused, not re-routed.
    assert pinned.status_code == 429
    assert "monthly budget" in pinned.json()["error"]["message"]


def test_anthropic_callers_get_their_own_429(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve_gateway(config(fakes, url, budget_usd_per_month=0)) as base:
        resp = httpx.post(
            base + "/v1/messages", json=body(), headers={"x-api-key": "sk-team", "anthropic-version": "2023-06-01"}
        )
    assert resp.status_code == 429
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "rate_limit_error"


def test_a_rate_limited_answer_says_when_to_retry(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    anthropic_headers = {"x-api-key": "sk-team", "anthropic-version": "2023-06-01"}
    with serve_gateway(config(fakes, url, requests_per_minute=1)) as base:
        openai = [httpx.post(base + "/v1/chat/completions", json=body("open"), headers=AUTH) for _ in range(2)]
        anthropic = httpx.post(base + "/v1/messages", json=body("open"), headers=anthropic_headers)
    assert [r.status_code for r in (*openai, anthropic)] == [200, 429, 429]
    for resp in (openai[1], anthropic):  # the seconds until the key's minute frees up, rounded up
        assert 1 <= int(resp.headers["retry-after"]) <= 60


def test_a_budget_refusal_says_when_the_budget_resets(fakes: Fakes, tmp_path: Path) -> None:
    """Nothing held in flight: Retry-After is the time to midnight UTC on the 1st, in both dialects."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve_gateway(config(fakes, url, budget_usd_per_month=0)) as base:
        before = time.time()
        oa = httpx.post(base + "/v1/chat/completions", json=body(), headers=AUTH)
        an = httpx.post(
            base + "/v1/messages",
            json={"model": "closed", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            headers=AUTH,
        )
    now = datetime.fromtimestamp(before, UTC)
    following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    for resp in (oa, an):
        assert resp.status_code == 429
        assert abs(int(resp.headers["retry-after"]) - (following.timestamp() - before)) <= 60


def test_requests_per_minute(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve_gateway(config(fakes, url, requests_per_minute=2)) as base:
        codes = [httpx.post(base + "/v1/chat/completions", json=body("open"), headers=AUTH) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert "2 requests per minute; retry in" in codes[2].json()["error"]["message"]


def test_tokens_per_minute(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve_gateway(config(fakes, url, tokens_per_minute=1000)) as base:
        big = httpx.post(base + "/v1/chat/completions", json=body("open", max_tokens=2000), headers=AUTH)
        small = httpx.post(base + "/v1/chat/completions", json=body("open", max_tokens=50), headers=AUTH)
    assert big.status_code == 429
    assert "lower max_tokens" in big.json()["error"]["message"]
    assert small.status_code == 200


async def _seed(url: str, rows: list[LedgerRow]) -> None:
    ledger = Ledger(url)
    await ledger.start()
    for row in rows:
        ledger.record(row)
    await ledger.close()


def test_spend_so_far_this_month_is_loaded_at_start_up(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    now = datetime.now(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)

    def spent(usd: float, ts: datetime) -> LedgerRow:
        return LedgerRow(
            "old", "team", "openai", "closed", "closed", "claude", "explicit:closed", "ok", cost_usd=usd, ts=ts
        )

    asyncio.run(_seed(url, [spent(4.0, start - timedelta(seconds=1)), spent(0.999, start)]))
    with serve_gateway(config(fakes, url, budget_usd_per_month=1.0)) as base:
        refused = httpx.post(base + "/v1/chat/completions", json=body(), headers=AUTH)
        cheap = httpx.post(base + "/v1/chat/completions", json=body(max_tokens=1, text="x"), headers=AUTH)
    assert refused.status_code == 429
    assert "has spent $0.9990 of its $1.00 monthly budget" in refused.json()["error"]["message"]
    assert cheap.status_code == 200, cheap.text  # last month's $4 does not count


def test_the_estimate_is_an_upper_bound() -> None:
    chat = ChatRequest(model="auto", messages=[Message.text("user", "x" * 300)], max_tokens=64)
    assert estimate_usage(chat) == Usage(input_tokens=100 + 8, output_tokens=64, estimated=True)
    chat.max_tokens = None
    assert estimate_usage(chat).output_tokens == DEFAULT_OUTPUT_TOKENS


def test_a_plan_the_guard_sent_to_the_closed_tier_is_never_downgraded() -> None:
    assert downgraded(Plan([], "router:0.2<0.4;guard:flagged", Tier.CLOSED)) is None
    assert downgraded(Plan([], "explicit:closed", Tier.CLOSED)) is None  # no open target to go to
