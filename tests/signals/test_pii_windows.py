"""Long texts are scanned a window at a time (so no regex call holds the event loop for long): the spans and
markers found are those of the whole text, wherever the windows cut it."""

from __future__ import annotations

import re

import pytest

from tiergate.signals.redact import Span
from tiergate.signals.sovereignty import MARGIN, WINDOW, PiiDetector, search

VALUES = ["ann.lee@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "+1 415 555 2671"]


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector(["EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "PHONE_NUMBER"])


def text_with_values_at(offsets: list[int], length: int) -> str:
    """Prose of ``length`` characters, with one of :data:`VALUES` (in turn) starting at each offset."""
    chars = list(("lorem ipsum dolor sit amet " * (length // 27 + 1))[:length])
    for i, at in enumerate(offsets):
        value = f" {VALUES[i % len(VALUES)]} "
        chars[at : at + len(value)] = value
    return "".join(chars)[:length]


def test_windows_find_what_the_whole_text_holds(detector: PiiDetector) -> None:
    # Values near each cut (31 characters apart at least): before it, straddling it, after it, in the margin.
    cuts = [WINDOW * k for k in (1, 2, 3)]
    offsets = sorted({c + d for c in cuts for d in (-100, -64, -15, 20, MARGIN - 40, MARGIN + 10)} | {10, 5000})
    text = text_with_values_at(offsets, 4 * WINDOW + 100)
    windowed = detector._find(text)
    whole = detector._find_in(text)  # one call over the whole text: the reference
    assert windowed == whole
    assert len(windowed) >= len(offsets)  # every value is there, none lost at a cut
    assert {s.kind for s in windowed} == {"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "PHONE_NUMBER"}
    assert all(isinstance(s, Span) and text[s.start : s.end].strip() for s in windowed)


@pytest.mark.parametrize("shift", [-12, -6, -1, 0, 1, 5])
def test_a_marker_across_a_cut_is_found_once_and_a_cut_word_is_not_one(shift: int) -> None:
    pattern = re.compile(r"(?<!\w)(?:top\s+secret)(?!\w)", re.IGNORECASE)
    filler = "x" * (WINDOW + shift)
    assert search(pattern, filler[:-1] + " TOP SECRET " + "y" * 2 * WINDOW)
    assert not search(pattern, filler + "top secretly " + "y" * 2 * WINDOW)
    assert not search(pattern, filler + "atop secret" + "y" * 2 * WINDOW)
