"""Routine, high-volume tasks that the open tier handles well: recognised by their instruction, cheaply.

The learned router was trained on exam-style questions (MMLU, GSM8K); short operational prompts such as
"Translate this into German" lie outside that data and score unreliably. An explicit rule, applied before the
score and named in the route (``rule:routine:translation``), sends them to the open tier.

    >>> routine_task("Translate 'good morning' into French.")
    'translation'
    >>> routine_task("Prove that sqrt(2) is irrational.") is None
    True
"""

from __future__ import annotations

import re

_TASKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "translation",
            r"^\s*(please\s+)?translate\b|\btranslat(e|ion) (it |this |the following )?(in)?to [A-Z]?[a-z]+",
        ),
        ("classification", r"^\s*(please\s+)?(classify|categori[sz]e|label|tag)\b|\bwhich (category|class)\b"),
        ("extraction", r"^\s*(please\s+)?extract\b|\bextract (all|the|every)\b"),
        ("sentiment", r"\bsentiment\b|\bis (this|the following) (review|message|text) (positive|negative)"),
        ("moderation", r"\bis (this|the following) (message|comment|text|post) (spam|toxic|offensive|abusive)\b"),
        ("language-id", r"\bwhat language is\b|\bdetect the language\b|\bidentify the language\b"),
        ("correction", r"^\s*(please\s+)?(fix|correct) (the )?(spelling|grammar|typos?)\b"),
    )
)
#: Longer prompts carry more than a routine instruction: leave them to the router.
MAX_CHARS = 2000


def routine_task(text: str) -> str | None:
    """The routine task ``text`` asks for, if it is one (its instruction, not its length, decides)."""
    if len(text) > MAX_CHARS:
        return None
    return next((name for name, pattern in _TASKS if pattern.search(text)), None)
