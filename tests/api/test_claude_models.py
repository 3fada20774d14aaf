"""Claude clients (Claude Code: ``ANTHROPIC_BASE_URL=http://127.0.0.1:8787``) name real Claude models: they reach
Claude as named and are priced as that model; model-name rules send some elsewhere; with no Claude backend the
open tier answers, and says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.ledger import wait_rows
from tiergate.accounting.prices import load_price_table, token_cost
from tiergate.config import parse_config

HI: Any = [{"role": "user", "content": "hi"}]
# The SDK warns about models it deprecates (claude-sonnet-4-5 by now); Claude Code still names them.
DEPRECATED = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def gateway(
    fake_claude: tuple[FakeAnthropic, str],
    fake_openai: tuple[FakeOpenAI, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    ledger = f"sqlite:///{Path(tmp_path_factory.mktemp('models')) / 'ledger.db'}"
    config = parse_config(
        {
            "backends": backend_configs(fake_claude[1], fake_openai[1]),
            "router": {"kind": "rules"},
            "models": [{"match": "claude-3-5-haiku-*", "tier": "open"}],
            "ledger": {"url": ledger},
        }
    )
    with serve_gateway(config) as url:
        yield url, ledger


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=30)


@DEPRECATED
@pytest.mark.parametrize("model", ["claude-sonnet-4-5-20250929", "claude-haiku-4-5", "claude-opus-4-5"])
def test_a_claude_model_is_served_as_named_and_priced_as_itself(
    gateway: tuple[str, str], fake_claude: tuple[FakeAnthropic, str], model: str
) -> None:
    url, ledger = gateway
    fake, _ = fake_claude
    before = len(fake.received)
    raw = client(url).messages.with_raw_response.create(model=model, max_tokens=16, messages=HI)
    msg = raw.parse()
    assert (raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-route"]) == ("closed", "model:claude->closed")
    (sent,) = [r for r in fake.received[before:] if r.path == "/v1/messages"]
    assert sent.body["model"] == msg.model == model
    row = wait_rows(ledger, {raw.headers["x-request-id"]})[raw.headers["x-request-id"]]
    price = load_price_table().price_of(model)
    assert row.cost_usd == pytest.approx(token_cost(price, msg.usage.input_tokens, msg.usage.output_tokens))
    assert row.model == model


@DEPRECATED
def test_a_model_rule_sends_background_calls_to_the_open_tier(gateway: tuple[str, str]) -> None:
    url, _ = gateway
    raw = client(url).messages.with_raw_response.create(model="claude-3-5-haiku-20241022", max_tokens=16, messages=HI)
    assert raw.parse().content
    assert raw.headers["x-tiergate-route"] == "model-rule:claude-3-5-haiku-*->open"
    assert raw.headers["x-tiergate-backend"] == "vllm"


def test_a_claude_model_without_a_price_of_its_own_costs_the_backends_price(gateway: tuple[str, str]) -> None:
    url, ledger = gateway
    raw = client(url).messages.with_raw_response.create(model="claude-sonnet-5", max_tokens=16, messages=HI)
    msg = raw.parse()
    assert msg.model == "claude-sonnet-5"
    row = wait_rows(ledger, {raw.headers["x-request-id"]})[raw.headers["x-request-id"]]
    configured = load_price_table().price_of("claude-sonnet-4-5")  # the backend's model, in conftest
    assert row.cost_usd == pytest.approx(token_cost(configured, msg.usage.input_tokens, msg.usage.output_tokens))


@DEPRECATED
def test_without_a_claude_backend_the_open_tier_answers(fake_openai: tuple[FakeOpenAI, str]) -> None:
    open_only = [b for b in backend_configs("http://unused", fake_openai[1]) if b["tier"] == "open"]
    config = parse_config({"backends": open_only, "router": {"kind": "rules"}})
    with (
        serve_gateway(config) as url,
        client(url).messages.stream(model="claude-sonnet-4-5-20250929", max_tokens=16, messages=HI) as stream,
    ):
        text = stream.get_final_text()
        headers = stream.response.headers
    assert text
    assert (headers["x-tiergate-tier"], headers["x-tiergate-route"]) == ("open", "model:claude-unavailable->open")
