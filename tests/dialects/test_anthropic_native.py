"""Anthropic in -> Claude is lossless: the body Claude receives is the caller's, and Claude's answer comes back as
Claude sent it, streams included (the fake Claude signs its thinking and caches prompts as Claude does, so a
thinking block or a cache breakpoint lost on the way shows)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import CLAUDE_KEY_ENV, serve_gateway
from tests.fakes import CutStream, FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.fake_anthropic import signature
from tests.support.ledger import wait_rows
from tests.support.servers import serve_app
from tiergate.accounting.prices import load_price_table, token_cost
from tiergate.config import parse_config

HEADERS = {"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14"}
CLAUDE_MODEL = "claude-sonnet-4-5"
EPHEMERAL = {"type": "ephemeral"}
THOUGHT = "The user wants a city; Lima is a fine one."
DOC_TEXT = "Lima is the capital of Peru. It lies on the Pacific coast."


def everything() -> dict[str, Any]:
    """A body with every field and block the canonical model does not interpret."""
    return {
        "model": "claude",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are a terse assistant.", "cache_control": EPHEMERAL},
            {"type": "text", "text": "Cite your sources.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "top_k": 40,
        "service_tier": "auto",
        "container": "container_011CQ",
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}],
        "a_field_of_the_future": {"nested": [1, "two", None]},
        "metadata": {"user_id": "user_4f1c_account_9a_session_77"},
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "cache_control": EPHEMERAL,
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "code_execution_20250825", "name": "code_execution"},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": DOC_TEXT},
                        "title": "Peru",
                        "citations": {"enabled": True},
                        "cache_control": EPHEMERAL,
                    },
                    {
                        "type": "search_result",
                        "source": "https://example.com/lima",
                        "title": "Lima",
                        "content": [{"type": "text", "text": "Lima has about ten million inhabitants."}],
                        "citations": {"enabled": True},
                    },
                    {"type": "text", "text": "What is the weather in the capital?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                    {
                        "type": "text",
                        "text": "Lima is the capital.",
                        "citations": [
                            {
                                "type": "char_location",
                                "cited_text": "Lima is the capital of Peru.",
                                "document_index": 0,
                                "document_title": "Peru",
                                "start_char_index": 0,
                                "end_char_index": 28,
                            }
                        ],
                    },
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Lima"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01A",
                        "content": [{"type": "text", "text": "Foggy, 16 C"}],
                        "cache_control": EPHEMERAL,
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }


@dataclass
class World:
    url: str  # the gateway
    claude: FakeAnthropic
    claude_url: str
    vllm: FakeOpenAI
    ledger: str


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A gateway with its own fake Claude (a fresh prompt cache) and ledger."""
    claude, vllm = FakeAnthropic(api_key="sk-ant-test"), FakeOpenAI(models=["fake-llama-8b"])
    ledger = f"sqlite:///{Path(tmp_path_factory.mktemp('native')) / 'ledger.db'}"
    with serve_app(claude) as c_url, serve_app(vllm) as v_url:
        backends = [
            {"name": "vllm", "tier": "open", "kind": "openai", "base_url": v_url + "/v1", "model": "fake-llama-8b"},
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "base_url": c_url,
                "model": CLAUDE_MODEL,
                "api_key_env": CLAUDE_KEY_ENV,
            },
        ]
        config = parse_config({"backends": backends, "router": {"kind": "rules"}, "ledger": {"url": ledger}})
        with serve_gateway(config) as url:
            yield World(url, claude, c_url, vllm, ledger)


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url + "/v1/messages", json=body, headers={**HEADERS, **(headers or {})}, timeout=30)


def sse(lines: Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def last_sent(fake: FakeAnthropic, before: int) -> Any:
    (sent,) = [r for r in fake.received[before:] if r.path == "/v1/messages"]
    return sent


@pytest.mark.parametrize("stream", [False, True])
def test_claude_receives_the_callers_body(w: World, stream: bool) -> None:
    url, claude = w.url, w.claude
    body = everything()
    body["stream"] = stream
    before = len(claude.received)
    if stream:
        with httpx.stream("POST", url + "/v1/messages", json=body, headers=HEADERS, timeout=30) as resp:
            assert resp.status_code == 200, resp.read()
            events = sse(resp.iter_lines())
        assert events[-1][0] == "message_stop"
    else:
        resp = post(url, body)
        assert resp.status_code == 200, resp.text
    sent = last_sent(claude, before)
    assert sent.body == {**body, "model": CLAUDE_MODEL}  # the one documented change: the model served
    assert sent.headers["anthropic-beta"] == HEADERS["anthropic-beta"]
    assert resp.headers["x-tiergate-route"] == "explicit:claude"
    assert "x-tiergate-dropped" not in resp.headers


def test_tiergate_metadata_never_reaches_claude(w: World) -> None:
    url, claude = w.url, w.claude
    body = {"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    before = len(claude.received)
    assert post(url, {**body, "metadata": {"tiergate_sovereign": False}}).status_code == 200
    assert last_sent(claude, before).body == {**body, "model": CLAUDE_MODEL}


def test_thinking_round_trip_keeps_the_signature(w: World) -> None:
    """Claude Code's turn two replays turn one's thinking block: the fake refuses it unless it is byte-exact."""
    url, claude = w.url, w.claude
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, default_headers=HEADERS)
    question: Any = {"role": "user", "content": "Pick a city."}
    first = client.messages.create(
        model="claude", max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1024}, messages=[question]
    )
    thinking = first.content[0]
    assert thinking.type == "thinking"
    assert thinking.signature == signature(thinking.thinking)
    assert first.content[1].type == "text"
    second = client.messages.create(
        model="claude",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[question, {"role": "assistant", "content": first.content}, {"role": "user", "content": "Why?"}],
    )
    assert second.stop_reason == "end_turn"
    sent = claude.received[-1].body
    assert sent["messages"][1]["content"][0] == thinking.model_dump(exclude_none=True)


def test_a_stream_comes_back_as_claude_sent_it(w: World) -> None:
    """Every event, in order, as the fake Claude sends it to a direct client (message ids aside)."""
    url = w.url
    body = {k: v for k, v in everything().items() if k != "system"}
    body["stream"] = True
    del body["tools"][0]["cache_control"], body["messages"][0]["content"][0]["cache_control"]
    del body["messages"][2]["content"][0]["cache_control"]  # no breakpoint: both calls report the same usage
    direct = copy.deepcopy(body) | {"model": CLAUDE_MODEL}
    key = {"x-api-key": "sk-ant-test"}
    with httpx.stream("POST", w.claude_url + "/v1/messages", json=direct, headers={**HEADERS, **key}, timeout=30) as r:
        expected = sse(r.iter_lines())
    with httpx.stream("POST", url + "/v1/messages", json=body, headers=HEADERS, timeout=30) as resp:
        got = sse(resp.iter_lines())
    assert [name for name, _ in got] == [name for name, _ in expected]
    assert "thinking_delta" in {d["delta"]["type"] for n, d in got if n == "content_block_delta"}
    assert "signature_delta" in {d["delta"]["type"] for n, d in got if n == "content_block_delta"}
    for (_, g), (_, e) in zip(got, expected, strict=True):
        if g["type"] == "message_start":
            g["message"].pop("id"), e["message"].pop("id")
        assert g == e


def test_a_message_comes_back_as_claude_sent_it(w: World) -> None:
    url = w.url
    body = everything()
    msg = post(url, body).json()
    assert msg["id"].startswith("msg_01")  # Claude's own id
    assert msg["model"] == CLAUDE_MODEL
    assert [b["type"] for b in msg["content"]] == ["thinking", "text"]
    assert msg["content"][0]["signature"] == signature(msg["content"][0]["thinking"])
    assert set(msg["usage"]) >= {"cache_creation_input_tokens", "cache_read_input_tokens", "service_tier"}


def test_cached_tokens_are_priced_at_their_own_rates(w: World) -> None:
    url, ledger = w.url, w.ledger
    body = {
        "model": "claude",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "A long and stable system prompt. " * 40, "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": "First question"}],
    }
    first = post(url, body)
    body["messages"] = [{"role": "user", "content": "Second question"}]
    second = post(url, body)
    written, read = first.json()["usage"], second.json()["usage"]
    assert written["cache_creation_input_tokens"] > 0
    assert read["cache_read_input_tokens"] == written["cache_creation_input_tokens"]
    rows = wait_rows(ledger, {first.headers["x-request-id"], second.headers["x-request-id"]})
    price = load_price_table().price_of(CLAUDE_MODEL)
    assert price.cache_write_per_mtok == pytest.approx(price.input_per_mtok * 1.25)
    assert price.cache_read_per_mtok == pytest.approx(price.input_per_mtok * 0.1)
    for resp, usage in ((first, written), (second, read)):
        row = rows[resp.headers["x-request-id"]]
        assert (row.cache_write_tokens, row.cache_read_tokens) == (
            usage["cache_creation_input_tokens"],
            usage["cache_read_input_tokens"],
        )
        expected = token_cost(
            price,
            usage["input_tokens"],
            usage["output_tokens"],
            cache_read_tokens=usage["cache_read_input_tokens"],
            cache_write_tokens=usage["cache_creation_input_tokens"],
        )
        assert row.cost_usd == pytest.approx(expected)
        assert float(resp.headers["x-tiergate-cost-usd"]) == pytest.approx(expected, abs=1e-8)


def test_count_tokens_is_lossless_too(w: World) -> None:
    url, claude = w.url, w.claude
    body = {
        "model": "claude",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Count me", "cache_control": EPHEMERAL}]}],
    }
    before = len(claude.received)
    resp = httpx.post(url + "/v1/messages/count_tokens", json=body, headers=HEADERS, timeout=30)
    assert resp.status_code == 200, resp.text
    (sent,) = [r for r in claude.received[before:] if r.path == "/v1/messages/count_tokens"]
    assert sent.body == {**body, "model": CLAUDE_MODEL}


ANSWER = "Lima is foggy today, sixteen degrees, and tomorrow looks much the same with a little sun."


@contextlib.contextmanager
def small_world(policy: dict[str, Any] | None = None) -> Iterator[World]:
    """Claude and an open server that give the same answer (so a stream broken on one can be spliced from the
    other), behind a gateway with ``policy``."""
    claude, vllm = FakeAnthropic(api_key="sk-ant-test", reply_text=ANSWER), FakeOpenAI(reply_text=ANSWER)
    with serve_app(claude) as c_url, serve_app(vllm) as v_url:
        backends = [
            {"name": "claude", "tier": "closed", "kind": "anthropic", "base_url": c_url, "api_key_env": CLAUDE_KEY_ENV},
            {"name": "vllm", "tier": "open", "kind": "openai", "base_url": v_url + "/v1", "model": "m"},
        ]
        config = parse_config({"backends": backends, "router": {"kind": "rules"}, "policy": policy or {}})
        with serve_gateway(config) as url:
            yield World(url, claude, c_url, vllm, "")


def test_a_broken_claude_stream_resumed_elsewhere_stays_one_message() -> None:
    """Claude's own events up to the break (thinking included), then the rest from the open tier, written on in
    the same text block: the SDK reads one whole message."""
    with small_world() as w:
        w.claude.script(CutStream(after_events=11))  # message_start, thinking (7 events), text start, 2 deltas
        client = anthropic.Anthropic(base_url=w.url, api_key="unused", max_retries=0)
        with client.messages.stream(
            model="closed",
            max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Weather in Lima?"}],
        ) as stream:
            final = stream.get_final_message()
            route = stream.response.headers["x-tiergate-route"]
        resumed = [r for r in w.vllm.received if r.path == "/v1/chat/completions"]
    assert len(resumed) == 1  # the break happened, and the open tier finished the answer
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == signature(final.content[0].thinking)
    assert final.content[1].type == "text"
    assert final.content[1].text == ANSWER
    assert final.stop_reason == "end_turn"
    assert route == "explicit:closed"


@pytest.mark.parametrize("stream", [False, True])
def test_redaction_edits_the_callers_body_in_place(stream: bool) -> None:
    """With ``action: redact``, personal data leaves as placeholders inside the caller's own blocks (cache
    breakpoints and thinking kept), and comes back restored."""
    policy = {"sovereignty": {"pii": ["EMAIL_ADDRESS"], "action": "redact"}}
    with small_world(policy) as w:
        w.claude.script(Reply(text="I will write to <EMAIL_ADDRESS_1> today."))
        body: dict[str, Any] = {
            "model": "claude",
            "max_tokens": 4096,
            "stream": stream,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "system": [{"type": "text", "text": "Reply to ann.lee@example.com.", "cache_control": EPHEMERAL}],
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Mail ann.lee@example.com", "cache_control": EPHEMERAL}],
                }
            ],
        }
        if stream:
            with httpx.stream("POST", w.url + "/v1/messages", json=body, headers=HEADERS, timeout=30) as resp:
                events = sse(resp.iter_lines())
            text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
        else:
            resp = post(w.url, body)
            text = "".join(b.get("text", "") for b in resp.json()["content"])
        sent = w.claude.received[-1].body
    assert resp.headers["x-tiergate-route"].startswith("policy:redact:pii=EMAIL_ADDRESS")
    assert "ann.lee@example.com" not in json.dumps(sent)
    assert sent["system"] == [{"type": "text", "text": "Reply to <EMAIL_ADDRESS_1>.", "cache_control": EPHEMERAL}]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "Mail <EMAIL_ADDRESS_1>", "cache_control": EPHEMERAL}
    ]
    assert sent["thinking"] == body["thinking"]
    assert text == "I will write to ann.lee@example.com today."
