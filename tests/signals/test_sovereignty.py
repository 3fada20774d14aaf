"""Sovereignty inspection with the real presidio recognizers (no NLP model)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.config import SovereigntyConfig
from tiergate.errors import ConfigError, InvalidRequest
from tiergate.signals.sovereignty import (
    METADATA_KEY,
    Finding,
    PiiDetector,
    SovereigntyInspector,
    compile_markers,
    pii_kinds,
)
from tiergate.types import ChatRequest, Message, TextPart, ToolCall, ToolResult

KINDS = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]
SAMPLES = {
    "EMAIL_ADDRESS": "ann.lee@example.com",
    "PHONE_NUMBER": "+44 20 7946 0958",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89370400440532013000",
    "US_SSN": "219-09-9999",
    "IP_ADDRESS": "192.168.10.24",
}


@pytest.fixture(scope="module")
def inspector() -> SovereigntyInspector:
    return SovereigntyInspector(
        SovereigntyConfig(markers=["CONFIDENTIAL", "internal only", r"re:PRJ-\d{4}"], pii=KINDS)
    )


@pytest.fixture(scope="module")
def redactor() -> SovereigntyInspector:
    return SovereigntyInspector(SovereigntyConfig(markers=["CONFIDENTIAL"], pii=KINDS, action="redact"))


def ask(*texts: str, system: str | None = None, metadata: dict[str, Any] | None = None) -> ChatRequest:
    messages = [Message.text("user", t) for t in texts]
    return ChatRequest(model="auto", messages=messages, system=system, metadata=metadata or {})


def verdict(inspector: SovereigntyInspector, request: ChatRequest, header: str | None = None) -> Finding:
    return inspector.inspect(request, key_sovereign=False, header=header)


# --- caller flags ------------------------------------------------------------------------------------


def test_plain_request_is_not_sovereign(inspector: SovereigntyInspector) -> None:
    assert verdict(inspector, ask("Summarise the 3 points of this memo.")) == Finding(False)


def test_key_header_and_metadata_flags(inspector: SovereigntyInspector) -> None:
    req = ask("hello", metadata={METADATA_KEY: "true"})
    got = inspector.inspect(req, key_sovereign=True, header="Yes")
    assert got == Finding(
        True, "route", ("policy:sovereign:key", "policy:sovereign:header", "policy:sovereign:metadata")
    )


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", " true "])
def test_header_says_yes(inspector: SovereigntyInspector, value: str) -> None:
    assert verdict(inspector, ask("hi"), header=value).reasons == ("policy:sovereign:header",)


@pytest.mark.parametrize("value", ["false", "0", "no", "off", ""])
def test_header_says_no(inspector: SovereigntyInspector, value: str) -> None:
    assert not verdict(inspector, ask("hi"), header=value).sovereign


@pytest.mark.parametrize(("value", "sovereign"), [(True, True), ("true", True), (False, False), ("false", False)])
def test_metadata_flag_in_either_dialect(inspector: SovereigntyInspector, value: object, sovereign: bool) -> None:
    got = verdict(inspector, ask("hi", metadata={"user_id": "u1", METADATA_KEY: value}))
    assert got.sovereign is sovereign


def test_bad_flags_are_the_callers_fault(inspector: SovereigntyInspector) -> None:
    with pytest.raises(InvalidRequest, match="x-tiergate-sovereign: expected true or false"):
        verdict(inspector, ask("hi"), header="maybe")
    with pytest.raises(InvalidRequest, match=r"metadata\.tiergate_sovereign: expected true or false"):
        verdict(inspector, ask("hi", metadata={METADATA_KEY: 1}))


def test_flagged_requests_are_held_in_even_with_redact(redactor: SovereigntyInspector) -> None:
    got = redactor.inspect(ask(f"mail {SAMPLES['EMAIL_ADDRESS']}"), key_sovereign=True, header=None)
    assert (got.action, got.reasons) == ("route", ("policy:sovereign:key",))


# --- markers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["This is Confidential.", "(CONFIDENTIAL)", "for INTERNAL\n  ONLY use", "see prj-0042 notes"]
)
def test_markers_match(inspector: SovereigntyInspector, text: str) -> None:
    assert verdict(inspector, ask(text)) == Finding(True, "route", ("policy:sovereign:marker",))


@pytest.mark.parametrize("text", ["confidentiality matters", "nonconfidential", "internal use", "PRJ-12"])
def test_markers_are_whole_words(inspector: SovereigntyInspector, text: str) -> None:
    assert not verdict(inspector, ask(text)).sovereign


def test_a_bad_marker_pattern_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match=r"markers\.1: not a valid regular expression .*'re:' prefix"):
        compile_markers(["ok", "re:(unclosed"])


def test_marker_patterns_keep_their_own_groups_and_flags() -> None:
    patterns = compile_markers(["Blue Falcon", r"re:(?x) (\w)\1-x", "re:(?-i:EXACT)"])
    assert len(patterns) == 3
    assert patterns[1].search("a zz-x b")
    assert not patterns[2].search("exact")
    assert patterns[0].search("the blue\tfalcon plan")


def test_no_markers_compile_to_nothing() -> None:
    assert compile_markers([]) == ()
    assert compile_markers(["  "]) == ()


# --- personal data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["(416) 555-0199", "020 7946 0958", "+49 30 901820", "+55 11 91234-5678"])
def test_phone_numbers_of_several_regions(inspector: SovereigntyInspector, number: str) -> None:
    assert verdict(inspector, ask(f"call me on {number} tonight")).entity_kinds == ("PHONE_NUMBER",)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_found_and_named_never_shown(inspector: SovereigntyInspector, kind: str) -> None:
    got = verdict(inspector, ask(f"Please process {SAMPLES[kind]} today."))
    assert got == Finding(True, "route", (f"policy:sovereign:pii={kind}",), (kind,))


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "IBAN DE89370400440532013001",  # fails the checksum
        "mail ann@example.invalidtld",  # no such top-level domain
        "order 219099999 shipped",  # a bare nine digits with no context
        "The order 12345678 shipped on 2024-05-01 to 3 sites, version 3.11.7, 1,234,567 users, at 10:30",
    ],
)
def test_checks_reject_lookalikes(inspector: SovereigntyInspector, text: str) -> None:
    assert verdict(inspector, ask(text)).entity_kinds == ()


def test_context_words_lift_a_weak_match(inspector: SovereigntyInspector) -> None:
    assert verdict(inspector, ask("her ssn: 219099999")).entity_kinds == ("US_SSN",)


def test_every_text_of_the_request_is_read(inspector: SovereigntyInspector) -> None:
    card, mail, ip = SAMPLES["CREDIT_CARD"], SAMPLES["EMAIL_ADDRESS"], SAMPLES["IP_ADDRESS"]
    call = ToolCall("t1", "lookup", json.dumps({"q": f"line\n{mail}", "n": 4111111111111111}))
    req = ChatRequest(
        model="auto",
        system=f"The user's card is {card}.",
        messages=[
            Message.text("user", "hi"),
            Message("assistant", (TextPart("looking"), call)),
            Message("tool", (ToolResult("t1", f"from {ip}"),)),
        ],
    )
    got = verdict(inspector, req)
    assert got.entity_kinds == ("CREDIT_CARD", "EMAIL_ADDRESS", "IP_ADDRESS")
    assert got.reasons == ("policy:sovereign:pii=CREDIT_CARD,EMAIL_ADDRESS,IP_ADDRESS",)


def test_markers_and_pii_both_give_reasons(inspector: SovereigntyInspector) -> None:
    got = verdict(inspector, ask(f"CONFIDENTIAL: pay to {SAMPLES['IBAN_CODE']}"))
    assert got.reasons == ("policy:sovereign:marker", "policy:sovereign:pii=IBAN_CODE")


def test_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown kind 'PERSON'; use some of .*EMAIL_ADDRESS.*NER model"):
        PiiDetector(["EMAIL_ADDRESS", "PERSON"])
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN"} <= pii_kinds()


def test_email_check_never_calls_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    detector = PiiDetector(["EMAIL_ADDRESS"])
    assert [s.kind for s in detector.find("write to ann@example.org")] == ["EMAIL_ADDRESS"]


def test_findings_are_remembered_by_digest() -> None:
    detector = PiiDetector(["EMAIL_ADDRESS"])
    first = detector.find("ann@example.com")
    assert detector.find("ann@example.com") is first
    assert all(isinstance(k, bytes) for k in detector._cache)


def test_no_pii_configured_needs_no_detector() -> None:
    inspector = SovereigntyInspector(SovereigntyConfig())
    req = ask(f"mail {SAMPLES['EMAIL_ADDRESS']}")
    assert verdict(inspector, req) == Finding(False)
    redacted, restorer = inspector.redact(req)
    assert redacted is req
    assert len(restorer) == 0


# --- redact mode -------------------------------------------------------------------------------------


def test_pii_alone_is_redacted(redactor: SovereigntyInspector) -> None:
    req = ask(f"Mail {SAMPLES['EMAIL_ADDRESS']} the card {SAMPLES['CREDIT_CARD']}")
    got = verdict(redactor, req)
    assert got == Finding(True, "redact", ("policy:redact:pii=CREDIT_CARD,EMAIL_ADDRESS",), got.entity_kinds)
    redacted, restorer = redactor.redact(req)
    assert redacted.messages[0].text_content == "Mail <EMAIL_ADDRESS_1> the card <CREDIT_CARD_1>"
    assert restorer.restore(redacted.messages[0].text_content) == req.messages[0].text_content


def test_a_marker_cannot_be_redacted(redactor: SovereigntyInspector) -> None:
    got = verdict(redactor, ask(f"CONFIDENTIAL: mail {SAMPLES['EMAIL_ADDRESS']}"))
    assert (got.action, got.reasons) == ("route", ("policy:sovereign:marker", "policy:sovereign:pii=EMAIL_ADDRESS"))


def test_redacted_tool_arguments_stay_json(redactor: SovereigntyInspector) -> None:
    mail = SAMPLES["EMAIL_ADDRESS"]
    args = json.dumps({"to": f"line\n{mail}", "card": 4111111111111111, "n": 2})
    req = ChatRequest(model="auto", messages=[Message("assistant", (ToolCall("t1", "send", args),))])
    redacted, restorer = redactor.redact(req)
    out = redacted.messages[0].tool_calls[0].arguments
    assert json.loads(out) == {"to": "line\n<EMAIL_ADDRESS_1>", "card": "<CREDIT_CARD_1>", "n": 2}
    assert json.loads(restorer.restore(out, json=True)) == {"to": f"line\n{mail}", "card": "4111111111111111", "n": 2}


# --- property: injected values never leave ------------------------------------------------------------


def _luhn(body: str) -> str:
    total = sum(sum(divmod(int(d) * (2 if i % 2 == 0 else 1), 10)) for i, d in enumerate(reversed(body)))
    return body + str(-total % 10)


def _iban(bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    return f"DE{98 - int(digits) % 97:02d}{bban}"


_values = st.one_of(
    st.tuples(
        st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?", fullmatch=True), st.sampled_from(["com", "org", "de", "io"])
    ).flatmap(lambda t: st.from_regex(r"[a-z]{2,10}", fullmatch=True).map(lambda d: f"{t[0]}@{d}.{t[1]}")),
    st.from_regex(r"4[0-9]{14}", fullmatch=True)
    .map(_luhn)
    .map(lambda c: " ".join(c[i : i + 4] for i in (0, 4, 8, 12))),
    st.from_regex(r"[0-9]{18}", fullmatch=True).map(_iban),
    st.tuples(st.integers(1, 665), st.integers(1, 99), st.integers(1, 9999))
    .map(lambda t: f"{t[0]:03d}-{t[1]:02d}-{t[2]:04d}")
    .filter(lambda ssn: len(set(ssn) - {"-"}) > 1 and ssn not in ("123-45-6789", "078-05-1120")),
    st.tuples(*[st.integers(1, 254)] * 4).map(lambda t: ".".join(map(str, t))),
    st.integers(0, 999).map(lambda n: f"+44 20 7946 0{n:03d}"),
)
_words = st.lists(
    st.sampled_from(["the", "invoice", "for", "Maria", "is", "due", "please", "check", "and"]), min_size=1
)


@given(chunks=st.lists(st.tuples(_words, _values), min_size=1, max_size=5), tail=_words)
@settings(max_examples=40, deadline=None)
def test_redaction_removes_every_injected_value(
    redactor: SovereigntyInspector, chunks: list[tuple[list[str], str]], tail: list[str]
) -> None:
    text = " ".join(" ".join(words) + " " + value for words, value in chunks) + " " + " ".join(tail)
    req = ask(text, system=f"Context: {chunks[0][1]}")
    assert verdict(redactor, req).action == "redact"
    redacted, restorer = redactor.redact(req)
    for before, after in zip(req.texts(), redacted.texts(), strict=True):
        assert not any(value in after for _, value in chunks)
        assert restorer.restore(after) == before
