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
from typing import TYPE_CHECKING, Protocol

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
    tier: Tier
    score: float
    threshold: float
    reason: str


def decide(router: Router, request: ChatRequest, signals: Signals) -> RouteDecision:
    score = min(1.0, max(0.0, router.score(request, signals)))
    if score >= router.threshold:
        return RouteDecision(Tier.CLOSED, score, router.threshold, f"router:{score:.2f}>={router.threshold:.2f}")
    return RouteDecision(Tier.OPEN, score, router.threshold, f"router:{score:.2f}<{router.threshold:.2f}")
