"""The pipeline without HTTP: plan, admit, dispatch and account over :class:`MockBackend`s."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ledger import rows_of
from tiergate.accounting.cost import CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.metrics import Metrics
from tiergate.accounting.prices import load_price_table
from tiergate.backends import BackendFactory
from tiergate.backends.mock import Handler, MockBackend, reply
from tiergate.config import BackendConfig, Config, parse_config
from tiergate.dispatch.pool import Pool
from tiergate.errors import RateLimited, UpstreamUnavailable
from tiergate.limits import LocalLimiter
from tiergate.pipeline import Account, Admission, Caller, Gateway, build_gateway
from tiergate.types import ChatRequest, Dialect, Message, Tier, Usage

MOCKS = [
    {"name": "local", "tier": "open", "kind": "mock"},
    {"name": "claude", "tier": "closed", "kind": "mock", "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
]


def config(**extra: Any) -> Config:
    return parse_config({"backends": MOCKS, "router": {"kind": "rules"}, **extra})


def gateway_of(cfg: Config, handlers: dict[str, Handler]) -> Gateway:
    def factory(backend: BackendConfig) -> MockBackend:
        return MockBackend(backend, handlers[backend.name])

    registry: dict[str, BackendFactory] = {"mock": factory}
    return build_gateway(cfg, registry)


def chat(model: str = "auto", text: str = "hello", max_tokens: int | None = 100) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.text("user", text)], max_tokens=max_tokens)


def answers(name: str) -> Handler:
    return lambda request: reply(f"from {name}", Usage(input_tokens=10, output_tokens=5))


async def test_a_plan_is_dispatched_to_its_first_target() -> None:
    gw = gateway_of(config(), {"local": answers("local"), "claude": answers("claude")})
    plan = await gw.plan(chat("open"), Caller())
    assert [t.name for t in plan.targets] == ["local", "claude"]  # open first, failover to closed
    response, outcome = await gw.complete(chat("open"), plan)
    assert (response.text, outcome.backend.name, outcome.route) == ("from local", "local", "explicit:open")


async def test_a_failed_open_backend_fails_over_to_the_closed_tier() -> None:
    def down(request: ChatRequest) -> None:
        raise UpstreamUnavailable("down", backend="local")

    gw = gateway_of(config(), {"local": down, "claude": answers("claude")})  # type: ignore[dict-item]
    plan = await gw.plan(chat("open"), Caller())
    response, outcome = await gw.complete(chat("open"), plan)
    assert response.text == "from claude"
    assert outcome.tier is Tier.CLOSED
    assert outcome.failovers == ["local"]
    assert outcome.route == "explicit:open;failover:open-down"


async def test_an_unknown_model_is_a_404_before_any_backend_is_called() -> None:
    calls: list[ChatRequest] = []
    gw = gateway_of(config(), {"local": calls.append, "claude": calls.append})  # type: ignore[dict-item]
    with pytest.raises(Exception, match="does not exist here"):
        await gw.plan(chat("no-such-model"), Caller())
    assert calls == []


def admission(cfg: Config) -> Admission:
    return Admission(LocalLimiter(cfg.keys), CostModel(cfg, load_price_table()))


async def test_admission_returns_the_downgraded_plan_and_leaves_the_planned_one_alone() -> None:
    cfg = config(keys=[{"name": "team", "key": "sk-team", "budget_usd_per_month": 0, "over_budget": "downgrade"}])
    gw = gateway_of(cfg, {"local": answers("local"), "claude": answers("claude")})
    planned = await gw.plan(chat("closed"), Caller("team"))
    admitted = await admission(cfg).admit(Caller("team"), chat("closed"), planned)
    assert [t.name for t in admitted.plan.targets] == ["local"]
    assert admitted.plan.route == "explicit:closed;budget:downgrade"
    assert admitted.reservation is not None
    assert admitted.reservation.downgraded
    assert [t.name for t in planned.targets] == ["claude", "local"]  # not rewritten in place
    _response, outcome = await gw.complete(chat("closed"), admitted.plan)
    assert outcome.backend.name == "local"


async def test_admission_refuses_a_plan_that_must_stay_closed() -> None:
    cfg = config(keys=[{"name": "team", "key": "sk-team", "budget_usd_per_month": 0}])
    gw = gateway_of(cfg, {"local": answers("local"), "claude": answers("claude")})
    planned = await gw.plan(chat("closed"), Caller("team"))
    with pytest.raises(RateLimited, match="monthly budget"):
        await admission(cfg).admit(Caller("team"), chat("closed"), planned)


async def test_a_caller_without_limits_is_admitted_as_planned() -> None:
    cfg = config()
    gw = gateway_of(cfg, {"local": answers("local"), "claude": answers("claude")})
    planned = await gw.plan(chat("closed"), Caller())
    admitted = await admission(cfg).admit(Caller(), chat("closed"), planned)
    assert admitted.plan is planned
    assert admitted.reservation is None


@dataclass
class Books:
    pool: Pool
    costs: CostModel
    ledger: Ledger
    budgets: LocalLimiter
    metrics: Metrics = field(default_factory=Metrics)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, work: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(work))


async def test_every_ending_writes_one_row_built_the_same_way(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    cfg = config()
    gw = gateway_of(cfg, {"local": answers("local"), "claude": answers("claude")})
    ledger = Ledger(url)
    await ledger.start()
    books = Books(gw.pool, CostModel(cfg, load_price_table()), ledger, LocalLimiter(cfg.keys))
    try:
        served = Account(books, Dialect.OPENAI, "r-ok", 0.0, caller="team", model="closed")
        plan = await gw.plan(chat("closed"), Caller())
        response, outcome = await gw.complete(chat("closed"), plan)
        usd = served.record(outcome, response.usage, "ok")
        failed = Account(books, Dialect.ANTHROPIC, "r-err", 0.0, caller="team", model="closed", plan=plan)
        row = failed.record_error(UpstreamUnavailable("down", backend="claude"))
    finally:
        await ledger.close()
    rows = {r.request_id: r for r in await rows_of(url)}
    ok, err = rows["r-ok"], rows["r-err"]
    assert (ok.backend, ok.tier, ok.status, ok.input_tokens, ok.output_tokens) == ("claude", "closed", "ok", 10, 5)
    assert ok.cost_usd == pytest.approx(usd)
    assert usd == pytest.approx((10 * 3.0 + 5 * 15.0) / 1e6)
    assert (err.backend, err.tier, err.route, err.status, err.http_status) == (
        "claude",
        "closed",
        "explicit:closed",
        "error",
        503,
    )
    assert err.cost_usd == 0.0
    assert (row.request_id, row.dialect) == ("r-err", "anthropic")
    labels = {"dialect": "openai", "tier": "closed", "backend": "claude", "status": "ok"}
    assert books.metrics.registry.get_sample_value("tiergate_requests_total", labels) == 1
