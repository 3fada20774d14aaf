"""The fake upstreams, driven over loopback by the real official SDKs (and raw httpx for the wire)."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes import (
    ContextLength,
    CutStream,
    Delay,
    FakeAnthropic,
    FakeOpenAI,
    Fault,
    Hang,
    MalformedStream,
    Refusal,
    Reply,
    StallStream,
    Step,
    StreamError,
    script_header,
    script_marker,
    step_from_json,
    step_to_json,
)
from tests.support.servers import serve_app

MODEL = "claude-test-1"
# typed Any: the SDKs' TypedDict parameters are not what these tests are about
HI: Any = [{"role": "user", "content": "Hi there, fake. Please say something nice."}]
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "verbose": {"type": "boolean"},
            "note": {"type": "string"},
        },
        "required": ["city", "days", "unit", "verbose"],
    },
}
OTHER_TOOL: Any = {
    "name": "lookup",
    "description": "d",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def drain(lines: Iterator[str], into: list[str]) -> None:
    for line in lines:
        into.append(line)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """``(event name, data)`` pairs of an SSE body."""
    out: list[tuple[str | None, str]] = []
    for block in text.strip().split("\n\n"):
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        out.append((name, "\n".join(data)))
    return out


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    with serve_app(fake) as base_url:
        yield fake, base_url


@pytest.fixture
def fa(anthropic_server: tuple[FakeAnthropic, str]) -> Iterator[FakeAnthropic]:
    fake = anthropic_server[0]
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def a_url(anthropic_server: tuple[FakeAnthropic, str]) -> str:
    return anthropic_server[1]


def a_client(url: str, key: str = "k") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=10)


def o_client(url: str, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)


@pytest.fixture
def ac(a_url: str) -> Iterator[anthropic.Anthropic]:
    with a_client(a_url) as client:
        yield client


@pytest.fixture(scope="module")
def openai_server() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with serve_app(fake) as base_url:
        yield fake, base_url


@pytest.fixture
def fo(openai_server: tuple[FakeOpenAI, str]) -> Iterator[FakeOpenAI]:
    fake = openai_server[0]
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def o_url(openai_server: tuple[FakeOpenAI, str]) -> str:
    return openai_server[1]


@pytest.fixture
def oc(o_url: str) -> Iterator[openai.OpenAI]:
    with o_client(o_url) as client:
        yield client


def create(ac: anthropic.Anthropic, **kw: Any) -> Any:
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": HI, **kw}
    return ac.messages.create(**args)


def chat(oc: openai.OpenAI, **kw: Any) -> Any:
    args: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], **kw}
    return oc.chat.completions.create(**args)


# ================================================================================== Anthropic


class TestAnthropicReplies:
    def test_non_streaming_default_reply(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        raw = ac.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=HI)
        assert raw.headers["request-id"].startswith("req_")
        msg = raw.parse()
        assert msg.id.startswith("msg_")
        assert msg.type == "message"
        assert msg.role == "assistant"
        assert msg.model == MODEL
        assert msg.stop_reason == "end_turn"
        assert msg.stop_sequence is None
        assert len(msg.content) == 1
        assert msg.content[0].type == "text"
        assert msg.content[0].text == "Hello from fake Claude. You said: Hi there, fake. Please say something nic"
        assert msg.usage.input_tokens > 0
        assert msg.usage.output_tokens > 0
        assert msg.usage.cache_creation_input_tokens == 0
        assert msg.usage.cache_read_input_tokens == 0

    def test_wire_event_sequence(self, fa: FakeAnthropic, a_url: str, ac: anthropic.Anthropic) -> None:
        body = {"model": MODEL, "max_tokens": 256, "stream": True, "messages": HI}
        r = httpx.post(a_url + "/v1/messages", headers=ANTHROPIC_HEADERS, json=body)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["request-id"].startswith("req_")
        events = sse_events(r.text)
        names = [n for n, _ in events]
        assert names[:3] == ["message_start", "content_block_start", "ping"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(names[3:-3]) == {"content_block_delta"}
        assert len(names[3:-3]) >= 3
        for name, data in events:
            assert json.loads(data)["type"] == name
        start = json.loads(events[0][1])["message"]
        assert start["content"] == []
        assert start["stop_reason"] is None
        assert start["usage"]["output_tokens"] == 1
        assert start["usage"]["input_tokens"] > 0
        delta = json.loads(events[-2][1])
        assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
        assert delta["usage"]["output_tokens"] > 1
        text = "".join(json.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta")
        assert text == create(ac).content[0].text

    def test_sdk_stream_helper(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        with ac.messages.stream(model=MODEL, max_tokens=256, messages=HI) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        assert len(pieces) >= 3
        assert final.content[0].type == "text"
        assert "".join(pieces) == final.content[0].text == create(ac).content[0].text
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens > 1

    def test_reply_text_and_chunks_are_configurable(self) -> None:
        fake = FakeAnthropic(reply_text="one two three four five six", stream_chunks=3)
        with (
            serve_app(fake) as url,
            a_client(url) as client,
            client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream,
        ):
            assert list(stream.text_stream) == ["one two ", "three four ", "five six"]

    @pytest.mark.parametrize("stream", [False, True])
    def test_forced_tool_use(self, fa: FakeAnthropic, ac: anthropic.Anthropic, stream: bool) -> None:
        kw: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 256,
            "messages": HI,
            "tools": [OTHER_TOOL, WEATHER_TOOL],
            "tool_choice": {"type": "tool", "name": "get_weather"},
        }
        if stream:
            with ac.messages.stream(**kw) as s:
                msg = s.get_final_message()
        else:
            msg = ac.messages.create(**kw)
        assert msg.stop_reason == "tool_use"
        block = msg.content[0]
        assert block.type == "tool_use"
        assert block.id.startswith("toolu_")
        assert block.name == "get_weather"
        assert block.input == {"city": "x", "days": 1, "unit": "celsius", "verbose": True}

    def test_tool_choice_any_uses_first_tool_and_streams_json_in_chunks(self, fa: FakeAnthropic, a_url: str) -> None:
        body = {
            "model": MODEL,
            "max_tokens": 256,
            "stream": True,
            "messages": HI,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "any"},
        }
        events = sse_events(httpx.post(a_url + "/v1/messages", headers=ANTHROPIC_HEADERS, json=body).text)
        start = json.loads(events[1][1])["content_block"]
        assert start["type"] == "tool_use"
        assert start["name"] == "get_weather"
        assert start["input"] == {}
        parts = [json.loads(d)["delta"] for n, d in events if n == "content_block_delta"]
        assert all(p["type"] == "input_json_delta" for p in parts)
        assert len([p for p in parts if p["partial_json"]]) >= 2
        assert json.loads("".join(p["partial_json"] for p in parts))["city"] == "x"

    def test_auto_tool_choice_answers_with_text(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        msg = create(ac, tools=[WEATHER_TOOL])
        assert msg.content[0].type == "text"
        assert msg.stop_reason == "end_turn"

    def test_tool_result_is_acknowledged(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        messages = [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "sunny, 21C"}],
                    }
                ],
            },
        ]
        msg = create(ac, messages=messages, tools=[WEATHER_TOOL])
        assert msg.content[0].type == "text"
        assert "sunny, 21C" in msg.content[0].text

    def test_max_tokens_and_stop_sequences(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        short = create(ac, max_tokens=3)
        assert short.stop_reason == "max_tokens"
        assert short.content[0].text == "Hello from f"
        stopped = create(ac, stop_sequences=["fake", "said"])
        assert stopped.stop_reason == "stop_sequence"
        assert stopped.stop_sequence == "fake"
        assert stopped.content[0].text == "Hello from "

    def test_count_tokens(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(Reply(text="kept"))  # count_tokens does not consume the queue
        count = ac.messages.count_tokens(model=MODEL, messages=HI, system="be brief")
        assert count.input_tokens > ac.messages.count_tokens(model=MODEL, messages=HI).input_tokens
        assert fa.pending_steps == 1
        assert create(ac, system="be brief").usage.input_tokens == count.input_tokens

    def test_scripted_reply_and_refusal(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(
            Reply(
                text="scripted",
                tool_use=[{"name": "lookup", "input": {"q": "a"}}],
                usage={"cache_read_input_tokens": 7},
            ),
            Refusal(),
        )
        msg = create(ac)
        assert [b.type for b in msg.content] == ["text", "tool_use"]
        assert msg.content[0].text == "scripted"
        assert msg.stop_reason == "tool_use"
        assert msg.usage.cache_read_input_tokens == 7
        with ac.messages.stream(model=MODEL, max_tokens=50, messages=HI) as s:
            refused = s.get_final_message()
        assert refused.stop_reason == "refusal"

    def test_context_window(self) -> None:
        fake = FakeAnthropic(context_window=10)
        with serve_app(fake) as url, a_client(url) as client:
            with pytest.raises(anthropic.BadRequestError, match=r"prompt is too long: .* > 10 maximum"):
                client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x" * 100}])
            assert client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])


class TestAnthropicValidation:
    def post(self, url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(url + "/v1/messages", headers=ANTHROPIC_HEADERS if headers is None else headers, json=body)

    def test_headers_are_required(self, fa: FakeAnthropic, a_url: str) -> None:
        body = {"model": MODEL, "max_tokens": 5, "messages": HI}
        r = self.post(a_url, body, {"anthropic-version": "2023-06-01"})
        assert r.status_code == 401
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "authentication_error"
        r = self.post(a_url, body, {"x-api-key": "k"})
        assert r.status_code == 400
        assert "anthropic-version" in r.json()["error"]["message"]
        assert self.post(a_url, body, {"authorization": "Bearer k", "anthropic-version": "v"}).status_code == 200

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"max_tokens": 5, "messages": HI}, "model: Field required"),
            ({"model": MODEL, "messages": HI}, "max_tokens: Field required"),
            ({"model": MODEL, "max_tokens": 0, "messages": HI}, "max_tokens: Input should be greater"),
            ({"model": MODEL, "max_tokens": "5", "messages": HI}, "max_tokens: Input should be a valid integer"),
            ({"model": MODEL, "max_tokens": 5, "messages": []}, "at least one message"),
            ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
            ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "top-level `system`"),
            ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
            ({"model": MODEL, "max_tokens": 5, "messages": HI, "temperature": 3}, "temperature"),
            ([1, 2], "parsing the body"),
        ],
    )
    def test_invalid_bodies(self, fa: FakeAnthropic, a_url: str, body: Any, message: str) -> None:
        fa.script(Reply(text="kept"))  # a rejected request does not consume a step
        r = self.post(a_url, body)
        assert r.status_code == 400
        assert r.json()["error"] == {"type": "invalid_request_error", "message": r.json()["error"]["message"]}
        assert message in r.json()["error"]["message"]
        assert r.headers["request-id"] == r.json()["request_id"]
        assert fa.pending_steps == 1
        assert fa.stats == {"rejected": 1}

    def test_sdk_sees_bad_request(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        with pytest.raises(anthropic.BadRequestError):
            ac.messages.create(model=MODEL, max_tokens=5, messages=[])

    def test_specific_key(self) -> None:
        fake = FakeAnthropic(api_key="secret")
        with serve_app(fake) as url, a_client(url, "wrong") as bad, a_client(url, "secret") as good:
            with pytest.raises(anthropic.AuthenticationError) as err:
                create(bad)
            assert err.value.status_code == 401
            assert create(good).content
            r = httpx.post(
                url + "/v1/messages",
                json={"model": MODEL, "max_tokens": 5, "messages": HI},
                headers={"x-api-key": "secret", "anthropic-version": "2023-06-01"},
            )
            assert r.status_code == 200

    def test_unknown_path_and_size_limit(self) -> None:
        fake = FakeAnthropic(max_body_bytes=100)
        with serve_app(fake) as url:
            r = httpx.post(url + "/v1/nope", headers=ANTHROPIC_HEADERS, json={})
            assert r.status_code == 404
            assert r.json()["error"]["type"] == "not_found_error"
            r = httpx.post(
                url + "/v1/messages",
                headers=ANTHROPIC_HEADERS,
                json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 200}]},
            )
            assert r.status_code == 413
            assert r.json()["error"]["type"] == "request_too_large"


class TestAnthropicFaults:
    @pytest.mark.parametrize(
        ("status", "exc", "error_type"),
        [
            (400, anthropic.BadRequestError, "invalid_request_error"),
            (401, anthropic.AuthenticationError, "authentication_error"),
            (403, anthropic.PermissionDeniedError, "permission_error"),
            (404, anthropic.NotFoundError, "not_found_error"),
            (413, anthropic.APIStatusError, "request_too_large"),
            (429, anthropic.RateLimitError, "rate_limit_error"),
            (500, anthropic.InternalServerError, "api_error"),
            (529, anthropic.InternalServerError, "overloaded_error"),
        ],
    )
    @pytest.mark.parametrize("stream", [False, True])
    def test_fault_maps_to_sdk_exception(
        self,
        fa: FakeAnthropic,
        ac: anthropic.Anthropic,
        status: int,
        exc: type[anthropic.APIStatusError],
        error_type: str,
        stream: bool,
    ) -> None:
        fa.script(Fault(status))
        with pytest.raises(exc) as err:
            create(ac, stream=stream)
        assert err.value.status_code == status
        assert isinstance(err.value.body, dict)
        assert err.value.body["type"] == "error"
        assert err.value.body["error"]["type"] == error_type
        assert err.value.response.headers["request-id"].startswith("req_")
        assert fa.stats == {"fault": 1}

    def test_rate_limit_retry_after_and_custom_message(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(Fault(429, "rate_limit_error", "slow down", retry_after=2, headers={"x-should-retry": "false"}))
        with pytest.raises(anthropic.RateLimitError, match="slow down") as err:
            create(ac)
        assert err.value.response.headers["retry-after"] == "2"
        assert err.value.response.headers["x-should-retry"] == "false"

    def test_context_length(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(ContextLength())
        with pytest.raises(anthropic.BadRequestError, match=r"prompt is too long: 250000 tokens > 200000 maximum"):
            create(ac)

    def test_cut_stream_is_a_broken_stream_not_a_clean_end(self, fa: FakeAnthropic, a_url: str) -> None:
        fa.script(CutStream(after_events=3))
        body = {"model": MODEL, "max_tokens": 256, "stream": True, "messages": HI}
        seen: list[str] = []
        with httpx.stream("POST", a_url + "/v1/messages", headers=ANTHROPIC_HEADERS, json=body) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                drain(r.iter_lines(), seen)
        assert "event: message_start" in seen
        assert "event: message_stop" not in seen
        assert fa.stats == {"cut_stream": 1}

    def test_cut_stream_through_the_sdk(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(CutStream(after_events=4), CutStream())
        # the 2.x SDK lets its transport's (an httpx fork's) RemoteProtocolError through while streaming
        with (
            pytest.raises(Exception, match=r"peer closed connection|incomplete chunked read|Connection error"),
            ac.messages.stream(model=MODEL, max_tokens=256, messages=HI) as s,
        ):
            s.get_final_message()
        with pytest.raises(anthropic.APIConnectionError):  # non-streaming: the body is cut short
            create(ac)

    def test_cut_stream_is_not_logged_as_a_crash(self, fa: FakeAnthropic, a_url: str) -> None:
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[assignment,method-assign]
        logger = logging.getLogger("uvicorn.error")
        logger.addHandler(handler)
        try:
            fa.script(CutStream(1))
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.post(
                    a_url + "/v1/messages",
                    headers=ANTHROPIC_HEADERS,
                    json={"model": MODEL, "max_tokens": 9, "stream": True, "messages": HI},
                )
            time.sleep(0.05)
        finally:
            logger.removeHandler(handler)
        assert not [r for r in records if "Exception in ASGI" in r.getMessage()]

    def test_stall_stream(self, fa: FakeAnthropic, a_url: str) -> None:
        fa.script(StallStream(after_events=2, seconds=0.4))
        body = {"model": MODEL, "max_tokens": 256, "stream": True, "messages": HI}
        stamps: list[tuple[float, str]] = []
        with httpx.stream("POST", a_url + "/v1/messages", headers=ANTHROPIC_HEADERS, json=body) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    stamps.append((time.monotonic(), line[7:]))
        names = [n for _, n in stamps]
        assert names[-1] == "message_stop"  # it finishes after the stall
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
        assert gaps[1] >= 0.3
        assert max(gaps[:1] + gaps[2:]) < 0.3

    def test_malformed_stream(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(MalformedStream(), MalformedStream())
        with pytest.raises(json.JSONDecodeError), ac.messages.stream(model=MODEL, max_tokens=256, messages=HI) as s:
            s.get_final_message()
        with pytest.raises(json.JSONDecodeError):  # non-streaming: a truncated JSON document
            create(ac)

    def test_stream_error_event(self, fa: FakeAnthropic, ac: anthropic.Anthropic, a_url: str) -> None:
        fa.script(StreamError(after_events=3), StreamError(), StreamError())
        with (
            pytest.raises(anthropic.APIStatusError, match="Overloaded"),
            ac.messages.stream(model=MODEL, max_tokens=256, messages=HI) as s,
        ):
            s.get_final_message()
        with pytest.raises(anthropic.InternalServerError) as err:
            create(ac)
        assert err.value.status_code == 529
        events = sse_events(
            httpx.post(
                a_url + "/v1/messages",
                headers=ANTHROPIC_HEADERS,
                json={"model": MODEL, "max_tokens": 9, "stream": True, "messages": HI},
            ).text
        )
        assert events[-1][0] == "error"
        assert json.loads(events[-1][1]) == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }

    def test_delay_then_reply(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(Delay(0.3, then=Reply(text="late")))
        started = time.monotonic()
        msg = create(ac)
        assert time.monotonic() - started >= 0.3
        assert msg.content[0].text == "late"
        assert fa.stats == {"delayed": 1, "ok": 1}

    def test_hang_until_client_gives_up_without_blocking_others(
        self, fa: FakeAnthropic, a_url: str, ac: anthropic.Anthropic
    ) -> None:
        fa.script(Hang())
        impatient = ac.with_options(timeout=1.0)
        with ThreadPoolExecutor(1) as pool:
            hung = pool.submit(create, impatient)
            fa.wait_for_requests(1)
            assert create(ac).content  # the server still answers others meanwhile
            assert not hung.done()
            with pytest.raises(anthropic.APITimeoutError):
                hung.result(timeout=5)
        assert fa.stats["hang"] == 1

    def test_hang_release(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(Hang())
        with ThreadPoolExecutor(1) as pool:
            hung = pool.submit(create, ac)
            fa.wait_for_requests(1)
            time.sleep(0.1)
            assert not hung.done()
            fa.release()
            assert hung.result(timeout=5).content[0].type == "text"


class TestAnthropicScripting:
    def test_queue_is_fifo_then_default(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(Reply(text="one"), None, Fault(500))
        fa.script(Reply(text="three"))
        assert create(ac).content[0].text == "one"
        assert create(ac).content[0].text.startswith("Hello from fake Claude")
        with pytest.raises(anthropic.InternalServerError):
            create(ac)
        assert create(ac).content[0].text == "three"
        assert create(ac).content[0].text.startswith("Hello")

    def test_header_script_wins_over_the_queue(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.script(Reply(text="queued"))
        with pytest.raises(anthropic.InternalServerError) as err:
            create(ac, extra_headers=script_header(Fault(529)))
        assert err.value.status_code == 529
        assert create(ac, extra_headers=script_header(Reply(text="from header"))).content[0].text == "from header"
        assert fa.pending_steps == 1
        assert create(ac).content[0].text == "queued"

    def test_header_scripts_control_concurrent_requests(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        def one(i: int) -> Any:
            step: Step = Delay(0.05 * (i % 3), then=Reply(text=f"n{i}"))
            return create(ac, extra_headers=script_header(step)).content[0].text

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(8))) == [f"n{i}" for i in range(8)]

    def test_marker_in_the_prompt(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        text = f"please {script_marker(Fault(429, retry_after=1))} thanks"
        with pytest.raises(anthropic.RateLimitError):
            create(ac, messages=[{"role": "user", "content": [{"type": "text", "text": text}]}])

    def test_bad_header_script_is_a_400(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        with pytest.raises(anthropic.BadRequestError, match="unknown step kind"):
            create(ac, extra_headers={"x-fake-script": '{"kind": "explode"}'})

    def test_flap(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        fa.flap("ok,fail,fail")
        outcomes = []
        for _ in range(6):
            try:
                create(ac)
                outcomes.append("ok")
            except anthropic.InternalServerError as exc:
                outcomes.append(str(exc.status_code))
        assert outcomes == ["ok", "529", "529"] * 2
        fa.flap(["ok", Fault(500)])
        fa.script(Reply(text="queue first"))
        assert create(ac).content[0].text == "queue first"
        create(ac)
        with pytest.raises(anthropic.InternalServerError):
            create(ac)
        fa.flap(None)
        assert create(ac).content

    def test_received_log(self, fa: FakeAnthropic, ac: anthropic.Anthropic) -> None:
        create(ac, system="sys", metadata={"user_id": "u1"})
        ac.messages.count_tokens(model=MODEL, messages=HI)
        first, second = fa.received
        assert first.path == "/v1/messages"
        assert second.path == "/v1/messages/count_tokens"
        assert first.method == "POST"
        assert first.body["system"] == "sys"
        assert first.body["messages"] == HI
        assert first.headers["authorization"] == "Bearer k"
        assert "anthropic-version" in first.headers
        assert all(k == k.lower() for k in first.headers)
        assert json.loads(first.raw) == first.body

    def test_steps_round_trip_through_json(self) -> None:
        steps: list[Step | None] = [
            Reply(text="a", tool_use=[{"name": "t", "input": {}}], usage={"output_tokens": 3}),
            Fault(529, retry_after=1.5),
            Hang(),
            Delay(1, then=Fault(500)),
            CutStream(2),
            StallStream(1, 0.5),
            MalformedStream(),
            StreamError(),
            ContextLength(),
            Refusal(),
            None,
        ]
        for step in steps:
            assert step_from_json(json.loads(json.dumps(step_to_json(step)))) == step


# ===================================================================================== OpenAI


class TestOpenAI:
    def test_non_streaming_default_reply(self, fo: FakeOpenAI, oc: openai.OpenAI) -> None:
        raw = oc.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hello"}])
        assert raw.headers["x-request-id"]
        done = raw.parse()
        assert done.id.startswith("chatcmpl-")
        assert done.object == "chat.completion"
        assert done.model == "m"
        choice = done.choices[0]
        assert choice.finish_reason == "stop"
        assert choice.message.role == "assistant"
        assert choice.message.content == "Hello from fake LLM. You said: hello"
        assert done.usage is not None
        assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    def test_streaming_accumulates_to_the_same_text(self, fo: FakeOpenAI, oc: openai.OpenAI) -> None:
        chunks = list(chat(oc, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == chat(oc).choices[0].message.content
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0
        with oc.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hello there"}]) as s:
            assert s.get_final_completion().choices[0].message.content == text

    def test_wire_format(self, fo: FakeOpenAI, o_url: str) -> None:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(o_url + "/v1/chat/completions", json=body)
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        assert all(name is None for name, _ in events)
        assert events[-1][1] == "[DONE]"
        assert all("usage" not in json.loads(d) for _, d in events[:-1])  # include_usage not asked

    @pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
    def test_tool_calls(self, fo: FakeOpenAI, oc: openai.OpenAI, choice: Any) -> None:
        tools: Any = [
            {"type": "function", "function": {"name": "lookup", "parameters": OTHER_TOOL["input_schema"]}},
            {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}},
        ]
        done = chat(oc, tools=tools, tool_choice=choice)
        call = done.choices[0].message.tool_calls[0]
        assert done.choices[0].finish_reason == "tool_calls"
        assert call.id.startswith("call_")
        assert call.type == "function"
        expected = "lookup" if choice == "required" else "get_weather"
        assert call.function.name == expected
        assert json.loads(call.function.arguments) == (
            {"q": "x"} if expected == "lookup" else {"city": "x", "days": 1, "unit": "celsius", "verbose": True}
        )
        chunks = list(chat(oc, tools=tools, tool_choice=choice, stream=True))
        deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        assert deltas[0].id
        assert deltas[0].function.name == expected
        assert deltas[0].index == 0
        assert len(deltas) >= 3
        assert all(d.id is None for d in deltas[1:])
        assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        with oc.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "x"}], tools=tools, tool_choice=choice
        ) as s:
            final = s.get_final_completion().choices[0].message.tool_calls
        assert final
        assert final[0].function.arguments == call.function.arguments

    def test_tool_message_last(self, fo: FakeOpenAI, oc: openai.OpenAI) -> None:
        messages = [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 12C"},
        ]
        assert "rainy, 12C" in chat(oc, messages=messages).choices[0].message.content

    def test_limits_and_stops(self, fo: FakeOpenAI, oc: openai.OpenAI) -> None:
        done = chat(oc, max_tokens=2)
        assert done.choices[0].finish_reason == "length"
        assert done.choices[0].message.content == "Hello fr"
        done = chat(oc, max_completion_tokens=2, stream=False)
        assert done.choices[0].finish_reason == "length"
        done = chat(oc, stop=["LLM"])
        assert done.choices[0].finish_reason == "stop"
        assert done.choices[0].message.content == "Hello from fake "

    def test_models_health_and_unknown_path(self, o_url: str) -> None:
        fake = FakeOpenAI(models=["qwen", "llama"], context_window=4096)
        with serve_app(fake) as url, o_client(url) as client:
            assert [m.id for m in client.models.list()] == ["qwen", "llama"]
            with pytest.raises(openai.NotFoundError) as err:
                chat(client, model="gpt-9")
            assert err.value.code == "model_not_found"
            assert chat(client, model="llama").model == "llama"
            assert httpx.get(url + "/health").json() == {"status": "ok"}
            r = httpx.get(url + "/v1/nope")
            assert r.status_code == 404
            assert r.json()["error"]["type"] == "not_found_error"
            with pytest.raises(openai.BadRequestError) as too_long:
                chat(client, model="qwen", messages=[{"role": "user", "content": "x" * 20000}])
            assert too_long.value.code == "context_length_exceeded"

    def test_bearer_key(self) -> None:
        fake = FakeOpenAI(api_key="secret")
        with serve_app(fake) as url, o_client(url, "wrong") as bad, o_client(url, "secret") as good:
            with pytest.raises(openai.AuthenticationError):
                chat(bad)
            assert httpx.get(url + "/v1/models").status_code == 401
            assert chat(good).choices

    def test_validation(self, fo: FakeOpenAI, o_url: str) -> None:
        r = httpx.post(o_url + "/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "messages"
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = httpx.post(o_url + "/v1/chat/completions", content=b"{nope")
        assert r.status_code == 400
        assert fo.stats == {"rejected": 2}

    @pytest.mark.parametrize(
        ("step", "exc", "status"),
        [
            (Fault(400), openai.BadRequestError, 400),
            (Fault(401), openai.AuthenticationError, 401),
            (Fault(404), openai.NotFoundError, 404),
            (Fault(429, retry_after=1.5), openai.RateLimitError, 429),
            (Fault(500), openai.InternalServerError, 500),
            (Fault(503), openai.InternalServerError, 503),
            (ContextLength(), openai.BadRequestError, 400),
            (StreamError(), openai.InternalServerError, 503),
        ],
    )
    def test_faults(
        self, fo: FakeOpenAI, oc: openai.OpenAI, step: Step, exc: type[openai.APIStatusError], status: int
    ) -> None:
        fo.script(step)
        with pytest.raises(exc) as err:
            chat(oc)
        assert err.value.status_code == status
        assert isinstance(err.value.body, dict)
        assert set(err.value.body) == {"message", "type", "param", "code"}
        if isinstance(step, ContextLength):
            assert err.value.code == "context_length_exceeded"
        if step == Fault(429, retry_after=1.5):
            assert err.value.response.headers["retry-after"] == "1.5"

    def test_broken_streams(self, fo: FakeOpenAI, oc: openai.OpenAI, o_url: str) -> None:
        fo.script(CutStream(2), CutStream(2), MalformedStream(), StreamError(after_events=2))
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        lines: list[str] = []
        with (
            httpx.stream("POST", o_url + "/v1/chat/completions", json=body) as r,
            pytest.raises(httpx.RemoteProtocolError),
        ):
            drain(r.iter_lines(), lines)
        assert "data: [DONE]" not in lines
        assert lines[0].startswith("data: {")
        with pytest.raises(openai.APIConnectionError):
            list(chat(oc, stream=True))
        with pytest.raises(json.JSONDecodeError):
            list(chat(oc, stream=True))
        with pytest.raises(openai.APIError, match="Overloaded"):
            list(chat(oc, stream=True))

    def test_refusal_reply_and_header_script(self, fo: FakeOpenAI, oc: openai.OpenAI) -> None:
        fo.script(Refusal(), Reply(text="hi", tool_use=[{"name": "f", "input": {"a": 1}}], stop_reason="end_turn"))
        assert chat(oc).choices[0].finish_reason == "content_filter"
        done = chat(oc).choices[0]
        assert done.message.content == "hi"
        assert done.finish_reason == "stop"
        assert json.loads(done.message.tool_calls[0].function.arguments) == {"a": 1}
        done = chat(oc, extra_headers=script_header(Reply(text="via header")))
        assert done.choices[0].message.content == "via header"
        assert fo.received[-1].headers["authorization"] == "Bearer k"
        assert fo.received[-1].body["messages"][0]["content"] == "hello there"

    def test_configurable_default_and_latency(self) -> None:
        fake = FakeOpenAI(reply_text="a b c d e f", stream_chunks=2, delay_s=0.2, record=False)
        with serve_app(fake) as url, o_client(url) as client:
            started = time.monotonic()
            pieces = [c.choices[0].delta.content for c in chat(client, stream=True) if c.choices]
            assert time.monotonic() - started >= 0.2
            assert [p for p in pieces if p] == ["a b c ", "d e f"]
        assert fake.received == []
        assert fake.stats == {"ok": 1}

    def test_hang_with_impatient_client(self, fo: FakeOpenAI, oc: openai.OpenAI) -> None:
        fo.script(Hang())
        with pytest.raises(openai.APITimeoutError):
            chat(oc.with_options(timeout=0.3))
        assert fo.stats == {"hang": 1}


def test_flap_rejects_unknown_words() -> None:
    with pytest.raises(ValueError, match="flap"):
        FakeOpenAI().flap("ok,maybe")


def test_release_wakes_all_hung(fo: FakeOpenAI, oc: openai.OpenAI) -> None:
    fo.script(Hang(), Hang())
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(chat, oc) for _ in range(2)]
        fo.wait_for_requests(2)
        time.sleep(0.1)
        threading.Timer(0.05, fo.release).start()
        assert all(f.result(timeout=5).choices for f in futures)


# ====================================================================== slow-first-token mode (both fakes)

FIRST_TOKEN_S = 0.4


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_slow_first_token_mode_opens_at_once_and_waits_before_the_first_token(kind: str) -> None:
    """``first_token_s``: the status and the stream's opening events come at once, the first text after the wait,
    then the rest as usual; a scripted fault is played as it is (only answers are slow)."""
    fake: FakeAnthropic | FakeOpenAI = (
        FakeAnthropic(reply_text="one two three", first_token_s=FIRST_TOKEN_S)
        if kind == "anthropic"
        else FakeOpenAI(reply_text="one two three", first_token_s=FIRST_TOKEN_S)
    )
    path, headers = ("/v1/messages", ANTHROPIC_HEADERS) if kind == "anthropic" else ("/v1/chat/completions", {})
    body = {"model": MODEL, "max_tokens": 256, "stream": True, "messages": HI}
    with serve_app(fake) as url:
        started = time.monotonic()
        stamps: list[tuple[float, str]] = []
        with httpx.stream("POST", url + path, headers=headers, json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    stamps.append((time.monotonic() - started, line[6:]))
        fake.script(Fault(503))
        refused = httpx.post(url + path, headers=headers, json={**body, "stream": False})
    first_text = next(i for i, (_, d) in enumerate(stamps) if "one" in d)
    assert first_text >= 1  # an opening event came before the text (OpenAI: the role chunk; Anthropic: three)
    opening, text_at = stamps[first_text - 1][0], stamps[first_text][0]
    assert text_at - opening >= FIRST_TOKEN_S * 0.9  # the wait falls between the opening events and the text
    assert stamps[-1][1] == "[DONE]" if kind == "openai" else json.loads(stamps[-1][1])["type"] == "message_stop"
    assert refused.status_code == 503  # a fault is not delayed into an answer


# ======================================================= a final assistant turn: continue, reject, ignore

WHOLE = "alpha beta gamma delta"
PREFILLED: Any = [{"role": "user", "content": "Greek letters."}, {"role": "assistant", "content": "alpha beta"}]


@pytest.mark.parametrize(("mode", "expected"), [("continue", " gamma delta"), ("ignore", WHOLE), ("reject", None)])
def test_prefill_modes_of_the_claude_fake(mode: str, expected: str | None) -> None:
    """``continue``: the rest of its answer; ``ignore``: the answer from the start (a server that drops the prefix);
    ``reject``: the 400 of Claude Sonnet 4.6 / Opus 4.7 and later."""
    fake = FakeAnthropic(reply_text=WHOLE, prefill=mode)
    with serve_app(fake) as url, a_client(url) as client:
        if expected is None:
            with pytest.raises(anthropic.BadRequestError, match="does not support assistant message prefill"):
                create(client, messages=PREFILLED)
            assert create(client, messages=PREFILLED[:1]).content[0].text == WHOLE  # a plain request is answered
            assert fake.stats == {"prefill_rejected": 1, "ok": 1}
        else:
            assert create(client, messages=PREFILLED).content[0].text == expected


@pytest.mark.parametrize(("mode", "expected"), [("continue", " gamma delta"), ("ignore", WHOLE), ("reject", None)])
def test_prefill_modes_of_the_openai_fake(mode: str, expected: str | None) -> None:
    """As vLLM: ``continue`` continues only with ``continue_final_message``; without it the answer starts over."""
    fake = FakeOpenAI(reply_text=WHOLE, prefill=mode)
    extra: Any = {"continue_final_message": True, "add_generation_prompt": False}
    with serve_app(fake) as url, o_client(url) as client:
        if expected is None:
            with pytest.raises(openai.BadRequestError, match="does not support assistant message prefill"):
                chat(client, messages=PREFILLED, extra_body=extra)
        else:
            assert chat(client, messages=PREFILLED, extra_body=extra).choices[0].message.content == expected
            assert chat(client, messages=PREFILLED).choices[0].message.content == WHOLE
