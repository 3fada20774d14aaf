"""Redaction and restoration, with a regex standing in for the PII detector."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.signals.redact import Restorer, Span, json_texts, redact_request
from tiergate.types import (
    ChatRequest,
    ChatResponse,
    EventStream,
    ImagePart,
    Message,
    StopReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
    ToolSpec,
    Usage,
)

_PATTERNS = {
    "EMAIL_ADDRESS": re.compile(r"[a-z]+@[a-z]+\.com"),
    "PHONE_NUMBER": re.compile(r"\+[0-9]{11}"),
    "CREDIT_CARD": re.compile(r"\b[0-9]{16}\b"),
}


def find(text: str) -> list[Span]:
    spans = [Span(m.start(), m.end(), kind) for kind, p in _PATTERNS.items() for m in p.finditer(text)]
    return sorted(spans, key=lambda s: s.start)


def user(text: str) -> Message:
    return Message.text("user", text)


def request(*messages: Message, system: str | None = None) -> ChatRequest:
    return ChatRequest(model="auto", messages=list(messages), system=system)


def test_same_value_same_placeholder_across_the_request() -> None:
    req = request(
        user("mail ann@example.com, call +14155550132, cc bob@example.com"),
        Message("assistant", (TextPart("ok"), ToolCall("t1", "send", '{"to": "ann@example.com"}'))),
        Message("tool", (ToolResult("t1", "sent to ann@example.com"),)),
        system="Reply to bob@example.com",
    )
    redacted, restorer = redact_request(req, find)
    assert redacted.system == "Reply to <EMAIL_ADDRESS_2>"
    assert redacted.messages[0].text_content == "mail <EMAIL_ADDRESS_1>, call <PHONE_NUMBER_1>, cc <EMAIL_ADDRESS_2>"
    assert redacted.messages[1].tool_calls[0].arguments == '{"to": "<EMAIL_ADDRESS_1>"}'
    assert redacted.messages[2].parts == (ToolResult("t1", "sent to <EMAIL_ADDRESS_1>"),)
    assert len(restorer) == 3
    assert restorer.restore("to <EMAIL_ADDRESS_2> and <PHONE_NUMBER_1>") == "to bob@example.com and +14155550132"


def test_leaves_everything_else_and_the_original_alone() -> None:
    image = ImagePart({"type": "url", "url": "https://example.com/a.png"})
    tool = ToolSpec("send", "Send mail", {"type": "object"})
    req = ChatRequest(
        model="auto",
        messages=[Message("user", (TextPart("to ann@example.com"), image))],
        tools=(tool,),
        max_tokens=5,
        metadata={"user_id": "u1"},
    )
    redacted, _ = redact_request(req, find)
    assert redacted.messages[0].parts == (TextPart("to <EMAIL_ADDRESS_1>"), image)
    assert (redacted.tools, redacted.max_tokens, redacted.metadata) == ((tool,), 5, {"user_id": "u1"})
    assert req.messages[0].parts[0] == TextPart("to ann@example.com")


def test_nothing_found_gives_an_empty_restorer() -> None:
    redacted, restorer = redact_request(request(user("hello <b>there</b>")), find)
    assert redacted.messages[0].text_content == "hello <b>there</b>"
    assert len(restorer) == 0
    assert restorer.restore("<EMAIL_ADDRESS_1>") == "<EMAIL_ADDRESS_1>"


def test_placeholders_the_caller_wrote_are_never_handed_out() -> None:
    req = request(user("the template says <EMAIL_ADDRESS_1>; mine is ann@example.com"))
    redacted, restorer = redact_request(req, find)
    assert redacted.messages[0].text_content == "the template says <EMAIL_ADDRESS_1>; mine is <EMAIL_ADDRESS_2>"
    assert restorer.restore(redacted.messages[0].text_content) == req.messages[0].text_content


def test_tool_arguments_stay_json() -> None:
    args = json.dumps({"to": ["ann@example.com", "x"], "note": 'say "hi"\nto bob@example.com', "n": 3})
    req = request(Message("assistant", (ToolCall("t1", "send", args),)))
    redacted, restorer = redact_request(req, find)
    out = json.loads(redacted.messages[0].tool_calls[0].arguments)
    assert out == {"to": ["<EMAIL_ADDRESS_1>", "x"], "note": 'say "hi"\nto <EMAIL_ADDRESS_2>', "n": 3}
    assert json.loads(restorer.restore(redacted.messages[0].tool_calls[0].arguments, json=True)) == json.loads(args)


def test_a_number_found_in_tool_arguments_becomes_a_placeholder_string() -> None:
    req = request(Message("assistant", (ToolCall("t1", "pay", '{"card": 4111111111111111, "n": 1}'),)))
    redacted, restorer = redact_request(req, find)
    assert json.loads(redacted.messages[0].tool_calls[0].arguments) == {"card": "<CREDIT_CARD_1>", "n": 1}
    assert restorer.restore('{"card": "<CREDIT_CARD_1>"}', json=True) == '{"card": "4111111111111111"}'


def test_arguments_that_are_not_json_are_redacted_as_text() -> None:
    args = '{"to": "ann@example.com \\q'
    req = request(Message("assistant", (ToolCall("t1", "send", args),)))
    redacted, _ = redact_request(req, find)
    assert redacted.messages[0].tool_calls[0].arguments == '{"to": "<EMAIL_ADDRESS_1> \\q'
    assert list(json_texts(args)) == [args]


def test_json_texts_are_the_decoded_strings_and_numbers() -> None:
    args = '{"a": "x\\ny", "b": [1.5, -2], "c": true}'
    assert list(json_texts(args)) == ["a", "x\ny", "b", "1.5", "-2", "c"]


def test_restore_in_json_escapes_the_value() -> None:
    restorer = Restorer({"<NOTE_1>": 'say "hi"\\'})
    assert restorer.restore('{"n": "<NOTE_1>"}', json=True) == '{"n": "say \\"hi\\"\\\\"}'
    assert restorer.restore("<NOTE_1>") == 'say "hi"\\'


def test_repr_hides_the_values() -> None:
    assert "ann" not in repr(Restorer({"<EMAIL_ADDRESS_1>": "ann@example.com"}))


def test_stream_holds_back_only_a_possible_placeholder() -> None:
    stream = Restorer({"<EMAIL_ADDRESS_1>": "ann@example.com"}).stream()
    assert stream.feed("write to <EMAIL_AD") == "write to "
    assert stream.feed("DRESS_1> now, x < y") == "ann@example.com now, x < y"
    assert stream.feed("; a <") == "; a "
    assert stream.feed("b>") == "<b>"
    assert stream.feed("<EMAIL_ADDRESS_") == ""
    assert stream.flush() == "<EMAIL_ADDRESS_"
    assert stream.flush() == ""


def test_restore_response_restores_text_and_tool_arguments() -> None:
    restorer = Restorer({"<EMAIL_ADDRESS_1>": "ann@example.com"})
    response = ChatResponse(
        id="r1",
        model="m",
        parts=[TextPart("to <EMAIL_ADDRESS_1>"), ToolCall("t1", "send", '{"to": "<EMAIL_ADDRESS_1>"}')],
        stop_reason=StopReason.TOOL_USE,
        usage=Usage(1, 2),
    )
    restored = restorer.restore_response(response)
    assert restored.text == "to ann@example.com"
    assert restored.tool_calls[0].arguments == '{"to": "ann@example.com"}'
    assert (restored.id, restored.usage) == ("r1", Usage(1, 2))


async def _events(events: Sequence[StreamEvent]) -> EventStream:
    for event in events:
        yield event


async def _collect(restorer: Restorer, events: Sequence[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in restorer.restore_events(_events(events))]


async def test_restore_events_flushes_each_block_before_the_next_begins() -> None:
    restorer = Restorer({"<EMAIL_ADDRESS_1>": "ann@example.com"})
    end = StreamEnd(StopReason.TOOL_USE, Usage(3, 4))
    events: list[StreamEvent] = [
        TextDelta("Sending to <EMAIL"),
        TextDelta("_ADDRESS_1> <"),
        ToolCallStart(0, "t1", "send"),
        ToolArgsDelta(0, '{"to": "<EMAIL_ADDRESS_'),
        ToolArgsDelta(0, '1>"}'),
        ToolCallStart(1, "t2", "log"),
        ToolArgsDelta(1, '{"who": "<EMAIL_'),
        end,
    ]
    assert await _collect(restorer, events) == [
        TextDelta("Sending to "),
        TextDelta("ann@example.com "),
        TextDelta("<"),
        ToolCallStart(0, "t1", "send"),
        ToolArgsDelta(0, '{"to": "'),
        ToolArgsDelta(0, 'ann@example.com"}'),
        ToolCallStart(1, "t2", "log"),
        ToolArgsDelta(1, '{"who": "'),
        ToolArgsDelta(1, "<EMAIL_"),
        end,
    ]


async def test_restore_events_flushes_a_stream_cut_short() -> None:
    restorer = Restorer({"<EMAIL_ADDRESS_1>": "ann@example.com"})
    assert await _collect(restorer, [TextDelta("a <EMAIL")]) == [TextDelta("a "), TextDelta("<EMAIL")]


# --- properties ------------------------------------------------------------------------------------

_emails = st.from_regex(r"[a-z]{1,6}@[a-z]{1,6}\.com", fullmatch=True)
_phones = st.from_regex(r"\+[0-9]{11}", fullmatch=True)
_noise = st.text(alphabet='<>_AELMNOPRSDI0123456789 abc\n"\\é', max_size=12)
_literal_placeholders = st.sampled_from(["<EMAIL_ADDRESS_1>", "<PHONE_NUMBER_2>", "<EMAIL_ADDRESS_", "<X_1>"])
_texts = st.lists(st.one_of(_noise, _emails, _phones, _literal_placeholders), max_size=10).map(" ".join)


@given(texts=st.lists(_texts, min_size=1, max_size=4))
@settings(max_examples=200)
def test_redaction_removes_every_value_and_restore_undoes_it(texts: list[str]) -> None:
    req = request(*(user(t) for t in texts[1:]), system=texts[0] or None)
    redacted, restorer = redact_request(req, find)
    for before, after in zip(req.texts(), redacted.texts(), strict=True):
        for span in find(before):
            assert before[span.start : span.end] not in after
        assert restorer.restore(after) == before


@given(value=_texts, key=_texts)
@settings(max_examples=100)
def test_tool_arguments_round_trip_through_json(value: str, key: str) -> None:
    args = json.dumps({key: [value, 1]})
    req = request(Message("assistant", (ToolCall("t1", "f", args),)))
    redacted, restorer = redact_request(req, find)
    out = redacted.messages[0].tool_calls[0].arguments
    assert all(text[s.start : s.end] not in out for text in (key, value) for s in find(text))
    assert json.loads(restorer.restore(out, json=True)) == json.loads(args)


_values = st.dictionaries(
    st.sampled_from(["<EMAIL_ADDRESS_1>", "<EMAIL_ADDRESS_2>", "<PHONE_NUMBER_1>", "<A_10>"]),
    st.text(max_size=8),
    max_size=4,
)
_answers = st.lists(
    st.one_of(
        st.text(alphabet="<>_AEMILDRS12 x", max_size=10),
        st.sampled_from(["<EMAIL_ADDRESS_1>", "<EMAIL_ADDRESS_2>", "<PHONE_NUMBER_1>", "<A_10>", "<A_1>"]),
    ),
    max_size=8,
).map("".join)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@given(values=_values, answer=_answers, cuts=st.lists(st.integers(0, 80), max_size=12), in_json=st.booleans())
@settings(max_examples=300)
def test_streaming_restore_equals_restore_for_any_split(
    values: dict[str, str], answer: str, cuts: list[int], in_json: bool
) -> None:
    restorer = Restorer(values)
    stream = restorer.stream(json=in_json)
    streamed = "".join(stream.feed(chunk) for chunk in _split(answer, cuts)) + stream.flush()
    assert streamed == restorer.restore(answer, json=in_json)


@given(values=_values, answer=_answers, cuts=st.lists(st.integers(0, 80), max_size=12))
@settings(max_examples=100)
async def test_restore_events_equals_restore_for_any_split(
    values: dict[str, str], answer: str, cuts: list[int]
) -> None:
    restorer = Restorer(values)
    chunks = _split(answer, cuts)
    events: list[StreamEvent] = [TextDelta(c) for c in chunks]
    events += [ToolCallStart(0, "t", "f"), *(ToolArgsDelta(0, c) for c in chunks)]
    events.append(StreamEnd(StopReason.END_TURN, Usage()))
    out = await _collect(restorer, events)
    split = out.index(ToolCallStart(0, "t", "f"))
    assert "".join(e.text for e in out[:split] if isinstance(e, TextDelta)) == restorer.restore(answer)
    args = "".join(e.partial_json for e in out[split:] if isinstance(e, ToolArgsDelta))
    assert args == restorer.restore(answer, json=True)
    assert all(e.text for e in out if isinstance(e, TextDelta))
