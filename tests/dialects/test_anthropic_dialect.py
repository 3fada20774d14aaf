"""Anthropic Messages features over HTTP: the official SDK calls the gateway, and each test asserts what the
fake upstream (Claude, or an OpenAI-compatible server) actually received."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI, RecordedRequest

# A 1x1 transparent PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
BASE64_IMAGE: dict[str, Any] = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
URL_IMAGE: dict[str, Any] = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}


@pytest.fixture
def client(gateway: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0, timeout=30)


def sent_after(fake: FakeAnthropic | FakeOpenAI, before: int, path: str) -> list[RecordedRequest]:
    return [r for r in fake.received[before:] if r.path == path]


def test_image_blocks_reach_claude_intact(client: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    content: Any = [BASE64_IMAGE, {"type": "text", "text": "What is in these pictures?"}, URL_IMAGE]
    msg = client.messages.create(model="claude", max_tokens=32, messages=[{"role": "user", "content": content}])
    assert msg.content[0].type == "text"
    (sent,) = sent_after(fake, before, "/v1/messages")
    assert sent.body["messages"] == [{"role": "user", "content": content}]


def test_image_blocks_reach_an_openai_compatible_backend_as_image_urls(
    client: anthropic.Anthropic, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    """Documented behaviour: the open tier's OpenAI-compatible servers get OpenAI's ``image_url`` parts (a
    vision model reads them; a text-only server's rejection comes back as a 400 naming the backend)."""
    fake, _ = fake_openai
    before = len(fake.received)
    content: Any = [BASE64_IMAGE, {"type": "text", "text": "Describe it."}, URL_IMAGE]
    raw = client.messages.with_raw_response.create(
        model="vllm", max_tokens=32, messages=[{"role": "user", "content": content}]
    )
    assert raw.headers["x-tiergate-backend"] == "vllm"
    (sent,) = sent_after(fake, before, "/v1/chat/completions")
    assert sent.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "Describe it."},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]


def test_metadata_user_id_reaches_claude_and_tiergate_keys_never_do(
    client: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    metadata: Any = {"user_id": "user-4711", "tiergate_sovereign": False, "team": "billing"}
    raw = client.messages.with_raw_response.create(
        model="claude", max_tokens=16, metadata=metadata, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-tiergate-backend"] == "claude"
    (sent,) = sent_after(fake, before, "/v1/messages")
    assert sent.body["metadata"] == {"user_id": "user-4711"}
    assert b"tiergate_sovereign" not in sent.raw


def test_sovereign_metadata_keeps_the_request_inside_and_is_not_forwarded(
    client: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    claude, vllm = fake_claude[0], fake_openai[0]
    claude_before, vllm_before = len(claude.received), len(vllm.received)
    metadata: Any = {"user_id": "user-7", "tiergate_sovereign": True}
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=16, metadata=metadata, messages=[{"role": "user", "content": "Summarise our plan."}]
    )
    assert raw.headers["x-tiergate-tier"] == "open"
    assert raw.headers["x-tiergate-route"].startswith("policy:sovereign:metadata;")
    assert sent_after(claude, claude_before, "/v1/messages") == []
    (sent,) = sent_after(vllm, vllm_before, "/v1/chat/completions")
    assert sent.body["user"] == "user-7"  # the caller's user id, as OpenAI's ``user``
    assert b"tiergate_sovereign" not in sent.raw
    assert "metadata" not in sent.body


def test_stop_sequences_reach_claude(client: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    msg = client.messages.create(
        model="claude", max_tokens=64, stop_sequences=["fake", "never"], messages=[{"role": "user", "content": "hi"}]
    )
    (sent,) = sent_after(fake, before, "/v1/messages")
    assert sent.body["stop_sequences"] == ["fake", "never"]
    # The fake stops like the real API, and the gateway hands Claude's stop back unchanged.
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "fake")
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from "


def test_stop_sequences_reach_claude_when_streaming(
    client: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    with client.messages.stream(
        model="claude", max_tokens=64, stop_sequences=["fake"], messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    (sent,) = sent_after(fake, before, "/v1/messages")
    assert (sent.body["stream"], sent.body["stop_sequences"]) == (True, ["fake"])
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "fake")


def test_stop_sequences_reach_an_openai_compatible_backend(
    client: anthropic.Anthropic, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    before = len(fake.received)
    msg = client.messages.create(
        model="vllm", max_tokens=64, stop_sequences=["LLM"], messages=[{"role": "user", "content": "hi"}]
    )
    (sent,) = sent_after(fake, before, "/v1/chat/completions")
    assert sent.body["stop"] == ["LLM"]
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from fake "  # cut where the server matched the stop
    # OpenAI's finish_reason "stop" does not say whether a stop sequence matched; vLLM's stop_reason does.
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "LLM")


def test_a_sovereign_prompt_is_never_counted_by_claude(
    client: anthropic.Anthropic, fake_claude: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = fake_claude
    before = len(fake.received)
    prompt: Any = [{"role": "user", "content": "count me!"}]
    counted = client.messages.count_tokens(model="auto", messages=prompt)
    assert len(sent_after(fake, before, "/v1/messages/count_tokens")) == 1
    assert counted.input_tokens == 3  # Claude's count: the fake rounds 9 characters up
    before = len(fake.received)
    held = client.messages.count_tokens(model="auto", messages=prompt, extra_headers={"x-tiergate-sovereign": "true"})
    assert sent_after(fake, before, "/v1/messages/count_tokens") == []  # the prompt never left the perimeter
    assert held.input_tokens == 3  # no in-perimeter counter here: the gateway's estimate, 9 characters rounded up
