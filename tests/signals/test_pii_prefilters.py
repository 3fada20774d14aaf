"""The PII detector's pre-filters skip only recognizers that could not have matched: the findings with and
without them are the same, on real prompts, on texts holding every kind, and on near misses of those."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.signals.sovereignty import PiiDetector, pii_kinds
from tiergate.train.guard.data import Corpus, load_corpus

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PER_SOURCE = 100  # real texts read from each source of the data folder

#: Values of every kind, each found when written after ``Note:`` (context words where the kind needs them).
EVERY_KIND = {
    "CREDIT_CARD": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "CRYPTO": ["1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
    "DATE_TIME": ["2024-01-31", "01/31/2024", "31.01.2024", "31-JAN-2024", "JAN-2024", "2024-01-31T10:20:30Z"],
    "EMAIL_ADDRESS": ["ann.lee@example.com"],
    "IBAN_CODE": ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"],
    "IP_ADDRESS": ["192.168.10.24", "2001:db8::1", "fe80::1ff:fe23:4567:890a", "::ffff:192.0.2.1", "10.0.0.0/8"],
    "MAC_ADDRESS": ["00:1A:2B:3C:4D:5E", "001a.2b3c.4d5e", "00-1a-2b-3c-4d-5e"],
    "MEDICAL_LICENSE": ["BB1388568", "AB1234563"],
    "PHONE_NUMBER": ["+44 20 7946 0958", "(415) 555-0132", "+1 415 555 0132"],
    "UK_NHS": ["943 476 5919", "9434765919"],
    "URL": ["https://example.com/a?b=1", "www.example.org", "'example.de'", "see docs.python.org"],
    "US_BANK_NUMBER": ["account 12345678901"],
    "US_DRIVER_LICENSE": ["driver license A1234567", "driving permit 12ABC34567"],
    "US_ITIN": ["tin 912701234"],
    "US_PASSPORT": ["passport 912803456", "passport A12345678"],
    "US_SSN": ["219-09-9999", "ssn 219 09 9999", "social security 219099999"],
    "UUID": ["123e4567-e89b-12d3-a456-426614174000"],
}
NEAR = "7b-.Q: "


@pytest.fixture(scope="module")
def detectors() -> tuple[PiiDetector, PiiDetector]:
    kinds = sorted(pii_kinds())
    return PiiDetector(kinds), PiiDetector(kinds, prefilter=False)


def same_findings(detectors: tuple[PiiDetector, PiiDetector], texts: list[str]) -> None:
    fast, slow = detectors
    for text in texts:
        assert fast.find(text) == slow.find(text), text


def test_every_kind_has_a_prefilter_for_these_patterns(detectors: tuple[PiiDetector, PiiDetector]) -> None:
    # A presidio whose patterns differ from those the pre-filters were read off turns them off: say so here.
    fast, slow = detectors
    assert {kind for kind, _, need in fast._steps if need is None} == set()
    assert {kind for kind, _, need in slow._steps if need is not None} == set()


def test_every_kind_is_found_with_the_prefilters(detectors: tuple[PiiDetector, PiiDetector]) -> None:
    assert set(EVERY_KIND) == pii_kinds()
    for kind, values in EVERY_KIND.items():
        for value in values:
            assert kind in {s.kind for s in detectors[0].find(f"Note: {value}, thanks.")}, value


def test_same_findings_on_real_prompts(detectors: tuple[PiiDetector, PiiDetector]) -> None:
    corpus = load_corpus(DATA, augment=False)
    texts = [t for source in dict.fromkeys(corpus.sources.tolist()) for t in _first(corpus, source)]
    assert len(texts) > 1000
    same_findings(detectors, texts)


def test_same_findings_on_every_kind_and_its_near_misses(detectors: tuple[PiiDetector, PiiDetector]) -> None:
    texts = []
    for values in EVERY_KIND.values():
        for value in values:
            texts.append(f"Note: {value}, thanks.")
            for i in range(len(value)):  # each character dropped, and changed for a digit, a letter or a separator
                swap = NEAR[i % len(NEAR)]
                texts += [f"Note: {value[:i]}{value[i + 1 :]}.", f"Note: {value[:i]}{swap}{value[i + 1 :]}."]
    same_findings(detectors, texts)


_pieces = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=12),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=8),
    st.sampled_from(["JAN", "Dec", "bc1", "www", "com", "org", "ssn", "card", "call", "a", "Z", "T", "@"]),
    st.text(alphabet=" -./:()+'\"[]\n", min_size=1, max_size=2),
)


@given(st.lists(_pieces, min_size=1, max_size=16).map("".join))
@settings(max_examples=300, deadline=None)
def test_same_findings_on_digit_and_separator_soup(detectors: tuple[PiiDetector, PiiDetector], text: str) -> None:
    same_findings(detectors, [text])


def _first(corpus: Corpus, source: str) -> list[str]:
    return [corpus.texts[i] for i in (corpus.sources == source).nonzero()[0][:PER_SOURCE]]
