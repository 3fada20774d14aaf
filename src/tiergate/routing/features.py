"""Cheap features of a request, next to its embedding, for the learned router.

Each is a few regular-expression passes over the text the router reads (:func:`routing_text`): length,
numbers and mathematical notation, code, non-ASCII script (a proxy for language), multiple-choice options;
the shape of the conversation (turns, tools, system prompt), which the text alone cannot tell; and, for a
word problem (a prompt with a quantity and no answer options), a few cues of how many steps it takes
(number words, fractions, clauses, decimals, distinct numbers), which are 0 for any other prompt so that
the head can learn them from word problems alone (:mod:`tiergate.train.router.train`).

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
    "word_problem",
    "wp_log_number_words",
    "wp_log_fractions",
    "wp_log_commas",
    "wp_log_decimals",
    "wp_log_and",
    "wp_log_distinct_numbers",
)
#: The word-problem features: 0 unless ``word_problem`` is 1.
WORD_PROBLEM_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n.startswith("wp_"))

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
_NUMBER_WORD = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|"
    r"thousand|million|half|twice|double|triple|third|quarter|fourth|fifth|dozen)\b",
    re.IGNORECASE,
)
_FRACTION = re.compile(r"\d/\d|\b(?:half|thirds?|quarters?)\b", re.IGNORECASE)
_DECIMAL = re.compile(r"\d\.\d")
_AND = re.compile(r"\band\b", re.IGNORECASE)


def routing_text(request: ChatRequest) -> str:
    """The text the router embeds and reads: the last user turn (all the text if there is none)."""
    return request.last_user_text() or "\n".join(request.texts())


def text_features(text: str, *, turns: int = 1, tools: int = 0, system_chars: int = 0) -> Features:
    """The features of one prompt, in the order of :data:`FEATURE_NAMES`."""
    chars = len(text)
    words = text.split()
    non_ascii = sum(1 for c in text if ord(c) > 127)
    numbers = _NUMBER.findall(text)
    number_words = len(_NUMBER_WORD.findall(text))
    choices = len(_CHOICE.findall(text))
    word_problem = choices == 0 and (bool(numbers) or number_words > 0)
    cues = (
        math.log1p(number_words),
        math.log1p(len(_FRACTION.findall(text))),
        math.log1p(text.count(",")),
        math.log1p(len(_DECIMAL.findall(text))),
        math.log1p(len(_AND.findall(text))),
        math.log1p(len(set(numbers))),
    )
    values = (
        math.log1p(chars),
        math.log1p(len(words)),
        (sum(len(w) for w in words) / len(words)) if words else 0.0,
        sum(c.isdigit() for c in text) / chars if chars else 0.0,
        math.log1p(len(numbers)),
        math.log1p(len(_MATH.findall(text))),
        math.log1p(len(_LATEX.findall(text))),
        min(1.0, len(_CODE_LINE.findall(text)) / (text.count("\n") + 1)),
        non_ascii / chars if chars else 0.0,
        math.log1p(text.count("?")),
        math.log1p(len(_SENTENCE_END.findall(text))),
        math.log1p(text.count("\n")),
        min(1.0, choices / 4),
        math.log1p(max(0, turns - 1)),
        math.log1p(tools),
        math.log1p(system_chars),
        1.0 if word_problem else 0.0,
        *(cues if word_problem else (0.0,) * len(cues)),
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
