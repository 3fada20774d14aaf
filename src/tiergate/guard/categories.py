"""The hazard category of a flagged request, from the MLCommons AILuminate hazard taxonomy (v1.0).

A flagged request carries one category, so that an operator can act per category: send self-harm to Claude,
which answers with care, refuse weapons outright, let hate speech through to a closed tier only::

    policy:
      guard:
        enabled: true
        on_flag: closed                     # the default action
        categories: {indiscriminate_weapons: refuse, suicide_self_harm: closed, sexual_content: allow}

The category is chosen by a small multinomial head on the flagged window's pooled encoder states (trained by
:mod:`tiergate.train.guard.categories` on the sources' own category labels, ``docs/guard-sources.md``).
``jailbreak`` is not a hazard: it names a wrapper or an injected instruction that asks the model to drop its
rules, whatever it then asks for.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

#: The MLCommons AILuminate v1.0 hazard categories, in its order, then ``jailbreak``.
HAZARDS: tuple[str, ...] = (
    "violent_crimes",
    "non_violent_crimes",
    "sex_related_crimes",
    "child_sexual_exploitation",
    "indiscriminate_weapons",
    "suicide_self_harm",
    "hate",
    "specialized_advice",
    "privacy",
    "intellectual_property",
    "elections",
    "defamation",
    "sexual_content",
)
JAILBREAK = "jailbreak"
CATEGORIES: tuple[str, ...] = (*HAZARDS, JAILBREAK)
#: The category of a flag whose artifact has no category head (an artifact trained before categories).
UNSPECIFIED = "unspecified"

Action: TypeAlias = Literal["closed", "refuse", "allow"]
ACTIONS: tuple[str, ...] = ("closed", "refuse", "allow")

__all__ = ["ACTIONS", "CATEGORIES", "HAZARDS", "JAILBREAK", "UNSPECIFIED", "Action"]
