"""Judging a shadow pair: a fixed rubric, asked in both orders to cancel position bias.

The judge sees the user's request and the two answers as "Assistant A" and "Assistant B", never which tier wrote
which, and ends its reply with ``[[A]]``, ``[[B]]`` or ``[[C]]`` (a tie), as MT-Bench's pairwise judge does. It
is asked twice, the open tier's answer first and then second; each order scores a win 1, a tie 0.5, a loss 0, and
a tier's outcome is the mean over the two orders (a judge that always picks the first position gives 0.5 each).

    >>> parse_verdict("Both are fine, but A is correct.\\n[[A]]")
    'A'
    >>> combine("A", "B")   # open first: A wins; open second: B wins: the open answer won both times
    (1.0, 0.0)
    >>> combine("A", "A")   # the first position won both times: no preference
    (0.5, 0.5)
"""

from __future__ import annotations

import re
from typing import Literal

from tiergate.types import ChatRequest, ChatResponse, Message

__all__ = ["RUBRIC", "RUBRIC_VERSION", "answer_text", "combine", "judge_request", "parse_verdict"]

RUBRIC_VERSION = "rubric-v1"
RUBRIC = (
    "You are an impartial judge. Compare two AI assistants' answers to the same user request. Judge which "
    "answer better serves the user: correctness first, then helpfulness, relevance, completeness and clarity. "
    "Do not let the order of the answers, their length or their style sway you; an answer that refuses a "
    "harmless request, or that is cut off, is worse. Think briefly if you need to, then end your reply with "
    "exactly one verdict on its own line: [[A]] if Assistant A's answer is better, [[B]] if Assistant B's is "
    "better, [[C]] if they are equally good or equally bad."
)
#: The longest part (conversation, or one answer) the judge is shown, in characters.
MAX_PART_CHARS = 12_000
JUDGE_MAX_TOKENS = 512

Verdict = Literal["A", "B", "C"]
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PART_CHARS else text[:MAX_PART_CHARS] + "\n[... cut ...]"


def conversation_text(request: ChatRequest) -> str:
    """The request as the judge reads it: the system prompt and the turns, labelled."""
    parts = [f"[System]\n{request.system}"] if request.system else []
    for message in request.messages:
        text = message.text_content
        calls = "".join(f"\n[tool call {c.name}({c.arguments})]" for c in message.tool_calls)
        parts.append(f"[{message.role}]\n{text}{calls}")
    return _clip("\n\n".join(parts))


def answer_text(response: ChatResponse) -> str:
    """An answer as the judge reads it: its text, then any tool calls."""
    calls = "".join(f"\n[tool call {c.name}({c.arguments})]" for c in response.tool_calls)
    refusal = f"\n[refused: {response.refusal}]" if response.refusal else ""
    return _clip((response.text + calls + refusal).strip() or "[empty answer]")


def judge_request(request: ChatRequest, first: str, second: str) -> ChatRequest:
    """The judge's request: the rubric, the user's request, ``first`` as Assistant A, ``second`` as B."""
    prompt = (
        f"<user_request>\n{conversation_text(request)}\n</user_request>\n\n"
        f"<assistant_a>\n{first}\n</assistant_a>\n\n<assistant_b>\n{second}\n</assistant_b>\n\n"
        "Which answer is better? End with [[A]], [[B]] or [[C]]."
    )
    return ChatRequest(
        model="auto",
        system=RUBRIC,
        messages=[Message.text("user", prompt)],
        max_tokens=JUDGE_MAX_TOKENS,
        temperature=0.0,
    )


def parse_verdict(text: str) -> Verdict | None:
    """The last ``[[A]]`` / ``[[B]]`` / ``[[C]]`` in the judge's reply; ``None`` when there is none."""
    found = _VERDICT.findall(text)
    if not found:
        return None
    last: Verdict = found[-1]
    return last


def _open_score(verdict: Verdict, open_is: Literal["A", "B"]) -> float:
    if verdict == "C":
        return 0.5
    return 1.0 if verdict == open_is else 0.0


def combine(open_first: Verdict, open_second: Verdict) -> tuple[float, float]:
    """(open, closed) outcomes from the verdict with the open answer as A, then with it as B."""
    score = (_open_score(open_first, "A") + _open_score(open_second, "B")) / 2
    return score, 1.0 - score
