"""Data sovereignty: which requests must stay inside the perimeter, and why.

A request is sovereign when any of these holds, cheapest first:

- ``key``: its API key is configured ``sovereign: true``;
- ``header``: the caller sent ``x-tiergate-sovereign: true`` (``1``, ``yes``, ``on`` too; ``false``, ``0``,
  ``no``, ``off`` say no; anything else is a 400);
- ``metadata``: the body's ``metadata`` carries ``tiergate_sovereign``: OpenAI's metadata is a map of strings,
  so ``"metadata": {"tiergate_sovereign": "true"}``; Anthropic's takes ``"tiergate_sovereign": true`` beside
  ``user_id``. The gateway never forwards the key: Anthropic backends send only ``user_id`` upstream and
  OpenAI-compatible ones send no metadata;
- ``marker``: a text contains one of ``policy.sovereignty.markers``, case-insensitively: a marker is a
  whole word or phrase (``CONFIDENTIAL``, ``INTERNAL ONLY``, a project code name; any whitespace between
  its words), or a regular expression when written ``re:PATTERN`` (``re:PRJ-\\d{4}``);
- ``pii``: a text contains personal data of a kind in ``policy.sovereignty.pii`` (``EMAIL_ADDRESS``,
  ``PHONE_NUMBER``, ``CREDIT_CARD``, ``IBAN_CODE``, ``US_SSN``, ``IP_ADDRESS``, ... see :func:`pii_kinds`).

The texts are the system prompt, every turn's text, tool results, and the strings and numbers inside tool
calls' arguments. Images are not inspected. Personal data is found by presidio-analyzer's pattern
recognizers with their checks (Luhn for cards, the IBAN checksum, known top-level domains for e-mail), with
no NLP model: names and places (``PERSON``, ``LOCATION``) would need spaCy's NER, ten times the whole
budget of about a millisecond a prompt. A recognizer's context words (``ssn`` before ``219099999``) lift a
weak match the way presidio does.

Every verdict says why, never what: ``policy:sovereign:key``, ``policy:sovereign:header``,
``policy:sovereign:metadata``, ``policy:sovereign:marker``, ``policy:sovereign:pii=CREDIT_CARD,EMAIL_ADDRESS``.
With ``action: redact``, a request whose only finding is personal data is not held in: its reason is
``policy:redact:pii=...``, and :meth:`SovereigntyInspector.redact` replaces the values with placeholders
that the answer gets back (:mod:`tiergate.signals.redact`). Markers and caller flags cannot be redacted.

The app's lifespan builds one inspector (presidio is imported and its recognizers built then, never at
import)::

    inspector = SovereigntyInspector(config.policy.sovereignty)
    verdict = inspector.inspect(request, key_sovereign=caller.sovereign, header=headers.get(HEADER))
    if verdict.action == "redact":
        request, restorer = inspector.redact(request)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tiergate.config import SovereigntyConfig
from tiergate.errors import ConfigError, InvalidRequest
from tiergate.signals.redact import Restorer, Span, json_texts, redact_request
from tiergate.types import ChatRequest, TextPart, ToolCall, ToolResult

if TYPE_CHECKING:
    from presidio_analyzer import EntityRecognizer, RecognizerResult

HEADER = "x-tiergate-sovereign"
METADATA_KEY = "tiergate_sovereign"
#: Lowest recognizer score that counts (presidio's scale): phone numbers score 0.4, checked values 1.0.
MIN_SCORE = 0.4
#: What a context word adds to a weak match, and the least it then scores (presidio's defaults).
CONTEXT_BOOST, CONTEXT_FLOOR = 0.35, 0.4
_FLAG = dict.fromkeys(["true", "1", "yes", "on"], True) | dict.fromkeys(["false", "0", "no", "off", ""], False)
_WORD = re.compile(r"[^\W\d_]+")
# Digits with the punctuation phone numbers are written with (a superset of libphonenumber's); the phone
# matcher, which tries every region on every candidate, only reads the runs with enough digits to be one.
_PHONE_RUN = re.compile(
    r"[+\uff0b(\uff08\[]?\d(?:[\s\-\u2010-\u2015\u2212\u30fc\uff0d-\uff0f()\uff08\uff09.\[\]/~]*\d)*"
)
_PHONE_MIN_DIGITS = 5
#: Texts whose findings are remembered (a 16-byte digest and a few offsets each).
CACHE_SIZE = 8192
#: A longer text is read a window at a time: a regular expression holds the GIL for one whole call, and a call
#: over megabytes would hold the event loop as long. Each window is a core of WINDOW characters and MARGIN more
#: on each side; a match counts in the window whose core it starts in, with MARGIN characters of context either
#: side (lookbehinds, word boundaries, context words), so the matches are those of the whole text.
WINDOW, MARGIN = 65536, 1024
_DIGIT = re.compile(r"\d")
# What each recognizer's patterns cannot match without, read off presidio 2.2.366's patterns: a text (as the
# recognizer sees it) with no match of it skips the recognizer, and ordinary prose skips nearly all of them.
# Each is compiled with the recognizer's own regex module and flags, so that ``\d`` and case folding mean
# what they mean in its patterns, and holds only for the patterns it was read off (a digest of them and their
# flags): a presidio whose patterns differ runs the recognizer on every text. Those with letters start at the
# digit or separator they need, looking behind for the rest (``(?<=[A-Z]{2})[0-9]{2}`` for
# ``[A-Z]{2}[0-9]{2}``): the same texts match, and the regex module finds such a start several times faster.
# The phone matcher has its own filter (``_PHONE_RUN``); a text without a digit has no run.
_NEEDS: dict[str, tuple[str, str]] = {
    "CREDIT_CARD": (r"\d{4}[- ]?\d{3}", "cf379d198a8c"),
    "CRYPTO": (r"[13][a-zA-HJ-NP-Z0-9]{25}", "cfbc4c3cb651"),
    # 1/2, 1-2, 1.12.2, 1-JAN, JAN-1
    "DATE_TIME": (r"(?<=\d)[-/]\d|(?<=\d)\.\d{1,2}\.\d|(?<=\d)-[A-Z]|(?<=[A-Z])-\d", "16eb463de5cb"),
    "EMAIL_ADDRESS": ("@", "4367eeb83624"),
    "IBAN_CODE": (r"(?<=[A-Z]{2})[0-9]{2}", "265b89078b25"),
    # IPv4's 1.255.1 (also in IPv4-mapped and -embedded IPv6), IPv6's a:b, a:: and ::
    "IP_ADDRESS": (r"(?<=[0-9])\.[0-9]{1,3}\.[0-9]|(?<=[0-9A-Fa-f]):[0-9A-Fa-f:]|::", "4cc16a622a2c"),
    # 12:34:56 or 12-34-56, 1234.5678.
    "MAC_ADDRESS": (
        r"(?<=[0-9A-Fa-f]{2})[:-][0-9A-Fa-f]{2}[:-]|(?<=[0-9A-Fa-f]{4})\.[0-9A-Fa-f]{4}\.",
        "f819f996c192",
    ),
    "MEDICAL_LICENSE": (r"\d{7}", "d777ca8ccc8b"),
    "UK_NHS": (r"[0-9]{3}[- ]?[0-9]{3}", "32ac490f4040"),
    "URL": (r"[a-z0-9.\-][.][a-z]", "7599532c06bc"),  # a host character, a dot, a top-level domain's first letter
    "US_BANK_NUMBER": (r"[0-9]{8}", "d8bcdca0010e"),
    # Each of its alternatives has a letter (or the "]" of "A-Z]]12") and a digit side by side, or six digits.
    "US_DRIVER_LICENSE": (r"[0-9](?:(?<=[A-Z\]][0-9])|(?=[A-Z]|[0-9]{5}))", "019cedcc2d6d"),
    "US_ITIN": (r"9\d{2}[- ]?[5-9]", "34f262ba3492"),
    "US_PASSPORT": (r"[0-9]{8}", "c5325fe9ef3c"),
    "US_SSN": (r"[0-9]{3}[- .]?[0-9]{2}", "579d95a3ac77"),
    "UUID": (r"[0-9A-Fa-f]{8}-", "3ba2f3744c35"),
}
# Checked recognizers first: each masks what it found from the ones after it, so a card number is not
# also a phone number, and the costly phone matcher (last) sees the least text.
_ORDER = ["CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS", "US_SSN", "IP_ADDRESS", "URL"]


@dataclass(frozen=True, slots=True)
class Finding:
    """``sovereign``: some rule fired. ``action``: ``route`` keeps the request on in-perimeter backends;
    ``redact`` lets it out once :meth:`SovereigntyInspector.redact` has replaced its personal data.
    ``reasons``: one per rule that fired. ``entity_kinds``: the kinds of personal data found, sorted."""

    sovereign: bool
    action: Literal["route", "redact"] = "route"
    reasons: tuple[str, ...] = ()
    entity_kinds: tuple[str, ...] = ()


def flag(value: object, where: str) -> bool:
    """A caller's yes/no: ``True``/``False`` or one of the strings in the module docstring."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and (answer := _FLAG.get(value.strip().lower())) is not None:
        return answer
    raise InvalidRequest(f"{where}: expected true or false", param=where)


def texts(request: ChatRequest) -> Iterator[str]:
    """Every text the request carries, tool-call arguments as the strings and numbers inside them."""
    if request.system:
        yield request.system
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                yield part.text
            elif isinstance(part, ToolResult):
                yield part.content
            elif isinstance(part, ToolCall):
                yield from json_texts(part.arguments)


def compile_markers(markers: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    """One pattern for all the plain markers, one for each ``re:`` marker; all case-insensitive."""
    words = [r"\s+".join(map(re.escape, m.split())) for m in markers if not m.startswith("re:") and m.split()]
    patterns = [re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)] if words else []
    for i, marker in enumerate(markers):
        if marker.startswith("re:"):
            try:
                patterns.append(re.compile(marker[3:], re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(
                    f"policy.sovereignty.markers.{i}: not a valid regular expression ({exc}); "
                    "fix it, or drop the 're:' prefix to match the text as written"
                ) from None
    return tuple(patterns)


def search(pattern: re.Pattern[str], text: str) -> bool:
    """Does ``pattern`` match in ``text``? Searched a window at a time (see :data:`WINDOW`); a lookbehind still
    sees the text before a window, as ``search(text, pos, endpos)`` does not cut it there.

    >>> search(re.compile(r"(?<!\\w)secret(?!\\w)"), "x" * 70000 + " secret " + "y" * 70000)
    True
    >>> search(re.compile(r"(?<!\\w)secret(?!\\w)"), "x" * (WINDOW - 3) + "secretive")
    False
    """
    for core in range(0, len(text) or 1, WINDOW):
        end = min(len(text), core + WINDOW + MARGIN)
        found = pattern.search(text, core, end)
        while found is not None and found.start() < core + WINDOW:
            if found.end() < end or end == len(text):
                return True
            found = pattern.search(text, found.start() + 1, end)  # cut by the window's end: maybe longer
    return False


def pii_kinds() -> frozenset[str]:
    """The personal-data kinds this gateway can detect (presidio entity names)."""
    return frozenset(k for r in _recognizers() for k in r.supported_entities)


class PiiDetector:
    """Finds personal data of the given kinds; builds its recognizers once."""

    def __init__(self, kinds: Sequence[str], *, min_score: float = MIN_SCORE, prefilter: bool = True) -> None:
        """``prefilter=False`` runs every recognizer on every text (the pre-filters' tests compare the two)."""
        recognizers = _recognizers()
        known = {k for r in recognizers for k in r.supported_entities}
        if unknown := sorted(set(kinds) - known):
            raise ConfigError(
                f"policy.sovereignty.pii: unknown kind {unknown[0]!r}; use some of {', '.join(sorted(known))} "
                "(names and places need an NER model, which tiergate does not load)"
            )
        chosen = [(k, r) for r in recognizers for k in r.supported_entities if k in kinds]
        rank = {k: i for i, k in enumerate(_ORDER)}
        chosen.sort(key=lambda kr: (kr[0] == "PHONE_NUMBER", rank.get(kr[0], len(_ORDER))))
        self._steps = [(k, r, _prefilter(k, r) if prefilter else None) for k, r in chosen]
        self._context = {id(r): frozenset(w.lower() for w in r.context or ()) for _, r in chosen}
        self._min_score = min_score
        self._cache: dict[bytes, tuple[Span, ...]] = {}

    def find(self, text: str) -> tuple[Span, ...]:
        """Non-overlapping spans of personal data in ``text``, in order.

        Remembered by a digest of the text (never the text: the cache holds no personal data), because a
        conversation sends its whole history again with every turn.
        """
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        spans = self._cache.pop(key, None)
        if spans is None:
            spans = self._find(text)
            if len(self._cache) >= CACHE_SIZE:
                del self._cache[next(iter(self._cache))]  # the least recently used
        self._cache[key] = spans
        return spans

    def _find(self, text: str) -> tuple[Span, ...]:
        if len(text) <= WINDOW + 2 * MARGIN:
            return self._find_in(text)
        spans: list[Span] = []
        for core in range(0, len(text), WINDOW):
            lo = max(0, core - MARGIN)
            for span in self._find_in(text[lo : core + WINDOW + MARGIN]):
                if core <= span.start + lo < core + WINDOW:
                    spans.append(Span(span.start + lo, span.end + lo, span.kind))
        return tuple(_disjoint(spans))

    def _find_in(self, text: str) -> tuple[Span, ...]:
        spans: list[Span] = []
        seen = text
        for kind, recognizer, needs in self._steps:
            if needs is not None and needs(seen) is None:
                continue
            found = [
                Span(r.start, r.end, kind)
                for r in _analyze(recognizer, kind, seen)
                if r.score >= self._min_score or self._lifted(r.score, text, r.start, recognizer)
            ]
            if found:  # hide them from the recognizers after this one, keeping the offsets (one copy per step)
                seen = _masked(seen, found)
            spans += found
        return tuple(_disjoint(spans))

    def _lifted(self, score: float, text: str, start: int, recognizer: EntityRecognizer) -> bool:
        words = self._context[id(recognizer)]
        before = _WORD.findall(text[max(0, start - 80) : start])[-5:]
        if not words or not any(w.lower() in words for w in before):
            return False
        return max(score + CONTEXT_BOOST, CONTEXT_FLOOR) >= self._min_score


def _masked(text: str, spans: Sequence[Span]) -> str:
    out, pos = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        start = max(span.start, pos)
        if span.end > start:
            out += [text[pos:start], "#" * (span.end - start)]
            pos = span.end
    out.append(text[pos:])
    return "".join(out)


def _prefilter(kind: str, recognizer: EntityRecognizer) -> Callable[[str], object] | None:
    """The search for what ``recognizer`` cannot match ``kind`` without, if it is known (see ``_NEEDS``)."""
    if kind == "PHONE_NUMBER":
        return _DIGIT.search
    patterns = getattr(recognizer, "patterns", None)  # a pattern recognizer's (presidio's types say little)
    if kind not in _NEEDS or not patterns:
        return None
    import regex  # type: ignore[import-untyped]  # no stubs; the module presidio matches with

    need, digest = _NEEDS[kind]
    flags = int(getattr(recognizer, "global_regex_flags", 0))
    read = hashlib.sha256("\n".join([str(flags), *(p.regex for p in patterns)]).encode()).hexdigest()
    return regex.compile(need, flags).search if read.startswith(digest) else None


def _analyze(recognizer: EntityRecognizer, kind: str, text: str) -> list[RecognizerResult]:
    if kind != "PHONE_NUMBER":
        return recognizer.analyze(text, [kind], None)  # type: ignore[arg-type]  # None: no NLP model
    results = []
    for run in _PHONE_RUN.finditer(text):
        if sum(c.isdigit() for c in run.group()) < _PHONE_MIN_DIGITS:
            continue
        start = max(0, run.start() - 1)  # one character either side: the matcher checks the neighbours
        for r in recognizer.analyze(text[start : run.end() + 1], [kind], None):  # type: ignore[arg-type]
            r.start, r.end = r.start + start, r.end + start
            results.append(r)
    return results


def _disjoint(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if not out or span.start >= out[-1].end:
            out.append(span)
    return out


def _recognizers() -> list[EntityRecognizer]:
    """presidio's predefined English recognizers that need no NLP model, e-mail checked offline."""
    import phonenumbers
    import tldextract
    from presidio_analyzer import RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer, SpacyRecognizer

    # The default extractor downloads the public suffix list on first use: a call out of the perimeter.
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(languages=["en"])
    recognizers = [r for r in registry.recognizers if not isinstance(r, SpacyRecognizer)]
    for r in recognizers:
        if isinstance(r, PhoneRecognizer):
            # Regions sharing a calling code (US and CA: +1) read numbers alike: match once per code.
            by_code: dict[int, str] = {}
            for region in r.supported_regions:
                by_code.setdefault(phonenumbers.country_code_for_region(region), region)
            r.supported_regions = tuple(by_code.values())
    return [OfflineEmailRecognizer() if isinstance(r, EmailRecognizer) else r for r in recognizers]


class SovereigntyInspector:
    def __init__(self, config: SovereigntyConfig) -> None:
        self._action = config.action
        self._markers = compile_markers(config.markers)
        self._pii = PiiDetector(config.pii) if config.pii else None

    def inspect(self, request: ChatRequest, *, key_sovereign: bool, header: str | None) -> Finding:
        """Why ``request`` must stay in the perimeter, if it must. Raises InvalidRequest on a bad flag."""
        metadata = request.metadata.get(METADATA_KEY)
        flags = [
            ("key", key_sovereign),
            ("header", header is not None and flag(header, HEADER)),
            ("metadata", metadata is not None and flag(metadata, f"metadata.{METADATA_KEY}")),
        ]
        reasons = [f"policy:sovereign:{name}" for name, on in flags if on]
        if reasons:  # held in whatever the texts say: no need to read them
            return Finding(True, "route", tuple(reasons))
        all_texts = list(texts(request))
        if any(search(p, t) for p in self._markers for t in all_texts):
            reasons.append("policy:sovereign:marker")
        kinds = tuple(sorted({s.kind for t in all_texts for s in self._pii.find(t)})) if self._pii else ()
        if kinds and not reasons and self._action == "redact":
            return Finding(True, "redact", (f"policy:redact:pii={','.join(kinds)}",), kinds)
        if kinds:
            reasons.append(f"policy:sovereign:pii={','.join(kinds)}")
        return Finding(bool(reasons), "route", tuple(reasons), kinds)

    def redact(self, request: ChatRequest) -> tuple[ChatRequest, Restorer]:
        """``request`` with its personal data replaced by placeholders, and the restorer for the answer."""
        if self._pii is None:
            return request, Restorer({})
        return redact_request(request, self._pii.find)
