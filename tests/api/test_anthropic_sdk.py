"""The official Anthropic SDK against the gateway, served by every backend kind (OpenAI-compatible included)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI

BACKENDS = ["local", "vllm", "claude"]
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS: list[Any] = [WEATHER]
ANY: Any = {"type": "any"}


@pytest.fixture
def client(full_gateway: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=full_gateway, api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_message(client: anthropic.Anthropic, backend: str) -> None:
    raw = client.messages.with_raw_response.create(
        model=backend,
        system=[{"type": "text", "text": "Answer briefly."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name a fruit."}]}],
        max_tokens=8,
    )
    msg = raw.parse()
    assert raw.headers["x-tiergate-backend"] == backend
    assert raw.headers["x-tiergate-tier"] == ("closed" if backend == "claude" else "open")
    assert msg.content[0].type == "text"
    assert msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.output_tokens > 0
    assert msg.usage.input_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_event_sequence(client: anthropic.Anthropic, backend: str) -> None:
    with client.messages.stream(
        model=backend, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds
    assert "content_block_stop" in kinds
    assert final.content[0].type == "text"
    assert final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_raw_stream_has_ping_after_first_block(full_gateway: str) -> None:
    body = {"model": "vllm", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream(
        "POST", full_gateway + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    ) as r:
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert set(events[3:-3]) == {"content_block_delta"}
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tool_use_round_trip(client: anthropic.Anthropic, backend: str) -> None:
    question: Any = {"role": "user", "content": "What is the weather in Lima?"}
    first = client.messages.create(
        model=backend,
        messages=[question],
        tools=TOOLS,
        tool_choice=ANY,
        max_tokens=40,
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert isinstance(call.input["city"], str)
    second = client.messages.create(
        model=backend,
        tools=TOOLS,
        max_tokens=12,
        messages=[  # the SDK types these as TypedDicts; applications pass plain dicts
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Foggy, 16 C"}]},
        ],
    )
    assert second.content[0].type == "text"
    assert second.content[0].text


@pytest.mark.parametrize("backend", ["vllm", "claude"])
def test_streaming_tool_use(client: anthropic.Anthropic, backend: str) -> None:
    with client.messages.stream(
        model=backend,
        messages=[{"role": "user", "content": "Weather in Quito?"}],
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=40,
    ) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert "city" in call.input
    assert final.stop_reason == "tool_use"


# Not the SDK's default (2023-06-01): only forwarding can bring this value to Claude.
VERSION = "2024-10-22"
BETA = "tools-2099-01-01,another-beta-2099-02-02"


@pytest.fixture
def versioned(full_gateway: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=full_gateway,
        api_key="unused",
        max_retries=0,
        default_headers={"anthropic-beta": BETA, "anthropic-version": VERSION},
    )


def _received_headers(fake: FakeAnthropic | FakeOpenAI, before: int, path: str) -> dict[str, str]:
    (request,) = [r for r in fake.received[before:] if r.path == path]
    return request.headers


def test_headers_forwarded_to_claude(versioned: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    versioned.messages.create(model="claude", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    seen = _received_headers(fake, before, "/v1/messages")
    assert seen["anthropic-beta"] == BETA
    assert seen["anthropic-version"] == VERSION
    # The backend's own key (the 2.x SDK sends it as a bearer token), never the caller's.
    assert "sk-ant-test" in seen.get("x-api-key", seen.get("authorization", ""))
    assert "unused" not in (seen.get("x-api-key", "") + seen.get("authorization", ""))


def test_headers_forwarded_to_claude_when_streaming(
    versioned: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    with versioned.messages.stream(
        model="claude", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    ) as stream:
        assert stream.get_final_message().content
    seen = _received_headers(fake, before, "/v1/messages")
    assert (seen["anthropic-version"], seen["anthropic-beta"]) == (VERSION, BETA)


def test_headers_forwarded_to_claude_when_counting_tokens(
    versioned: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    counted = versioned.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "count me!"}])
    seen = _received_headers(fake, before, "/v1/messages/count_tokens")
    assert (seen["anthropic-version"], seen["anthropic-beta"]) == (VERSION, BETA)
    # Claude's own count (the fake rounds 9 characters up to 3 tokens; the gateway's fallback would say 2).
    assert counted.input_tokens == 3


def test_headers_not_forwarded_to_an_openai_compatible_backend(
    versioned: anthropic.Anthropic, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    before = len(fake.received)
    versioned.messages.create(model="vllm", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    seen = _received_headers(fake, before, "/v1/chat/completions")
    assert "anthropic-version" not in seen
    assert "anthropic-beta" not in seen


def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(
        model="auto", system="You are terse.", messages=[{"role": "user", "content": "How many tokens is this?"}]
    )
    assert counted.input_tokens > 5
