"""Hard policy: what a request is allowed to reach, decided before any cost optimisation.

Two rules, and neither can be overridden by routing, budgets, retries, escalation or failover, because
every target list the gateway builds is filtered here first:

- **sovereignty**: a sovereign request (key, header, metadata, marker, personal data; see
  :mod:`tiergate.signals.sovereignty`) may only reach backends inside the perimeter. In ``redact`` mode a
  request whose only finding is personal data may leave, with the values replaced by placeholders that are
  restored in the answer.
- **guard**: a request the safety guard flags may not reach an open-weight backend. The flag's hazard category
  sets the action (``policy.guard.categories``, else ``on_flag``): ``closed`` sends it to the closed tier
  where allowed (not sovereign, a closed backend exists), else refuses it; ``refuse`` refuses it; ``allow``
  records the flag and lets it through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tiergate.config import PolicyConfig
from tiergate.dispatch.dispatcher import Outbound
from tiergate.dispatch.pool import BackendState
from tiergate.signals.redact import Restorer
from tiergate.signals.sovereignty import Finding, SovereigntyInspector
from tiergate.types import ChatRequest, Tier


class GuardScore(Protocol):
    """What the policy reads of the guard's result (:class:`tiergate.guard.model.GuardResult`)."""

    @property
    def score(self) -> float: ...
    @property
    def flagged(self) -> bool: ...
    @property
    def threshold(self) -> float: ...
    @property
    def category(self) -> str | None: ...


class SafetyGuard(Protocol):
    """What the policy needs of :class:`tiergate.guard.model.Guard`."""

    threshold: float

    async def check(
        self, request: ChatRequest, encoder: Any, known: Mapping[str, npt.NDArray[np.float32]] | None = None
    ) -> GuardScore: ...


@dataclass(slots=True)
class PolicyVerdict:
    sovereign: bool = False
    redact: bool = False
    reasons: list[str] = field(default_factory=list)
    guard_score: float | None = None
    flagged: bool = False
    #: The flag's hazard category and the action configured for it (``closed`` | ``refuse`` | ``allow``).
    category: str | None = None
    action: str | None = None

    def allows(self, state: BackendState) -> bool:
        if self.sovereign and not state.config.in_perimeter:
            return False
        return not (self.flagged and state.config.tier is Tier.OPEN)


class HardPolicy:
    def __init__(self, config: PolicyConfig, guard: SafetyGuard | None = None) -> None:
        self.config = config
        self.sovereignty = SovereigntyInspector(config.sovereignty)
        self.guard = guard

    @property
    def guard_enabled(self) -> bool:
        return self.config.guard.enabled and self.guard is not None

    def inspect(self, request: ChatRequest, *, key_sovereign: bool, header: str | None) -> PolicyVerdict:
        finding: Finding = self.sovereignty.inspect(request, key_sovereign=key_sovereign, header=header)
        return PolicyVerdict(
            sovereign=finding.sovereign and finding.action == "route",
            redact=finding.action == "redact",
            reasons=list(finding.reasons),
        )

    async def judge(
        self, verdict: PolicyVerdict, request: ChatRequest, encoder: Any, known: Mapping[str, npt.NDArray[np.float32]]
    ) -> None:
        """Score the request with the guard (it is bound for the open tier) and record the reason.

        ``known``: texts the encoder already embedded for the router, so that pass is shared.
        """
        assert self.guard is not None
        result = await self.guard.check(request, encoder, known)
        verdict.guard_score = result.score
        if result.flagged:
            verdict.category = result.category
            verdict.action = self.config.guard.action(result.category)
            verdict.flagged = verdict.action != "allow"
            reason = f"guard:{result.score:.2f}>={result.threshold:.2f}:{result.category or 'unspecified'}"
            verdict.reasons.append(reason + (":allow" if verdict.action == "allow" else ""))

    def outbound(self, verdict: PolicyVerdict) -> Outbound | None:
        """What each backend may receive: ``None`` (the request as it is) unless the verdict redacts, then a
        function that redacts for backends outside the perimeter and returns the restorer of the answer."""
        if not verdict.redact:
            return None
        inspector = self.sovereignty

        def outbound(state: BackendState, request: ChatRequest) -> tuple[ChatRequest, Restorer | None]:
            if state.config.in_perimeter:
                return request, None
            redacted, restorer = inspector.redact(request)
            return redacted, restorer

        return outbound
