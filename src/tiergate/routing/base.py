"""The router contract: one score in [0, 1], the estimated need for the strong (closed) tier.

A decision compares the score with a threshold: ``score >= threshold`` goes to the closed tier.

    >>> class Always:
    ...     kind = "closed"
    ...     threshold = 0.5
    ...     def score(self, request: ChatRequest, signals: Signals) -> float:
    ...         return 1.0

Routers are built from :class:`~tiergate.config.RouterConfig` through the registry in
``tiergate.routing`` (a plain dict from kind to factory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tiergate.types import ChatRequest, Tier

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(slots=True)
class Signals:
    """What inspection learned about a request, computed once and shared by every stage.

    ``embedding`` is the shared encoder's L2-normalised sentence vector (None when no stage needs it);
    ``states`` the same run's pooled states, that vector first (:meth:`~tiergate.signals.encoder.Encoder.
    embed_layers`), when the guard reads them.
    """

    embedding: npt.NDArray[np.float32] | None = None
    states: npt.NDArray[np.float32] | None = None


class Router(Protocol):
    kind: str
    threshold: float
    #: True when :meth:`score` reads ``signals.embedding`` (the gateway then runs the encoder first).
    needs_embedding: bool

    def score(self, request: ChatRequest, signals: Signals) -> float:
        """The need for the strong tier, in [0, 1]."""
        ...


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """A router's decision. ``ood``: the prompt's distance to the router's training data, where it measures one;
    ``fallback``: the prompt was too far from it, and the tier is the fallback's (the reason says which)."""

    tier: Tier
    score: float
    threshold: float
    reason: str
    ood: float | None = None
    fallback: bool = False


@runtime_checkable
class Decides(Protocol):
    """A router that makes its own decision (the learned router: its out-of-distribution fallback)."""

    def decide(self, request: ChatRequest, signals: Signals, threshold: float | None = None) -> RouteDecision: ...


def decide(router: Router, request: ChatRequest, signals: Signals, threshold: float | None = None) -> RouteDecision:
    """``router``'s decision; ``threshold`` replaces its own (the capacity-aware threshold)."""
    if isinstance(router, Decides):
        return router.decide(request, signals, threshold)
    threshold = router.threshold if threshold is None else threshold
    score = min(1.0, max(0.0, router.score(request, signals)))
    if score >= threshold:
        return RouteDecision(Tier.CLOSED, score, threshold, f"router:{score:.2f}>={threshold:.2f}")
    return RouteDecision(Tier.OPEN, score, threshold, f"router:{score:.2f}<{threshold:.2f}")
