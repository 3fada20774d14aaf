"""OpenAI Chat Completions parameters over HTTP: the official SDK calls the gateway, and each test asserts
what the fake upstream received (an OpenAI-compatible server, or Claude in its own terms)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI, RecordedRequest

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "hex": {"type": "string"}},
    "required": ["colour", "hex"],
    "additionalProperties": False,
}
JSON_SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "colour", "schema": SCHEMA, "strict": True}}


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0, timeout=30)


def sent_after(fake: FakeAnthropic | FakeOpenAI, before: int, path: str) -> RecordedRequest:
    (sent,) = [r for r in fake.received[before:] if r.path == path]
    return sent


def test_sampling_length_and_schema_reach_an_openai_compatible_backend(
    client: openai.OpenAI, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    before = len(fake.received)
    raw = client.chat.completions.with_raw_response.create(
        model="vllm",
        messages=[{"role": "user", "content": "Pick a colour."}],
        top_p=0.25,
        seed=1234,
        temperature=0.5,
        max_completion_tokens=9,
        response_format=JSON_SCHEMA,
    )
    resp = raw.parse()
    assert raw.headers["x-tiergate-backend"] == "vllm"
    body = sent_after(fake, before, "/v1/chat/completions").body
    assert (body["top_p"], body["seed"], body["temperature"]) == (0.25, 1234, 0.5)
    assert body["max_tokens"] == 9  # max_completion_tokens, as every OpenAI-compatible server reads it
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "colour", "schema": SCHEMA}}
    assert resp.choices[0].finish_reason == "length"  # the fake cut its reply at the 9 tokens it was given


def test_the_same_parameters_reach_the_backend_when_streaming(
    client: openai.OpenAI, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    before = len(fake.received)
    stream = client.chat.completions.create(
        model="vllm",
        messages=[{"role": "user", "content": "Pick a colour."}],
        top_p=0.75,
        seed=99,
        max_completion_tokens=5,
        response_format=JSON_SCHEMA,
        stream=True,
    )
    finish = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    body = sent_after(fake, before, "/v1/chat/completions").body
    assert (body["stream"], body["top_p"], body["seed"], body["max_tokens"]) == (True, 0.75, 99, 5)
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA


def test_claude_gets_what_it_understands(client: openai.OpenAI, fake_claude: tuple[FakeAnthropic, str]) -> None:
    """Claude takes top_p and max_tokens as they are; it has no seed and no JSON mode on this path, so the
    schema is asked for in the system prompt and the seed is not sent (the Messages API would refuse it)."""
    fake, _ = fake_claude
    before = len(fake.received)
    client.chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Pick a colour."}],
        top_p=0.25,
        seed=1234,
        max_completion_tokens=9,
        response_format=JSON_SCHEMA,
    )
    body = sent_after(fake, before, "/v1/messages").body
    assert (body["top_p"], body["max_tokens"]) == (0.25, 9)
    assert "seed" not in body
    assert body["system"].startswith("Be brief.\n\nAnswer with a single JSON object matching this JSON schema: ")
    assert json.dumps(SCHEMA) in body["system"]
