"""Redis goes away under a running gateway and comes back: each limit does what ``redis.on_unavailable`` says,
the state shows in /readyz, the metrics and the log, and the gateway recovers without a restart.

Two ways to lose Redis, on a private ``redis-server``: SIGKILL (connections refused; it comes back empty, so
the accounts are created again from the ledger) and SIGSTOP (it hangs: every call times out; SIGCONT brings
it back with its data, and the settlements held meanwhile are sent to it).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.ledger import read_rows
from tests.support.redis import RedisServer, private_redis
from tiergate.accounting.schema import LedgerRow
from tiergate.config import Config, parse_config
from tiergate.limits.scripts import key_names

Fakes = tuple[tuple[FakeAnthropic, str], tuple[FakeOpenAI, str]]
KEYS = [
    {"name": "money", "key": "sk-money", "budget_usd_per_month": 1.0},
    {"name": "rate", "key": "sk-rate", "requests_per_minute": 4},
]


@pytest.fixture
def fakes(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Fakes:
    return fake_claude, fake_openai


def config(fakes: Fakes, tmp_path: Path, redis_url: str, **redis_options: Any) -> Config:
    redis_config: dict[str, Any] = {"url": redis_url, "timeout_s": 0.2, "retry_s": 0.1, "prefix": "t"}
    redis_config.update(redis_options)
    data: dict[str, Any] = {
        "backends": backend_configs(fakes[0][1], fakes[1][1]),
        "router": {"kind": "rules"},
        "keys": KEYS,
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "redis": redis_config,
    }
    return parse_config(data)


def post(base: str, key: str, dialect: str = "openai", model: str = "closed") -> httpx.Response:
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
    if dialect == "openai":
        return httpx.post(f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{base}/v1/messages", json=body, headers=headers)


def limits_state(base: str) -> dict[str, Any]:
    resp = httpx.get(f"{base}/readyz")
    assert resp.status_code == 200  # Redis down never makes a replica unready: they all share it
    state: dict[str, Any] = resp.json()["limits"]
    return state


def metric(base: str, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {wanted}")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def spent_in_redis(port: int, name: str) -> float:
    client = redis.Redis(port=port, decode_responses=True)
    try:
        value = client.hget(key_names("t", name)[0], "spent")
        assert isinstance(value, str)
        return float(value)
    finally:
        client.close()


def ledger_cost(tmp_path: Path, key: str, count: int) -> float:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    rows: list[LedgerRow] = []

    def written() -> bool:
        rows[:] = [r for r in read_rows(url) if r.key_name == key]
        return len(rows) == count

    wait_for(written, f"{count} ledger rows of {key}")
    return sum(r.cost_usd for r in rows)


def test_killed_redis_money_fails_closed_rate_falls_back_and_all_recovers(
    fakes: Fakes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tiergate.limits")
    with private_redis(tmp_path) as server, serve_gateway(config(fakes, tmp_path, server.url)) as base:
        assert post(base, "sk-money").status_code == 200
        assert post(base, "sk-rate", model="open").status_code == 200
        assert metric(base, "tiergate_limits_store_up") == 1.0

        server.kill()
        money = [post(base, "sk-money", dialect) for dialect in ("openai", "anthropic")]
        assert [r.status_code for r in money] == [503, 503]
        assert money[0].json()["error"]["type"] == "server_error"
        assert money[1].json()["error"]["type"] == "overloaded_error"
        for resp in money:
            assert "the budget of key 'money' cannot be checked" in resp.json()["error"]["message"]
            assert resp.headers["retry-after"] == "1"
        # The rate limit falls back to this replica's own window (local_share 1: the whole limit), fresh.
        rate = [post(base, "sk-rate", model="open") for _ in range(5)]
        assert [r.status_code for r in rate] == [200, 200, 200, 200, 429]
        assert "over its limit of 4 requests per minute" in rate[-1].json()["error"]["message"]
        assert int(rate[-1].headers["retry-after"]) >= 1
        state = limits_state(base)
        assert state["state"] == "down"
        assert "ConnectionError" in state["last_error"]
        assert metric(base, "tiergate_limits_store_up") == 0.0
        assert metric(base, "tiergate_limits_fallback_total", limit="budget", action="closed") == 2
        assert metric(base, "tiergate_limits_fallback_total", limit="rate", action="local") == 5
        assert any("does not answer" in r.message and "budgets fail closed" in r.message for r in caplog.records)

        # Redis comes back empty: the accounts are created again with the spend in the ledger. A row reaches the
        # ledger within its flush interval (0.5 s); one written after the new account was made would be missed.
        ledger_cost(tmp_path, "money", count=3)
        server.start()
        wait_for(lambda: limits_state(base)["state"] == "up", "the gateway sees Redis again")
        assert post(base, "sk-money", "anthropic").status_code == 200
        assert metric(base, "tiergate_limits_store_up") == 1.0
        assert any("answers again after" in r.message for r in caplog.records)
        cost = ledger_cost(tmp_path, "money", count=4)  # 2 served, 2 refused while Redis was down
        spent = spent_in_redis(server.port, "money")
    # Redis was re-seeded from the ledger (the first request's cost, flushed before the restart) and the
    # last request settled on top: what the ledger says, to the cent.
    assert cost > 0
    assert spent == pytest.approx(cost, abs=1e-9)


def test_hung_redis_times_out_budget_fails_open_and_the_spend_reaches_it_later(fakes: Fakes, tmp_path: Path) -> None:
    options = {"on_unavailable": {"budget": "open", "rate": "local"}, "local_share": 0.5}
    with private_redis(tmp_path) as server, serve_gateway(config(fakes, tmp_path, server.url, **options)) as base:
        assert post(base, "sk-money").status_code == 200
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            served = [post(base, "sk-money", dialect) for dialect in ("openai", "anthropic", "openai")]
            rate = [post(base, "sk-rate", model="open") for _ in range(3)]
            state = limits_state(base)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert [r.status_code for r in served] == [200, 200, 200]  # fail open: no budget check meanwhile
        assert [r.status_code for r in rate] == [200, 200, 429]  # half of 4 a minute, in this replica alone
        assert state["state"] == "down"
        assert "Timeout" in state["last_error"]
        assert state["pending_settlements"] >= 3  # the outage's spend, kept for Redis
        wait_for(lambda: limits_state(base)["state"] == "up", "the gateway sees Redis again")
        wait_for(lambda: limits_state(base)["pending_settlements"] == 0, "the held settlements sent")
        assert metric(base, "tiergate_limits_fallback_total", limit="budget", action="open") == 3
        spent = spent_in_redis(server.port, "money")
        cost = ledger_cost(tmp_path, "money", count=4)
    assert spent == pytest.approx(cost, abs=1e-9)  # every request's cost, those served during the outage too


def test_a_gateway_starts_while_redis_is_down_and_picks_it_up_later(fakes: Fakes, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # not started yet
    try:
        with serve_gateway(config(fakes, tmp_path, server.url)) as base:
            state = limits_state(base)
            assert (state["state"], state["store"]) == ("down", "redis")
            assert post(base, "sk-money").status_code == 503
            assert post(base, "sk-rate", model="open").status_code == 200  # the local stand-in
            server.start()
            wait_for(lambda: limits_state(base)["state"] == "up", "the gateway sees Redis")
            assert post(base, "sk-money").status_code == 200
    finally:
        server.kill()
