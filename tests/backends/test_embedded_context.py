"""The embedded model's context over HTTP: a large ``max_tokens`` (Claude Code's 32,000) is clamped to what the
context holds, only a prompt that does not fit is a 400, and a stream counts input tokens as a plain answer
does (the chat template included), in the response and in the ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import serve_gateway
from tests.support.ledger import wait_rows
from tiergate.config import parse_config

pytestmark = pytest.mark.slow
AN_HEADERS = {"anthropic-version": "2023-06-01"}
N_CTX = 256


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    ledger = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    backend = {"name": "local", "tier": "open", "kind": "embedded", "n_threads": 2, "n_ctx": N_CTX}
    config = parse_config({"backends": [backend], "router": {"kind": "rules"}, "ledger": {"url": ledger}})
    with serve_gateway(config) as url:
        yield url, ledger


def essay(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Continue this list of words forever: " + " ".join(["apple"] * words)}]


def test_claude_codes_max_tokens_is_clamped_to_the_context_and_ends_with_max_tokens(gateway: tuple[str, str]) -> None:
    base, _ = gateway
    body = {"model": "local", "max_tokens": 32000, "temperature": 0, "messages": essay(150)}
    resp = httpx.post(base + "/v1/messages", json=body, headers=AN_HEADERS, timeout=300)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] <= N_CTX
    if resp.json()["stop_reason"] == "max_tokens":  # the whole rest of the window was used
        assert usage["input_tokens"] + usage["output_tokens"] >= N_CTX - 2
    else:
        assert resp.json()["stop_reason"] == "end_turn"


def test_openai_max_tokens_beyond_the_context_ends_with_length(gateway: tuple[str, str]) -> None:
    base, _ = gateway
    body = {"model": "local", "max_tokens": 4096, "temperature": 0, "messages": essay(200)}
    resp = httpx.post(base + "/v1/chat/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= N_CTX
    assert resp.json()["choices"][0]["finish_reason"] in ("length", "stop")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_only_a_prompt_that_does_not_fit_is_a_400_that_says_so(gateway: tuple[str, str], path: str) -> None:
    base, _ = gateway
    body = {"model": "local", "max_tokens": 16, "messages": essay(400)}
    resp = httpx.post(base + path, json=body, headers=AN_HEADERS, timeout=300)
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert message.startswith("backend 'local': the prompt is ")
    assert message.endswith(f"tokens and the context window holds {N_CTX}; shorten the conversation")


def _stream_usage(base: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base + "/v1/chat/completions", json=payload, timeout=300) as resp:
        assert resp.status_code == 200
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
        return next(c["usage"] for c in chunks if c.get("usage")), resp.headers["x-request-id"]


def test_a_stream_counts_input_tokens_as_a_plain_answer_and_count_tokens_do(gateway: tuple[str, str]) -> None:
    base, ledger = gateway
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three colours."},
    ]
    body = {"model": "local", "max_tokens": 12, "temperature": 0, "messages": messages}
    plain = httpx.post(base + "/v1/chat/completions", json=body, timeout=300)
    assert plain.status_code == 200, plain.text
    streamed, stream_id = _stream_usage(base, body)
    assert streamed["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"] > 20  # the template is counted
    assert streamed["completion_tokens"] == plain.json()["usage"]["completion_tokens"]  # same greedy answer
    counted = httpx.post(
        base + "/v1/messages/count_tokens",
        json={"model": "local", "system": "You are terse.", "messages": messages[1:]},
        headers=AN_HEADERS,
        timeout=60,
    )
    assert counted.json() == {"input_tokens": streamed["prompt_tokens"]}
    rows = wait_rows(ledger, {plain.headers["x-request-id"], stream_id})
    assert {r.input_tokens for r in rows.values()} == {streamed["prompt_tokens"]}


def test_the_default_context_is_the_models_trained_one(tmp_path: Path) -> None:
    config = parse_config({"backends": [{"name": "local", "tier": "open", "kind": "embedded", "n_threads": 2}]})
    with serve_gateway(config) as base:
        engine = httpx.get(base + "/readyz", timeout=10).json()["backends"]["local"]["engine"]
        assert engine["n_ctx"] == engine["n_ctx_train"] == 8192


BAD_INPUTS: dict[str, dict[str, Any]] = {
    "lone surrogate": {"messages": [{"role": "user", "content": "hi \ud800 there"}]},
    "tool schema with no grammar": {
        "messages": [{"role": "user", "content": "Call it."}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "spin",
                    "parameters": {"type": "object", "properties": {"q": {"type": "quaternion"}}},
                },
            }
        ],
        "tool_choice": "required",
    },
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_input_the_engine_cannot_take_is_a_400_and_never_opens_the_circuit(gateway: tuple[str, str], case: str) -> None:
    base, _ = gateway
    body = {"model": "local", "max_tokens": 8, **BAD_INPUTS[case]}
    for _ in range(6):  # more than breaker_failures
        resp = httpx.post(base + "/v1/chat/completions", content=json.dumps(body), timeout=60,
                          headers={"content-type": "application/json"})  # fmt: skip
        assert resp.status_code == 400, resp.text
        assert "Error" not in resp.json()["error"]["message"]  # no exception class names
    ready = httpx.get(base + "/readyz", timeout=10).json()["backends"]["local"]
    assert ready["circuit"] == "closed"
    ok = httpx.post(base + "/v1/chat/completions", json={"model": "local", "max_tokens": 4, "messages": essay(2)})
    assert ok.status_code == 200


def test_a_forced_tool_call_cut_off_by_max_tokens_is_answered_like_claude(gateway: tuple[str, str]) -> None:
    """Not a 503 that SDKs retry: a 200 that says max_tokens ended it, as Claude answers."""
    base, _ = gateway
    long_args = {
        "type": "object",
        "properties": {"n": {"type": "array", "items": {"type": "integer"}, "minItems": 300}},
    }
    tool = {"name": "record", "description": "Record numbers.", "input_schema": {**long_args, "required": ["n"]}}
    body = {
        "model": "local",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Record the numbers 1 to 300."}],
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "record"},
    }
    for _ in range(2):
        resp = httpx.post(base + "/v1/messages", json=body, headers=AN_HEADERS, timeout=120)
        assert resp.status_code == 200, resp.text
        assert resp.json()["stop_reason"] == "max_tokens"
        assert [b["type"] for b in resp.json()["content"]] in (["text"], [])
    assert httpx.get(base + "/readyz", timeout=10).json()["backends"]["local"]["circuit"] == "closed"
