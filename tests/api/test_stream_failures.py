"""A stream that fails after bytes reached the client must never look complete."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fakes import CutStream, MalformedStream, StreamError, script_marker
from tests.fakes.script import Step

CASES = [CutStream(after_events=4), StreamError(after_events=4), MalformedStream()]


def _body(model: str, step: Step, dialect: str) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a story " + script_marker(step)}],
    }
    if dialect == "anthropic":
        body["max_tokens"] = 50
    return body


@pytest.mark.parametrize("backend", ["vllm", "claude"])
@pytest.mark.parametrize("step", CASES, ids=lambda s: type(s).__name__)
def test_openai_dialect_stream_failure_is_explicit(fast_gateway: str, backend: str, step: Step) -> None:
    with httpx.stream("POST", fast_gateway + "/v1/chat/completions", json=_body(backend, step, "openai")) as resp:
        status = resp.status_code
        text = resp.read().decode()
    if status != 200:  # failed before the first byte: a clean error response instead
        assert json.loads(text)["error"]["message"].startswith(f"backend '{backend}'")
        return
    lines = [line for line in text.splitlines() if line.startswith("data: ")]
    assert "data: [DONE]" not in lines
    chunks = [json.loads(line[6:]) for line in lines]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert "stop" not in finishes
    assert "error" in chunks[-1]
    assert backend in chunks[-1]["error"]["message"]


@pytest.mark.parametrize("backend", ["vllm", "claude"])
@pytest.mark.parametrize("step", CASES, ids=lambda s: type(s).__name__)
def test_anthropic_dialect_stream_failure_is_explicit(fast_gateway: str, backend: str, step: Step) -> None:
    headers = {"anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", fast_gateway + "/v1/messages", json=_body(backend, step, "anthropic"), headers=headers
    ) as resp:
        status = resp.status_code
        text = resp.read().decode()
    if status != 200:
        assert json.loads(text)["type"] == "error"
        return
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert "message_stop" not in events
    assert events[-1] == "error"
