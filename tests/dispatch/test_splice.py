"""Splicing a resumed answer onto the text the caller already has: pure, no I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tiergate.dispatch.splice import RESTART_MIN_CHARS, Diverged, Splicer, judge

words = st.text(alphabet="abc xyz\n", min_size=1, max_size=40)


def splice(sent: str, chunks: list[str], *, restarted: bool) -> str:
    s = Splicer(sent, restarted=restarted)
    return "".join(s.feed(c) for c in chunks) + s.finish()


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@given(sent=words, rest=st.text(max_size=40), cuts=st.lists(st.integers(0, 80), max_size=6))
def test_a_restarted_answer_that_repeats_the_text_sent_streams_only_the_rest(
    sent: str, rest: str, cuts: list[int]
) -> None:
    assert splice(sent, chunked(sent + rest, cuts), restarted=True) == rest


@given(sent=words, other=words, cuts=st.lists(st.integers(0, 80), max_size=6))
def test_a_restarted_answer_that_differs_never_passes(sent: str, other: str, cuts: list[int]) -> None:
    assume(not other.startswith(sent))  # that one is no divergence: the test above
    with pytest.raises(Diverged):
        splice(sent, chunked(other, cuts), restarted=True)


@given(sent=words, rest=st.text(max_size=40), cuts=st.lists(st.integers(0, 80), max_size=6))
def test_a_continuation_that_restarted_the_answer_is_skipped_past(sent: str, rest: str, cuts: list[int]) -> None:
    assert splice(sent, chunked(sent + rest, cuts), restarted=False) == rest


def test_a_true_continuation_passes_untouched_and_whitespace_is_not_sent_twice() -> None:
    assert splice("The answer is", [" 42", "."], restarted=False) == " 42."
    assert splice("The answer is ", [" 42."], restarted=False) == "42."  # the prefix went right-stripped
    assert splice("line one\n", ["\n", "\nline two"], restarted=False) == "\nline two"
    assert splice("- a\n", ["- b\n"], restarted=False) == "- b\n"  # shares a short start: still a continuation


def test_a_continuation_that_restarted_and_then_differs_is_a_divergence() -> None:
    sent = "alpha beta gamma delta "
    with pytest.raises(Diverged) as caught:
        splice(sent, ["alpha beta ", "mu nu"], restarted=False)
    assert caught.value.at == len("alpha beta ")
    assert caught.value.at >= RESTART_MIN_CHARS


def test_the_restarted_answer_is_withheld_until_it_covers_the_text_sent() -> None:
    s = Splicer("one two three ", restarted=True)
    assert [s.feed("one "), s.feed("two "), s.feed("three four")] == ["", "", "four"]
    assert judge("one two", "one", restarted=True, ended=False) is None
    with pytest.raises(Diverged):  # ended before covering what the caller has: shorter than the text sent
        judge("one two", "one", restarted=True, ended=True)
