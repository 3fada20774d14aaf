"""Model names without HTTP: what ``model`` stands for (a backend, a tier, a rule, a Claude model), and why."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.pipeline.test_pipeline import MOCKS, answers, chat, gateway_of
from tiergate.backends.mock import MockBackend
from tiergate.config import parse_config
from tiergate.errors import NotFound
from tiergate.pipeline import Caller, Gateway
from tiergate.types import Tier

BACKENDS = cast(list[dict[str, Any]], MOCKS)
HANDLERS = {"local": answers("local"), "claude": answers("claude"), "haiku": answers("haiku")}
HAIKU = {"name": "haiku", "tier": "closed", "kind": "mock", "model": "claude-haiku-4-5"}


def gateway(backends: list[dict[str, Any]] = BACKENDS, **extra: Any) -> Gateway:
    return gateway_of(parse_config({"backends": backends, "router": {"kind": "rules"}, **extra}), HANDLERS)


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5-20250929", "claude-haiku-4-5", "claude-opus-4-5", "claude-3-7-sonnet-latest"]
)
async def test_a_claude_model_name_goes_to_the_closed_tier(model: str) -> None:
    gw = gateway()
    plan = await gw.plan(chat(model), Caller())
    assert (plan.tier, plan.route, plan.pinned) == (Tier.CLOSED, "model:claude->closed", False)
    assert [t.name for t in plan.targets] == ["claude", "local"]  # failover as for any closed request
    assert plan.claude_model == model
    response, outcome = await gw.complete(chat(model), plan)
    assert response.text == "from claude"
    assert outcome.model is None  # a mock backend serves its own model, whatever the name
    claude = gw.pool.get("claude")
    assert claude is not None
    assert isinstance(claude.backend, MockBackend)
    assert claude.backend.requests[-1].claude_model == model


async def test_the_backend_serving_the_named_model_comes_first() -> None:
    gw = gateway([*BACKENDS, HAIKU])
    plan = await gw.plan(chat("claude-haiku-4-5-20251001"), Caller())
    assert [t.name for t in plan.targets] == ["haiku", "claude", "local"]


async def test_without_a_claude_backend_claude_names_are_served_by_the_open_tier() -> None:
    gw = gateway([BACKENDS[0]])
    plan = await gw.plan(chat("claude-sonnet-4-5-20250929"), Caller())
    assert (plan.tier, plan.route) == (Tier.OPEN, "model:claude-unavailable->open")
    assert [t.name for t in plan.targets] == ["local"]


async def test_a_model_rule_sends_a_named_model_to_a_tier() -> None:
    gw = gateway(models=[{"match": "claude-haiku-*", "tier": "open"}])
    plan = await gw.plan(chat("claude-haiku-4-5-20251001"), Caller())
    assert (plan.tier, plan.route) == (Tier.OPEN, "model-rule:claude-haiku-*->open")
    assert [t.name for t in plan.targets] == ["local", "claude"]
    sonnet = await gw.plan(chat("claude-sonnet-4-5"), Caller())  # no rule matches: the default for Claude names
    assert sonnet.route == "model:claude->closed"


async def test_hard_policy_still_wins_over_a_model_rule() -> None:
    gw = gateway(models=[{"match": "claude-*", "tier": "closed"}])
    plan = await gw.plan(chat("claude-opus-4-5"), Caller(sovereign=True))
    assert plan.route == "policy:sovereign:key;model-rule:claude-*->closed"
    assert [t.name for t in plan.targets] == ["local"]  # Claude is outside the perimeter


async def test_rules_match_other_names_too_and_the_first_match_wins() -> None:
    rules = [{"match": "gpt-4o*", "tier": "closed"}, {"match": "gpt-*", "tier": "open"}]
    gw = gateway(models=rules)
    assert (await gw.plan(chat("gpt-4o-mini"), Caller())).route == "model-rule:gpt-4o*->closed"
    assert (await gw.plan(chat("gpt-5"), Caller())).route == "model-rule:gpt-*->open"


async def test_backend_names_and_tiers_come_before_rules() -> None:
    gw = gateway(models=[{"match": "*", "tier": "open"}])
    assert (await gw.plan(chat("claude"), Caller())).route == "explicit:claude"
    assert (await gw.plan(chat("closed"), Caller())).route == "explicit:closed"


async def test_an_unknown_name_is_a_404_naming_what_is_served() -> None:
    gw = gateway([*BACKENDS, HAIKU])
    with pytest.raises(NotFound, match="claude-haiku-4-5") as err:
        await gw.plan(chat("mistral-9"), Caller())
    assert "a Claude model name" in err.value.message
