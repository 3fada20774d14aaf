"""A non-streaming request gathered from a stream (``complete_by_stream``, so the first-token budget applies) answers
exactly as the same request asked whole: text, tool calls and their arguments, stop reason and sequence, usage, log
probabilities, in both dialects. Each fake upstream sits behind two backends, one gathering (the default of its kind)
and one asking whole (``complete_by_stream: false``), and the same request is sent to each by name."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import CLAUDE_KEY_ENV, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.servers import serve_app
from tiergate.config import parse_config

OA = "/v1/chat/completions"
AN = "/v1/messages"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    vllm, claude = FakeOpenAI(models=["m"], stream_chunks=5), FakeAnthropic(api_key="sk-ant-test", stream_chunks=5)
    with serve_app(vllm) as v_url, serve_app(claude) as c_url:
        backends: list[dict[str, Any]] = []
        for suffix, gathers in (("", None), ("-whole", False)):
            backends.append(
                {"name": f"vllm{suffix}", "tier": "open", "kind": "openai", "base_url": v_url + "/v1", "model": "m"}
            )
            backends.append(
                {"name": f"claude{suffix}", "tier": "closed", "kind": "anthropic", "base_url": c_url}
                | {"model": "claude-sonnet-4-5", "api_key_env": CLAUDE_KEY_ENV}
            )
            if gathers is not None:
                backends[-2]["complete_by_stream"] = backends[-1]["complete_by_stream"] = gathers
        os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
        with serve_gateway(parse_config({"backends": backends, "router": {"kind": "rules"}})) as url:
            yield {"url": url, "vllm": vllm, "claude": claude}


@pytest.fixture
def w(world: dict[str, Any]) -> dict[str, Any]:
    for fake in (world["vllm"], world["claude"]):
        fake.reset()
    return world


def _openai(url: str, backend: str, **extra: Any) -> dict[str, Any]:
    body = {"model": backend, "messages": [{"role": "user", "content": "Tell me about the sea."}], **extra}
    resp = httpx.post(url + OA, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def _anthropic(url: str, backend: str, **extra: Any) -> dict[str, Any]:
    body = {"model": backend, "max_tokens": 200, "messages": [{"role": "user", "content": "Tell me about the sea."}]}
    resp = httpx.post(url + AN, json=body | extra, headers={"anthropic-version": "2023-06-01"}, timeout=30)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what differs between any two answers (ids, the time, tool call ids)."""
    out = copy.deepcopy(answer)
    for key in ("id", "created"):
        out.pop(key, None)
    for choice in out.get("choices", []):
        for call in choice["message"].get("tool_calls") or []:
            call["id"] = "call"
    for block in out.get("content", []):
        if block.get("type") == "tool_use":
            block["id"] = "toolu"
    return out


def _asked_as_stream(fake: FakeOpenAI | FakeAnthropic) -> list[bool]:
    return [bool(r.body.get("stream")) for r in fake.received if r.path.endswith(("/chat/completions", "/messages"))]


OPENAI_CASES: dict[str, dict[str, Any]] = {
    "text": {},
    "stop sequence": {"stop": [" about"]},
    "cut by max_tokens": {"max_tokens": 3},
    "tool call": {"tools": [{"type": "function", "function": WEATHER}], "tool_choice": "required"},
}


@pytest.mark.parametrize("backend", ["vllm", "claude"])
@pytest.mark.parametrize("case", list(OPENAI_CASES))
def test_an_openai_answer_gathered_from_a_stream_is_the_whole_answer(
    w: dict[str, Any], backend: str, case: str
) -> None:
    extra = OPENAI_CASES[case]
    gathered = _openai(w["url"], backend, **extra)
    whole = _openai(w["url"], f"{backend}-whole", **extra)
    assert _comparable(gathered) == _comparable(whole)
    assert _asked_as_stream(w[backend]) == [True, False]
    message = gathered["choices"][0]["message"]
    if case == "tool call":
        assert gathered["choices"][0]["finish_reason"] == "tool_calls"
        assert message["tool_calls"][0]["function"]["name"] == "get_weather"
        assert (
            message["tool_calls"][0]["function"]["arguments"]
            == whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        )
    else:
        assert message["content"]
    assert gathered["usage"]["completion_tokens"] > 0
    assert gathered["model"] == ("m" if backend == "vllm" else "claude-sonnet-4-5")


def test_logprobs_gathered_from_a_stream_are_those_of_the_whole_answer(w: dict[str, Any]) -> None:
    gathered = _openai(w["url"], "vllm", logprobs=True, top_logprobs=2)
    whole = _openai(w["url"], "vllm-whole", logprobs=True, top_logprobs=2)
    assert _comparable(gathered) == _comparable(whole)
    entries = gathered["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == gathered["choices"][0]["message"]["content"]
    assert all(len(e["top_logprobs"]) == 2 for e in entries)


ANTHROPIC_CASES: dict[str, dict[str, Any]] = {
    "text": {},
    "stop sequence": {"stop_sequences": [" about"]},
    "tool call": {
        "tools": [
            {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
        ],
        "tool_choice": {"type": "any"},
    },
}


@pytest.mark.parametrize("case", list(ANTHROPIC_CASES))
def test_an_anthropic_answer_gathered_from_an_openai_compatible_stream_is_the_whole_answer(
    w: dict[str, Any], case: str
) -> None:
    extra = ANTHROPIC_CASES[case]
    gathered = _anthropic(w["url"], "vllm", **extra)
    whole = _anthropic(w["url"], "vllm-whole", **extra)
    assert _comparable(gathered) == _comparable(whole)
    assert _asked_as_stream(w["vllm"]) == [True, False]
    if case == "stop sequence":
        assert (gathered["stop_reason"], gathered["stop_sequence"]) == ("stop_sequence", " about")
    if case == "tool call":
        assert gathered["content"][-1]["input"] == {"city": "x", "days": 1}


@pytest.mark.parametrize("case", list(ANTHROPIC_CASES))
def test_claude_given_the_callers_own_body_is_asked_whole(w: dict[str, Any], case: str) -> None:
    """Anthropic in, Claude out: the message comes back as Claude sent it, so it is asked for whole (a message
    gathered from Claude's stream could not be promised to be that message), on either backend."""
    extra = ANTHROPIC_CASES[case]
    answers = [_anthropic(w["url"], name, **extra) for name in ("claude", "claude-whole")]
    assert _asked_as_stream(w["claude"]) == [False, False]
    assert _comparable(answers[0]) == _comparable(answers[1])
