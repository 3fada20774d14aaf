"""Across dialects, what has a translation is translated and only what has none is dropped, visibly: the response
names it in ``x-tiergate-dropped`` and the log says it; never a 400 that Claude would not give."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI, RecordedRequest
from tests.fakes.fake_anthropic import signature

HEADERS = {"anthropic-version": "2023-06-01"}
THOUGHT = "Lima is in Peru; the tool gives the weather."
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "cache_control": {"type": "ephemeral"},
}


def claude_code_turn(model: str) -> dict[str, Any]:
    """A later turn of an agent with extended thinking: thinking blocks replayed in the history."""
    return {
        "model": model,
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 40,
        "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Weather in Lima?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lima"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Foggy, 16 C"},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "Lima lies on the coast."},
                        "title": "Notes",
                    },
                    {"type": "text", "text": "Summarise.", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
    }


def sent_to(fake: FakeAnthropic | FakeOpenAI, before: int, path: str) -> RecordedRequest:
    (sent,) = [r for r in fake.received[before:] if r.path == path]
    return sent


@pytest.mark.parametrize("stream", [False, True])
def test_an_agent_turn_with_thinking_reaches_an_open_weight_backend(
    gateway: str, fake_openai: tuple[FakeOpenAI, str], stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    fake, _ = fake_openai
    before = len(fake.received)
    body = claude_code_turn("vllm") | {"stream": stream}
    with caplog.at_level(logging.INFO, logger="tiergate.requests"):
        resp = httpx.post(gateway + "/v1/messages", json=body, headers=HEADERS, timeout=30)
    assert resp.status_code == 200, resp.text
    dropped = "cache_control,redacted_thinking,thinking,tool:web_search"
    assert resp.headers["x-tiergate-dropped"] == dropped
    assert any(dropped in r.getMessage() and "vllm" in r.getMessage() for r in caplog.records)
    sent = sent_to(fake, before, "/v1/chat/completions").body
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert sent["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Lima"}'}
    assert sent["messages"][4]["content"].startswith("Notes\n\nLima lies on the coast.")  # the document, as text
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert (sent["top_k"], sent["parallel_tool_calls"]) == (40, False)


def test_the_same_turn_to_claude_drops_nothing(gateway: str, fake_claude: tuple[FakeAnthropic, str]) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    body = claude_code_turn("claude")
    resp = httpx.post(gateway + "/v1/messages", json=body, headers=HEADERS, timeout=30)
    assert resp.status_code == 200, resp.text
    assert "x-tiergate-dropped" not in resp.headers
    assert sent_to(fake, before, "/v1/messages").body == body | {"model": "claude-sonnet-4-5"}


def test_openai_callers_to_claude_get_translations_and_a_list_of_the_rest(
    gateway: str, fake_claude: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0)
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Lima?", "name": "ana"}],
        tools=[tool],
        parallel_tool_calls=False,
        seed=7,
        presence_penalty=0.5,
        max_tokens=64,
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-tiergate-dropped"] == "messages.name,presence_penalty,seed"
    sent = sent_to(fake, before, "/v1/messages").body
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "seed" not in sent
    assert "presence_penalty" not in sent


def test_thinking_history_reaches_the_embedded_model(full_gateway: str) -> None:
    """Replayed thinking blocks are dropped for the open tier, never an error, on the embedded model too."""
    client = anthropic.Anthropic(base_url=full_gateway, api_key="unused", max_retries=0, timeout=120)
    body = claude_code_turn("local")
    raw = client.messages.with_raw_response.create(
        model="local",
        max_tokens=8,
        system=body["system"],
        messages=body["messages"],
        tools=body["tools"],
        thinking=body["thinking"] | {"budget_tokens": 1024},
    )
    assert raw.parse().content
    assert "thinking" in raw.headers["x-tiergate-dropped"].split(",")
