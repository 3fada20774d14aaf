"""The one token estimate, for where no tokenizer answers: four characters a token, rounded up.

Used for rules that must not wait for a tokenizer (the context-window rule), header-time costs, usage a server
did not report (marked ``estimated``), and, with fewer characters a token, the upper bound a budget reserves.

>>> estimate_tokens(9), estimate_tokens(8), estimate_tokens(0)
(3, 2, 0)
>>> estimate_tokens(9, chars_per_token=3)  # the reservation's upper bound
3
"""

from __future__ import annotations

import math

from tiergate.types import ChatRequest

CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int, chars_per_token: int = CHARS_PER_TOKEN) -> int:
    """Tokens in ``chars`` characters of text (a partial token counts as one)."""
    return math.ceil(chars / chars_per_token)


def prompt_chars(request: ChatRequest) -> int:
    """Characters of every text of the prompt: system, turns, tool calls and results."""
    return sum(len(t) for t in request.texts())


def estimate_prompt_tokens(request: ChatRequest, chars_per_token: int = CHARS_PER_TOKEN) -> int:
    return estimate_tokens(prompt_chars(request), chars_per_token)
