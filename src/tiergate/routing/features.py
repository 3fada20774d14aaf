"""Cheap features of a request, next to its embedding, for the learned router.

Each is a few regular-expression passes over the text the router reads (:func:`routing_text`): length,
numbers and mathematical notation, code, non-ASCII script (a proxy for language), multiple-choice options;
and the shape of the conversation (turns, tools, system prompt), which the text alone cannot tell.

    >>> f = dict(zip(FEATURE_NAMES, text_features("What is 12 * 7?").tolist()))
    >>> round(f["log_numbers"], 3), f["choices"]
    (1.099, 0.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from tiergate.types import ChatRequest

Features: TypeAlias = npt.NDArray[np.float32]

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "mean_word_length",
    "digit_ratio",
    "log_numbers",
    "log_math_symbols",
    "log_latex",
    "code_lines",
    "non_ascii_ratio",
    "question_marks",
    "log_sentences",
    "log_lines",
    "choices",
    "log_turns",
    "log_tools",
    "log_system_chars",
)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MATH = re.compile(r"[=+*/^<>%\u00d7\u00f7\u221a\u03c0\u2211\u222b\u2264\u2265]|\s-\s")
_LATEX = re.compile(r"\\[A-Za-z]+|\$")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|return\b|for\b.*:|while\b|if\b.*[:{]|#include|public |"
    r"function\b|const |let |var |SELECT\b|```)|[{};]\s*$",
    re.MULTILINE,
)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CHOICE = re.compile(r"^\s*\(?[A-H][.)]\s", re.MULTILINE)


def routing_text(request: ChatRequest) -> str:
    """The text the router embeds and reads: the last user turn (all the text if there is none)."""
    return request.last_user_text() or "\n".join(request.texts())


def text_features(text: str, *, turns: int = 1, tools: int = 0, system_chars: int = 0) -> Features:
    """The features of one prompt, in the order of :data:`FEATURE_NAMES`."""
    chars = len(text)
    words = text.split()
    non_ascii = sum(1 for c in text if ord(c) > 127)
    values = (
        math.log1p(chars),
        math.log1p(len(words)),
        (sum(len(w) for w in words) / len(words)) if words else 0.0,
        sum(c.isdigit() for c in text) / chars if chars else 0.0,
        math.log1p(len(_NUMBER.findall(text))),
        math.log1p(len(_MATH.findall(text))),
        math.log1p(len(_LATEX.findall(text))),
        min(1.0, len(_CODE_LINE.findall(text)) / (text.count("\n") + 1)),
        non_ascii / chars if chars else 0.0,
        math.log1p(text.count("?")),
        math.log1p(len(_SENTENCE_END.findall(text))),
        math.log1p(text.count("\n")),
        min(1.0, len(_CHOICE.findall(text)) / 4),
        math.log1p(max(0, turns - 1)),
        math.log1p(tools),
        math.log1p(system_chars),
    )
    return np.asarray(values, dtype=np.float32)


def request_features(request: ChatRequest) -> Features:
    """:func:`text_features` of :func:`routing_text`, with the conversation's shape."""
    return text_features(
        routing_text(request),
        turns=len(request.messages),
        tools=len(request.tools),
        system_chars=len(request.system or ""),
    )


def batch_features(texts: Sequence[str]) -> Features:
    """Features of single-turn prompts (training data), shape ``(len(texts), len(FEATURE_NAMES))``."""
    if not texts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.stack([text_features(t) for t in texts])
