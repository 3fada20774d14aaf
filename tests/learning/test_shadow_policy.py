"""Which requests a shadow pair may be drawn for, on in-process backends: hard policy filters the other tier and
the judge (flagged prompts never reach the open tier, sovereign ones never leave the perimeter), the daily cap
and the key's budget hold, and only the router's own decisions are shadowed."""

from __future__ import annotations

import numpy as np
import pytest

from tiergate.accounting.budgets import Budgets, Limits
from tiergate.accounting.cost import CostModel
from tiergate.accounting.prices import load_price_table
from tiergate.backends.mock import MockBackend
from tiergate.config import BackendConfig, Config, parse_config
from tiergate.learning.shadow import Learning
from tiergate.limits.local import LocalLimiter
from tiergate.pipeline.build import build_gateway
from tiergate.pipeline.gateway import Gateway, Outcome, Plan
from tiergate.pipeline.policy import PolicyVerdict
from tiergate.routing.base import RouteDecision, Signals
from tiergate.types import ChatRequest, ChatResponse, Message, StopReason, TextPart, Tier, Usage


async def _answer(request: ChatRequest) -> ChatResponse:
    return ChatResponse(id="x", model="m", parts=[TextPart("ok")], stop_reason=StopReason.END_TURN, usage=Usage())


def _build(backends: list[dict[str, object]], **shadow: object) -> tuple[Config, Gateway]:
    config = parse_config({"backends": backends, "router": {"kind": "rules", "shadow": {"share": 1.0, **shadow}}})

    def factory(c: BackendConfig) -> MockBackend:
        return MockBackend(c, _answer)

    return config, build_gateway(config, {"test": factory})


BACKENDS: list[dict[str, object]] = [
    {"name": "gpu", "tier": "open", "kind": "test"},
    {"name": "claude", "tier": "closed", "kind": "test", "model": "claude-sonnet-4-5"},
]
CHAT = ChatRequest(model="auto", messages=[Message.text("user", "Name three rivers.")], max_tokens=64)


def _plan(gateway: Gateway, served: str, verdict: PolicyVerdict, fallback: bool = False) -> tuple[Plan, Outcome]:
    state = gateway.pool.states[served]
    tier = state.config.tier
    decision = RouteDecision(tier, 0.4, 0.5, "router:0.40<0.50", ood=0.5, fallback=fallback)
    plan = Plan([state], decision.reason, tier, 0.4, decision=decision, signals=Signals(np.zeros(384, np.float32)))
    plan.verdict = verdict
    return plan, Outcome(state, plan.route)


def _learning(config: Config, gateway: Gateway, budgets: Budgets | None = None) -> Learning:
    costs = CostModel(config, load_price_table({}))
    limiter = LocalLimiter([])  # this process's book, as without Redis
    limiter.book = budgets or Budgets({})
    return Learning(config.router.shadow, gateway, costs, limiter)


def test_a_routed_request_is_drawn_with_the_other_tier_and_the_judge() -> None:
    config, gateway = _build(BACKENDS)
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "gpu", PolicyVerdict())
    ticket = learning.select("r1", "team", CHAT, plan, served)
    assert ticket is not None
    assert [s.name for s in ticket.shadow] == ["claude"]
    assert [s.name for s in ticket.judges] == ["claude"]
    assert (ticket.served_tier, ticket.sample_prob) == (Tier.OPEN, 1.0)
    plan.decision = None  # a rule or the caller chose the tier: nothing to learn for the router
    assert learning.select("r2", "team", CHAT, plan, served) is None


def test_a_flagged_prompt_is_never_shadowed_or_judged_on_the_open_tier() -> None:
    config, gateway = _build(BACKENDS, judge="open")
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "claude", PolicyVerdict(flagged=True))
    assert learning.select("r1", "team", CHAT, plan, served) is None
    assert learning.counts["skipped:policy"] == 1
    config, gateway = _build([*BACKENDS, {"name": "claude-2", "tier": "closed", "kind": "test"}], judge="open")
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "claude", PolicyVerdict())
    assert learning.select("r2", "team", CHAT, plan, served) is not None  # not flagged: the open judge is fine
    plan.verdict = PolicyVerdict(flagged=True)
    assert learning.select("r3", "team", CHAT, plan, served) is None


def test_a_sovereign_prompt_never_leaves_the_perimeter() -> None:
    inside: dict[str, object] = {"name": "claude-dc", "tier": "closed", "kind": "test", "perimeter": "internal"}
    config, gateway = _build([*BACKENDS, inside])
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "gpu", PolicyVerdict(sovereign=True))
    ticket = learning.select("r1", "team", CHAT, plan, served)
    assert ticket is not None
    assert [s.name for s in ticket.shadow] == ["claude-dc"]
    assert [s.name for s in ticket.judges] == ["claude-dc"]
    config, gateway = _build(BACKENDS)  # no closed backend inside the perimeter: not shadowed at all
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "gpu", PolicyVerdict(sovereign=True))
    assert learning.select("r2", "team", CHAT, plan, served) is None
    assert learning.counts["skipped:policy"] == 1
    config, gateway = _build(BACKENDS, judge="claude")  # the judge named, outside the perimeter
    plan, served = _plan(gateway, "gpu", PolicyVerdict(sovereign=True))
    assert learning.judges(plan) == []


def test_the_daily_cap_the_budget_and_the_shares_hold() -> None:
    config, gateway = _build(BACKENDS, max_usd_per_day=0.0)
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "gpu", PolicyVerdict())
    assert learning.select("r1", "team", CHAT, plan, served) is None
    assert learning.counts["skipped:daily-cap"] == 1
    config, gateway = _build(BACKENDS)
    budgets = Budgets({"poor": Limits(budget_usd_per_month=1e-9), "rich": Limits(budget_usd_per_month=10.0)})
    learning = _learning(config, gateway, budgets)
    plan, served = _plan(gateway, "gpu", PolicyVerdict())
    assert learning.select("r2", "poor", CHAT, plan, served) is None
    assert learning.counts["skipped:budget"] == 1
    assert learning.select("r3", "rich", CHAT, plan, served) is not None
    config, gateway = _build(BACKENDS, share=0.0, ood_share=1.0)
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "gpu", PolicyVerdict())
    assert learning.select("r4", "team", CHAT, plan, served) is None  # in distribution: share 0
    plan, served = _plan(gateway, "gpu", PolicyVerdict(), fallback=True)
    assert learning.select("r5", "team", CHAT, plan, served) is not None


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_the_share_is_a_seeded_draw(share: float) -> None:
    config, gateway = _build(BACKENDS, share=share)
    learning = _learning(config, gateway)
    plan, served = _plan(gateway, "gpu", PolicyVerdict())
    drawn = sum(learning.select(f"r{i}", "team", CHAT, plan, served) is not None for i in range(2000))
    assert abs(drawn / 2000 - share) < 0.05
