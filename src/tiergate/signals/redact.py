"""Redaction: personal data out of a request, placeholders back out of the answer.

Pure: what counts as personal data is the ``find`` function the caller hands in (the sovereignty
inspector's PII detector in the gateway, a regex in tests). Every value found becomes a placeholder named
after its kind, the same value the same placeholder everywhere in the request; the :class:`Restorer` puts
the values back into the answer, streamed or not::

    >>> import re
    >>> def find(text: str) -> list[Span]:
    ...     return [Span(m.start(), m.end(), "EMAIL_ADDRESS") for m in re.finditer(r"\\S+@\\S+", text)]
    >>> req = ChatRequest(model="auto", messages=[Message.text("user", "Mail ann@example.com and ann@example.com")])
    >>> redacted, restorer = redact_request(req, find)
    >>> redacted.messages[0].text_content
    'Mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>'
    >>> stream = restorer.stream()
    >>> stream.feed("Sent to <EMAIL_AD") + stream.feed("DRESS_1>.") + stream.flush()
    'Sent to ann@example.com.'

A request with the caller's own body for Claude (:class:`~tiergate.types.Native`) has the same texts redacted in
that body, in place (:func:`tiergate.wire.anthropic.map_texts`: what Claude wrote and signed, its thinking, is
left as it is), and a native answer gets its texts restored the same way.

Tool-call arguments are JSON: each string in them is redacted as text and written back as a JSON string,
and a number found to be personal data (a card number, say) becomes a placeholder string. Numbers are
placeholders ``<KIND_N>`` counted per kind from 1; a number already written in the request (the caller's
own text saying ``<EMAIL_ADDRESS_1>``) is skipped, so restoring never rewrites what the caller wrote.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from tiergate.types import (
    ChatRequest,
    ChatResponse,
    Dialect,
    EventStream,
    Message,
    NativeEvent,
    Part,
    StreamEnd,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
)
from tiergate.wire.anthropic import map_texts

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")
# One token of a JSON document at a time: a string literal, a number, or a run of anything else.
_JSON_TOKEN = re.compile(r'(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?[0-9][0-9.eE+-]*)|[^"0-9-]+|.', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Span:
    """``text[start:end]`` is personal data of ``kind`` (a presidio entity name such as ``EMAIL_ADDRESS``)."""

    start: int
    end: int
    kind: str


Finder = Callable[[str], Sequence[Span]]


def json_texts(arguments: str) -> Iterator[str]:
    """The texts inside a tool call's JSON arguments: each string (decoded) and each number.

    Arguments that are not JSON are one text.
    """
    if not _is_json(arguments):
        yield arguments
        return
    for match in _JSON_TOKEN.finditer(arguments):
        if match["str"] is not None:
            yield json.loads(match["str"])
        elif match["num"] is not None:
            yield match["num"]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class _Vault:
    """Placeholders handed out so far, both ways round."""

    def __init__(self, taken: set[str]) -> None:
        self._taken = taken
        self._by_value: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def placeholder(self, kind: str, value: str) -> str:
        if value in self._by_value:
            return self._by_value[value]
        n = self._counts.get(kind, 0)
        while True:
            n += 1
            token = f"<{kind}_{n}>"
            if token not in self._taken:
                break
        self._counts[kind] = n
        self._by_value[value] = token
        self.values[token] = value
        return token

    def redact(self, text: str, spans: Sequence[Span]) -> str:
        out: list[str] = []
        pos = 0
        for span in sorted(spans, key=lambda s: (s.start, -s.end)):
            if span.start < pos or span.end <= span.start:
                continue  # overlaps one already replaced
            out += [text[pos : span.start], self.placeholder(span.kind, text[span.start : span.end])]
            pos = span.end
        out.append(text[pos:])
        return "".join(out)


def redact_request(request: ChatRequest, find: Finder) -> tuple[ChatRequest, Restorer]:
    """A copy of ``request`` with every value ``find`` reports replaced, and the restorer for the answer."""
    vault = _Vault({m.group() for text in request.texts() for m in PLACEHOLDER.finditer(text)})

    def text(value: str) -> str:
        spans = find(value)
        return vault.redact(value, spans) if spans else value

    def arguments(value: str) -> str:
        if not _is_json(value):
            return text(value)
        out: list[str] = []
        for match in _JSON_TOKEN.finditer(value):
            token = match.group()
            if match["str"] is not None:
                decoded = json.loads(token)
                if (redacted := text(decoded)) != decoded:
                    token = json.dumps(redacted)
            elif match["num"] is not None and (spans := find(token)):
                token = json.dumps(vault.placeholder(spans[0].kind, token))
            out.append(token)
        return "".join(out)

    def part(p: Part) -> Part:
        if isinstance(p, TextPart):
            return TextPart(text(p.text))
        if isinstance(p, ToolResult):
            return dataclasses.replace(p, content=text(p.content))
        if isinstance(p, ToolCall):
            return dataclasses.replace(p, arguments=arguments(p.arguments))
        return p

    messages = [Message(m.role, tuple(part(p) for p in m.parts)) for m in request.messages]
    system = text(request.system) if request.system else request.system
    native = request.native
    if native is not None and native.dialect is Dialect.ANTHROPIC:
        body = map_texts(native.body, lambda value, is_json: arguments(value) if is_json else text(value))
        native = dataclasses.replace(native, body=body, system=system, messages=tuple(messages))
    elif native is not None:
        native = None  # a body this module cannot read is never sent unredacted
    redacted = dataclasses.replace(request, system=system, messages=messages, native=native)
    return redacted, Restorer(vault.values)


class Restorer:
    """Puts the values behind placeholders back. Holds personal data: never log it (its repr does not show it)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._json = {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in values.items()}
        self._prefixes = frozenset(k[:i] for k in values for i in range(1, len(k)))

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Restorer({len(self._values)} placeholders)"

    def restore(self, text: str, *, json: bool = False) -> str:
        """``text`` with every known placeholder replaced; ``json=True`` escapes values for a JSON string."""
        if not self._values or "<" not in text:
            return text
        values = self._json if json else self._values
        return PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)

    def stream(self, *, json: bool = False) -> StreamRestorer:
        """A restorer for one streamed text block or one tool call's argument deltas."""
        return StreamRestorer(lambda text: self.restore(text, json=json), self._prefixes)

    def restore_response(self, response: ChatResponse) -> ChatResponse:
        parts: list[TextPart | ToolCall] = [
            TextPart(self.restore(p.text))
            if isinstance(p, TextPart)
            else dataclasses.replace(p, arguments=self.restore(p.arguments, json=True))
            for p in response.parts
        ]
        native = response.native
        if native is not None:
            native = map_texts(native, lambda value, is_json: self.restore(value, json=is_json))
        return dataclasses.replace(response, parts=parts, native=native)

    async def restore_events(self, events: EventStream) -> EventStream:
        """``events`` with placeholders restored in text and tool-argument deltas, however they are split."""
        text = self.stream()
        args: dict[int, StreamRestorer] = {}
        async for event in events:
            if isinstance(event, TextDelta):
                if out := text.feed(event.text):
                    yield dataclasses.replace(event, text=out)
                continue
            if isinstance(event, ToolArgsDelta):
                if out := args.setdefault(event.index, self.stream(json=True)).feed(event.partial_json):
                    yield ToolArgsDelta(event.index, out)
                continue
            if isinstance(event, ToolCallStart | StreamEnd | NativeEvent):  # blocks may end here: flush them first
                if rest := text.flush():
                    yield TextDelta(rest)
                for index, restorer in args.items():
                    if rest := restorer.flush():
                        yield ToolArgsDelta(index, rest)
            yield event
        if rest := text.flush():  # a stream cut off without a StreamEnd
            yield TextDelta(rest)


class StreamRestorer:
    """Restores a text that arrives in pieces, holding back only a possible placeholder's beginning.

    ``"".join(feed(c) for c in chunks) + flush() == restorer.restore("".join(chunks))`` for any split.
    """

    def __init__(self, restore: Callable[[str], str], prefixes: frozenset[str]) -> None:
        self._restore = restore
        self._prefixes = prefixes  # every proper prefix of every placeholder
        self._held = ""

    def feed(self, text: str) -> str:
        buffer = self._held + text
        # A placeholder has one "<", at its start: only the text from the last "<" on can be one unfinished.
        cut = buffer.rfind("<")
        if cut != -1 and buffer[cut:] in self._prefixes:
            self._held = buffer[cut:]
            buffer = buffer[:cut]
        else:
            self._held = ""
        return self._restore(buffer)

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return self._restore(rest)
