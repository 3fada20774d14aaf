"""The Claude Code corpus (``tests/fixtures/claude_code``), through the gateway over real HTTP to a fake Claude that
records what it receives: every request reaches Claude as Claude Code sent it (the same JSON, and the same
``anthropic-*`` headers), streamed and not, and none is rejected.

The ``cli_*`` requests were captured from the real CLI (``@anthropic-ai/claude-code`` 2.1.328, print mode, a Read
tool round trip; see ``test_claude_code_cli.py``), its device id blanked; the others are modelled on its traffic
by ``generate.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CLAUDE_KEY_ENV, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.fakes.fake_anthropic import signature
from tests.support.servers import serve_app
from tiergate.config import parse_config

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
CASES = sorted(p.stem for p in CORPUS.glob("*.json"))
USER_KEY = "sk-ant-api03-the-users-own-key"


def case(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
    return doc


@dataclass
class World:
    url: str
    claude: FakeAnthropic


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    claude, vllm = FakeAnthropic(api_key="sk-ant-test"), FakeOpenAI(models=["fake-llama-8b"])
    with serve_app(claude) as c_url, serve_app(vllm) as v_url:
        backends = [
            {"name": "vllm", "tier": "open", "kind": "openai", "base_url": v_url + "/v1", "model": "fake-llama-8b"},
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "base_url": c_url,
                "model": "claude-sonnet-4-5",
                "api_key_env": CLAUDE_KEY_ENV,
            },
        ]
        config = parse_config({"backends": backends, "router": {"kind": "learned"}})
        with serve_gateway(config) as url:
            yield World(url, claude)


def sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def test_the_corpus_has_what_claude_code_sends() -> None:
    bodies = [case(name)["body"] for name in CASES]
    text = json.dumps(bodies)
    assert len(CASES) >= 15
    assert any(isinstance(b.get("system"), list) and "cache_control" in b["system"][-1] for b in bodies)
    assert any("cache_control" in t for b in bodies for t in b.get("tools", []))
    assert any(b.get("thinking", {}).get("type") == "enabled" for b in bodies)
    for kind in ("thinking", "tool_use", "tool_result", "web_search_20250305"):
        assert f'"type": "{kind}"' in text
    assert any(b.get("max_tokens") == 32000 and b.get("stream") is True for b in bodies)
    assert all("user_id" in b["metadata"] for b in bodies if "max_tokens" in b)
    assert all("anthropic-beta" in case(name)["headers"] for name in CASES)


#: Each request as sent, and with ``stream`` flipped (a token count has no stream: sent as is only).
RUNS = [
    pytest.param(name, flip, id=f"{name}-{'stream-flipped' if flip else 'as-sent'}")
    for name in CASES
    for flip in (False, True)
    if not (flip and case(name)["path"].endswith("count_tokens"))
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("name", "flip"), RUNS)
def test_claude_receives_what_claude_code_sent(world: World, name: str, flip: bool) -> None:
    doc = case(name)
    body = doc["body"]
    if flip:
        body = body | {"stream": not body.get("stream", False)}
    headers = {**doc["headers"], "x-api-key": USER_KEY, "content-type": "application/json"}
    before = len(world.claude.received)
    with httpx.stream("POST", world.url + doc["path"], json=body, headers=headers, timeout=60) as resp:
        status = resp.status_code
        if body.get("stream"):
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = sse(resp.iter_lines())
            content = assemble(events)
        else:
            answer = json.loads(resp.read())
            content = answer.get("content", [])
    assert status == 200, (name, resp.read())
    (sent,) = [r for r in world.claude.received[before:] if r.path == doc["path"]]
    assert sent.body == body  # byte for byte after JSON normalisation: the Claude model is served as named
    for key, value in doc["headers"].items():
        if key.startswith("anthropic-"):
            assert sent.headers[key] == value
    credentials = sent.headers.get("x-api-key", "") + sent.headers.get("authorization", "")
    assert "sk-ant-test" in credentials  # the gateway's own key (the SDK sends it as a bearer token)
    assert USER_KEY not in credentials  # never the caller's
    assert "x-app" not in sent.headers
    if not doc["path"].endswith("count_tokens"):
        assert resp.headers["x-tiergate-route"] == "model:claude->closed"
        assert "x-tiergate-dropped" not in resp.headers
        assert content
    if body.get("thinking", {}).get("type") == "enabled":  # Claude's thinking comes back whole, signature included
        assert content[0]["type"] == "thinking"
        assert content[0]["signature"] == signature(content[0]["thinking"])


def assemble(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks of a streamed message, as a client accumulates them."""
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"
    blocks: list[dict[str, Any]] = []
    for ev in events:
        if ev["type"] == "content_block_start":
            blocks.append(dict(ev["content_block"]))
        elif ev["type"] == "content_block_delta":
            block, delta = blocks[ev["index"]], ev["delta"]
            for field in ("text", "thinking", "signature", "partial_json"):
                if field in delta:
                    block[field] = block.get(field, "") + delta[field]
    return blocks
