"""The judge's rubric, verdicts in both orders, and the fake judge the loop's tests use."""

from __future__ import annotations

import pytest

from tests.fakes.judge import SimulatedTiers, verdict_for
from tiergate.learning.judge import RUBRIC, answer_text, combine, judge_request, parse_verdict
from tiergate.types import ChatRequest, ChatResponse, Message, StopReason, TextPart, ToolCall, Usage


def test_a_verdict_is_the_last_marker_and_nothing_else() -> None:
    assert parse_verdict("A is wrong about X. [[B]]") == "B"
    assert parse_verdict("I first thought [[A]] but on reflection [[ C ]]") == "C"
    assert parse_verdict("Assistant A is better.") is None
    assert parse_verdict("[[D]]") is None


@pytest.mark.parametrize(
    ("open_first", "open_second", "scores"),
    [
        ("A", "B", (1.0, 0.0)),  # the open answer won in both positions
        ("B", "A", (0.0, 1.0)),  # the closed answer won in both positions
        ("A", "A", (0.5, 0.5)),  # the first position always wins: position bias cancels out
        ("B", "B", (0.5, 0.5)),
        ("C", "C", (0.5, 0.5)),
        ("A", "C", (0.75, 0.25)),
    ],
)
def test_both_orders_cancel_position_bias(open_first: str, open_second: str, scores: tuple[float, float]) -> None:
    assert combine(open_first, open_second) == scores  # type: ignore[arg-type]


def test_the_judge_request_shows_both_answers_and_never_names_the_tiers() -> None:
    request = ChatRequest(
        model="auto", system="Be terse.", messages=[Message.text("user", "What is 2+2?")], max_tokens=10
    )
    judged = judge_request(request, "four", "5")
    assert judged.system == RUBRIC
    prompt = judged.messages[0].text_content
    assert "<assistant_a>\nfour\n</assistant_a>" in prompt
    assert "<assistant_b>\n5\n</assistant_b>" in prompt
    assert "[System]\nBe terse." in prompt
    assert "What is 2+2?" in prompt
    assert "open" not in prompt.lower()
    assert "closed" not in prompt.lower()
    assert judged.temperature == 0.0


def test_an_answer_is_read_with_its_tool_calls() -> None:
    response = ChatResponse(
        id="r",
        model="m",
        parts=[TextPart("Let me look."), ToolCall(id="t1", name="search", arguments='{"q": "x"}')],
        stop_reason=StopReason.TOOL_USE,
        usage=Usage(),
    )
    assert answer_text(response) == 'Let me look.\n[tool call search({"q": "x"})]'


def test_the_fake_judge_prefers_the_good_answer() -> None:
    prompt = (
        judge_request(
            ChatRequest(model="auto", messages=[Message.text("user", "q")]), "[quality:bad] x", "[quality:good] y"
        )
        .messages[0]
        .text_content
    )
    assert verdict_for(prompt) == "B"
    assert verdict_for(prompt, position_bias=True) == "A"
    tiers = SimulatedTiers(fail_hidden=1.0, fail_other=0.0, fail_strong=0.0)
    assert tiers.gain("```x = 1```") == 1.0
    assert tiers.gain("plain question") == 0.0
