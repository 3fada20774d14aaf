"""Model names: what a caller's ``model`` stands for, and why.

In this order (the reason goes into ``x-tiergate-route``):

1. a backend's ``name``: that backend, pinned (``explicit:claude``);
2. ``open`` or ``closed``: that tier (``explicit:open``); ``auto``: the router decides;
3. a model-name rule of the configuration (``models: [{match: "claude-haiku-*", tier: open}]``, first match
   wins): that tier (``model-rule:claude-haiku-*->open``);
4. a Claude model name (``claude-sonnet-4-5-20250929``, ``claude-haiku-4-5``, ``claude-opus-4-5``, any
   ``claude-*``): the closed tier (``model:claude->closed``), backends serving that model first; with no closed
   backend configured at all, the open tier (``model:claude-unavailable->open``), so that a Claude client such
   as Claude Code pointed at an open-weight gateway still works;
5. the model id a backend serves (``meta-llama/Llama-3.1-8B-Instruct``): that backend, pinned;
6. anything else: a 404 naming what the gateway serves.

A Claude model name is served as named wherever it lands on a backend that serves any Claude model (Anthropic's
API: :attr:`~tiergate.backends.base.Capabilities.serves_named_models`), and priced as that model; Bedrock and
Vertex serve their configured model.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from tiergate.accounting.prices import normalise_model_name
from tiergate.config import ModelRule
from tiergate.dispatch.pool import BackendState, Pool
from tiergate.errors import NotFound
from tiergate.types import Tier
from tiergate.wire.anthropic import is_claude_model

TIER_NAMES = {"open": Tier.OPEN, "closed": Tier.CLOSED}


@dataclass(frozen=True, slots=True)
class Named:
    """What a model name resolved to: a pinned ``backend``, or a ``tier`` (``None``: the router decides)."""

    route: str = ""
    tier: Tier | None = None
    backend: BackendState | None = None
    #: The Claude model the caller named, for backends that serve any Claude model.
    claude_model: str | None = None


class ModelNames:
    def __init__(self, pool: Pool, rules: list[ModelRule]) -> None:
        self.pool = pool
        self.rules = rules

    def resolve(self, model: str) -> Named:
        """What ``model`` stands for; raises :class:`NotFound` (a 404 in the caller's dialect) for no known name."""
        if (backend := self.pool.get(model)) is not None:
            return Named(f"explicit:{backend.name}", backend.config.tier, backend)
        if model == "auto":
            return Named()
        if model in TIER_NAMES:
            return Named(f"explicit:{model}", TIER_NAMES[model])
        claude = model if is_claude_model(model) else None
        for rule in self.rules:
            if fnmatch.fnmatchcase(model, rule.match):
                return Named(f"model-rule:{rule.match}->{rule.tier.value}", rule.tier, claude_model=claude)
        if claude is not None:
            if not self.pool.has_tier(Tier.CLOSED):
                return Named("model:claude-unavailable->open", Tier.OPEN, claude_model=claude)
            return Named("model:claude->closed", Tier.CLOSED, claude_model=claude)
        if (backend := self.pool.by_model(model)) is not None:
            return Named(f"explicit:{backend.name}", backend.config.tier, backend)
        raise NotFound(
            f"model {model!r} does not exist here; use auto, open, closed, a Claude model name (claude-...) "
            f"or one of: {', '.join(self.names())}",
            param="model",
        )

    def names(self) -> list[str]:
        """Backend names and the model ids they serve."""
        out = list(self.pool.states)
        out += [m for m in dict.fromkeys(s.backend.model for s in self.pool.states.values()) if m not in out]
        return out

    def serving_first(self, targets: list[BackendState], claude_model: str) -> list[BackendState]:
        """``targets`` with the backends whose configured model is ``claude_model`` (dated or not) first."""
        wanted = normalise_model_name(claude_model)
        return sorted(targets, key=lambda s: normalise_model_name(s.backend.model) != wanted)
