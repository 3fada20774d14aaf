"""``route_item``: the library call that routes one batch item with the gateway's own plan (no model is called:
planning with the rules router needs no network and no encoder)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tiergate.batch import BatchBooks, message_batch_params, parse_line, route_item
from tiergate.batch.route import BATCH_CALLER
from tiergate.config import parse_config
from tiergate.pipeline.build import build_gateway
from tiergate.pipeline.gateway import Caller, Gateway
from tiergate.types import Dialect, Usage

VLLM = {"name": "vllm", "tier": "open", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "llama"}
CLAUDE = {"name": "claude", "tier": "closed", "kind": "anthropic", "model": "claude-sonnet-4-5"}
BEDROCK = {"name": "bedrock", "tier": "closed", "kind": "bedrock", "model": "anthropic.claude-sonnet-4-5-v1:0"}


def gateway(*backends: dict[str, Any], **extra: Any) -> Gateway:
    return build_gateway(parse_config({"backends": list(backends), "router": {"kind": "rules"}, **extra}))


def body(text: str, model: str = "auto", **kw: Any) -> bytes:
    return json.dumps({"body": {"model": model, "messages": [{"role": "user", "content": text}], **kw}}).encode()


def route(gw: Gateway, raw: bytes, caller: Caller = BATCH_CALLER) -> Any:
    return asyncio.run(route_item(gw, parse_line(raw, 0, 1).chat, caller))


def test_the_ways_an_item_goes() -> None:
    gw = gateway(VLLM, CLAUDE)
    assert route(gw, body("Say hello.")).way == "live"
    closed = route(gw, body("Prove it.", model="closed"))
    assert (closed.way, closed.tier, closed.target.name, closed.route) == (
        "message-batch",
        "closed",
        "claude",
        "explicit:closed",
    )
    assert closed.to_json() == {
        "way": "message-batch",
        "tier": "closed",
        "backend": "claude",
        "route": "explicit:closed",
        "sovereign": False,
        "error": None,
    }
    missing = route(gw, body("x", model="gpt-nope"))
    assert (missing.way, missing.error.status) == ("failed", 404)
    assert route(gw, b"{oops").way == "failed"


def test_a_sovereign_item_never_goes_to_message_batches() -> None:
    gw = gateway(VLLM, CLAUDE)
    flagged = route(gw, body("Prove it.", model="closed", metadata={"tiergate_sovereign": "true"}))
    assert (flagged.way, flagged.tier, flagged.target.name) == ("live", "open", "vllm")
    assert flagged.route.startswith("policy:sovereign")
    by_key = route(gw, body("Prove it.", model="closed"), Caller("hr", sovereign=True))
    assert (by_key.way, by_key.target.name) == ("live", "vllm")
    alone = route(gateway(CLAUDE), body("Prove it.", metadata={"tiergate_sovereign": "true"}))
    assert alone.way == "failed"
    assert "never sent outside the perimeter" in alone.error.message


def test_claude_without_message_batches_is_dispatched_live() -> None:
    """Bedrock and Vertex have no Message Batches API: their items go live, at the standard price."""
    item = route(gateway(VLLM, BEDROCK), body("Prove it.", model="closed"))
    assert (item.way, item.target.name) == ("live", "bedrock")


def test_params_are_redacted_where_the_policy_redacts() -> None:
    gw = gateway(VLLM, CLAUDE, policy={"sovereignty": {"pii": ["EMAIL_ADDRESS"], "action": "redact"}})
    chat = parse_line(body("Mail jane.doe@example.com now.", model="closed", max_tokens=9), 0, 1).chat
    assert chat is not None
    routed = asyncio.run(route_item(gw, chat))
    sent = message_batch_params(routed, chat)
    assert sent["model"] == "claude-sonnet-4-5"
    assert sent["max_tokens"] == 9
    assert sent["messages"][0]["content"][0]["text"] == "Mail <EMAIL_ADDRESS_1> now."
    with pytest.raises(ValueError, match="live item"):
        message_batch_params(route(gw, body("Say hello.")), chat)


def test_books_price_an_item_as_offline_work() -> None:
    config = parse_config({"backends": [VLLM, CLAUDE]})
    gw = build_gateway(config)
    books = BatchBooks.build(config, gw.pool, "tgb-1")
    usage = Usage(input_tokens=1000, output_tokens=500)
    kw: dict[str, Any] = {"tier": "closed", "backend": "claude", "status": "ok", "elapsed_s": 60.0, "usage": usage}
    batched = books.row("tgb-1-0", Dialect.OPENAI, "auto", route="explicit:closed", message_batch=True, **kw)
    live = books.row("tgb-1-1", Dialect.OPENAI, "auto", route="explicit:closed", **kw)
    assert batched.cost_usd == pytest.approx(0.0105 / 2)
    assert live.cost_usd == pytest.approx(0.0105)
    assert batched.counterfactual_usd == live.counterfactual_usd == pytest.approx(0.0105 / 2)
    assert (batched.batch, batched.key_name, batched.latency_ms) == ("tgb-1", "batch", 60_000.0)
