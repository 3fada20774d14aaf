"""Baseline routers: fixed tiers, a seeded coin, and a transparent rule of thumb."""

from __future__ import annotations

import random
import re

from tiergate.config import RouterConfig
from tiergate.routing.base import Signals
from tiergate.types import ChatRequest

_HARD = re.compile(
    r"```|\bdef |\bclass |\bprove\b|\bderive\b|\bstep[- ]by[- ]step\b|\banaly[sz]e\b|\bexplain why\b|\bdebug\b",
    re.IGNORECASE,
)


def rules_score(request: ChatRequest) -> float:
    """The rules router's score: long or technical prompts, tools and long conversations lean strong."""
    text = "\n".join(request.texts())
    score = min(len(text) / 8000, 0.45)
    if _HARD.search(text):
        score += 0.4
    if request.tools:
        score += 0.15
    if len(request.messages) > 6:
        score += 0.1
    return min(score, 1.0)


class FixedRouter:
    """Always the same score: ``open`` (0.0) or ``closed`` (1.0)."""

    needs_embedding = False

    def __init__(self, kind: str, value: float) -> None:
        self.kind = kind
        self.threshold = 0.5
        self._value = value

    def score(self, request: ChatRequest, signals: Signals) -> float:
        return self._value


class RandomRouter:
    """A seeded coin: the baseline every router must beat. ``threshold`` = 1 - share of strong calls."""

    kind = "random"
    needs_embedding = False

    def __init__(self, config: RouterConfig) -> None:
        share = config.strong_share if config.strong_share is not None else 0.5
        self.threshold = config.threshold if config.threshold is not None else 1.0 - share
        self._rng = random.Random(config.seed)

    def score(self, request: ChatRequest, signals: Signals) -> float:
        return self._rng.random()


class RulesRouter:
    """Length, code and reasoning cues: long or technical prompts lean to the strong tier."""

    kind = "rules"
    needs_embedding = False

    def __init__(self, config: RouterConfig) -> None:
        self.threshold = config.threshold if config.threshold is not None else 0.5

    def score(self, request: ChatRequest, signals: Signals) -> float:
        return rules_score(request)
