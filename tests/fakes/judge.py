"""Simulated tiers and a fake judge: the router's learning loop against upstreams whose quality is known.

:class:`SimulatedTiers` decides, for each prompt, whether each tier answers it well. The open (weak) tier fails a
*hidden kind* of prompt (``hidden(text)``; by default prompts with a fenced code block) with probability
``fail_hidden`` and other prompts with ``fail_other``; the closed (strong) tier fails any prompt with
``fail_strong``. The draws are fixed per prompt and tier (a hash), so a prompt asked twice gets the same answer
quality. Every answer starts with its quality, ``[quality:good]`` or ``[quality:bad]``, which only the judge
reads.

The judge is a responder for the fake that serves the judge's tier: it recognises the rubric
(``tiergate.learning.judge``), reads ``<assistant_a>`` and ``<assistant_b>``, and ends its reply with ``[[A]]``,
``[[B]]`` or ``[[C]]`` (both good or both bad), or always ``[[A]]`` with ``position_bias`` (the judge the two
orders are there to cancel).

    tiers = SimulatedTiers()
    fake_openai.responder = tiers.responder("open")
    fake_claude.responder = tiers.responder("closed")      # answers, and judges when asked to
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.script import Reply, Step

__all__ = ["SimulatedTiers", "prompt_of", "verdict_for"]

_BLOCK = re.compile(r"<assistant_([ab])>\n(.*?)\n</assistant_\1>", re.DOTALL)
_QUALITY = re.compile(r"\[quality:(good|bad)\]")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping))
    return ""


def prompt_of(body: Any) -> tuple[str, str]:
    """(system prompt, last user text) of an Anthropic or OpenAI request body."""
    if not isinstance(body, Mapping):
        return "", ""
    system = _text(body.get("system", ""))
    user = ""
    for message in body.get("messages", []):
        if not isinstance(message, Mapping):
            continue
        if message.get("role") in ("system", "developer"):
            system += _text(message.get("content"))
        elif message.get("role") == "user":
            user = _text(message.get("content"))
    return system, user


def verdict_for(prompt: str, position_bias: bool = False) -> str:
    """The judge's verdict on a rubric prompt: the better marked answer, ``C`` on a tie."""
    if position_bias:
        return "A"
    answers = {m.group(1): m.group(2) for m in _BLOCK.finditer(prompt)}
    good = {k: "[quality:good]" in v for k, v in answers.items()}
    if good.get("a") == good.get("b"):
        return "C"
    return "A" if good.get("a") else "B"


def _draw(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class SimulatedTiers:
    hidden: Callable[[str], bool] = field(default=lambda text: "```" in text)
    fail_hidden: float = 0.9
    fail_other: float = 0.1
    fail_strong: float = 0.05
    seed: str = "0"
    position_bias: bool = False
    #: Judge requests seen, and answers given per tier (for assertions).
    judged: int = 0
    answered: dict[str, int] = field(default_factory=lambda: {"open": 0, "closed": 0})

    def good(self, tier: str, text: str) -> bool:
        """Whether ``tier`` answers ``text`` well (fixed per prompt and tier)."""
        u = _draw(self.seed, tier, text)
        if tier == "closed":
            return u >= self.fail_strong
        return u >= (self.fail_hidden if self.hidden(text) else self.fail_other)

    def gain(self, text: str) -> float:
        """The true quality gain of the closed tier on ``text`` (1, 0 or -1)."""
        return float(self.good("closed", text)) - float(self.good("open", text))

    def responder(self, tier: str) -> Callable[[Any], Step | None]:
        def respond(body: Any) -> Step | None:
            system, user = prompt_of(body)
            if "impartial judge" in system:
                self.judged += 1
                verdict = verdict_for(user, self.position_bias)
                return Reply(text=f"Having compared both answers: [[{verdict}]]")
            self.answered[tier] += 1
            quality = "good" if self.good(tier, user) else "bad"
            return Reply(text=f"[quality:{quality}] the {tier} tier's answer")

        return respond
