"""The official OpenAI SDK against the gateway, served by every backend kind (including Claude)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.fakes import FakeAnthropic

# The SDK types its parameters as TypedDicts; plain dicts are what applications actually pass.
AnyList = list[Any]


BACKENDS = ["local", "vllm", "claude"]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS: AnyList = [WEATHER]


@pytest.fixture
def client(full_gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=full_gateway + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_completion(client: openai.OpenAI, backend: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=backend,
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
    )
    resp = raw.parse()
    assert raw.headers["x-tiergate-backend"] == backend
    assert raw.headers["x-tiergate-tier"] == ("closed" if backend == "claude" else "open")
    assert raw.headers["x-tiergate-route"] == f"explicit:{backend}"
    assert float(raw.headers["x-tiergate-cost-usd"]) >= 0
    assert raw.headers["x-request-id"]
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.completion_tokens > 0
    assert resp.usage.prompt_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_with_usage(client: openai.OpenAI, backend: str) -> None:
    stream = client.chat.completions.create(
        model=backend,
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text
    assert finish in ("stop", "length")
    assert usage is not None
    assert usage.completion_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_tool_call_round_trip(client: openai.OpenAI, backend: str) -> None:
    messages: AnyList = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=backend,
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=40,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str)
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    second = client.chat.completions.create(model=backend, messages=messages, tools=TOOLS, max_tokens=12)
    assert second.choices[0].message.content
    assert second.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("backend", ["vllm", "claude"])
def test_streaming_tool_call(client: openai.OpenAI, backend: str) -> None:
    stream = client.chat.completions.create(
        model=backend,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                name += (tc.function.name or "") if tc.function else ""
                arguments += (tc.function.arguments or "") if tc.function else ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert "city" in json.loads(arguments)
    assert finish == "tool_calls"


def test_claude_receives_translated_request(client: openai.OpenAI, fake_claude: tuple[FakeAnthropic, str]) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    client.chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "ping"}],
        max_tokens=7,
        stop=["END"],
        user="alice",
    )
    body = fake.received[before].body
    assert body["system"] == "Be terse."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "ping"}]}]
    assert body["max_tokens"] == 7
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "alice"}


def test_json_response_format_on_embedded(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Give a JSON object with a key named colour."}],
        response_format={"type": "json_object"},
        max_tokens=24,
    )
    content = resp.choices[0].message.content or ""
    if resp.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: still the start of a JSON object, by grammar
        assert content.lstrip().startswith("{")


def test_models_lists_tiers_and_backends(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["auto", "open", "closed"]
    assert {"local", "vllm", "claude"} <= set(ids)
