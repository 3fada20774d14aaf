"""A stop sequence that ended the answer is reported as Claude reports it, whichever backend answered; OpenAI's
``logprobs`` are returned by backends that can, and asked of one that cannot, a 400 that says so."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

HI: Any = [{"role": "user", "content": "Say something about your day."}]


def anthropic_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120)


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.mark.parametrize("backend", ["vllm", "claude"])
def test_stop_sequence_is_reported(gateway: str, backend: str) -> None:
    """Both fakes answer "Hello from fake ...": the stop sequence " from" ends it after "Hello"."""
    client = anthropic_client(gateway)
    msg = client.messages.create(model=backend, max_tokens=64, stop_sequences=["zzz", " from"], messages=HI)
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", " from")
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello"
    with client.messages.stream(model=backend, max_tokens=64, stop_sequences=[" from"], messages=HI) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", " from")


def test_an_answer_that_ends_on_its_own_has_no_stop_sequence(gateway: str) -> None:
    msg = anthropic_client(gateway).messages.create(model="vllm", max_tokens=64, stop_sequences=["zzz"], messages=HI)
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)


@pytest.mark.parametrize("stream", [False, True])
def test_the_embedded_model_reports_its_stop_sequence(full_gateway: str, stream: bool) -> None:
    """Any English answer holds an "e": the answer is what came before it."""
    client = anthropic_client(full_gateway)
    msg: anthropic.types.Message
    if stream:
        with client.messages.stream(model="local", max_tokens=64, stop_sequences=["e"], messages=HI) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(model="local", max_tokens=64, stop_sequences=["e"], messages=HI)
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "e")
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert "e" not in text


def test_logprobs_from_an_openai_compatible_backend(gateway: str) -> None:
    resp = openai_client(gateway).chat.completions.create(
        model="vllm", messages=HI, logprobs=True, top_logprobs=2, max_tokens=64
    )
    choice = resp.choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)


def test_logprobs_stream(gateway: str) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model="vllm", messages=HI, logprobs=True, max_tokens=64, stream=True
    )
    text, tokens = "", ""
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.logprobs is not None and choice.logprobs.content:
                tokens += "".join(t.token for t in choice.logprobs.content)
    assert text
    assert tokens == text


@pytest.mark.parametrize("model", ["claude", "closed", "claude-sonnet-4-6"])
def test_logprobs_asked_of_claude_is_a_400_that_says_so(gateway: str, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gateway).chat.completions.create(model=model, messages=HI, logprobs=True, max_tokens=8)
    assert err.value.param == "logprobs"
    assert "claude cannot return log probabilities" in err.value.message


def test_the_embedded_model_cannot_return_logprobs(full_gateway: str) -> None:
    with pytest.raises(openai.BadRequestError, match="local cannot return log probabilities"):
        openai_client(full_gateway).chat.completions.create(model="local", messages=HI, logprobs=True, max_tokens=8)


def test_top_logprobs_without_logprobs_is_a_400(gateway: str) -> None:
    with pytest.raises(openai.BadRequestError, match="top_logprobs: requires logprobs"):
        openai_client(gateway).chat.completions.create(model="vllm", messages=HI, top_logprobs=2, max_tokens=8)
