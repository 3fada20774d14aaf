"""Admit: reserve a request against its key's budgets and rate limits, after the plan and before dispatch.

The reservation is an upper estimate: prompt characters / 3 tokens in, ``max_tokens`` (or
``DEFAULT_OUTPUT_TOKENS``) out, priced on the dearest backend the plan may try. A key with
``over_budget: downgrade`` that cannot afford it is served by the open-tier targets of the same plan only,
so hard policy (which chose the eligible targets) still holds; a plan that must stay closed is refused.
The plan is never changed in place: :meth:`Admission.admit` returns the plan to dispatch, and the account
step settles the reservation when the request ends. The limits are kept by a :class:`~tiergate.limits.Limiter`:
in this process, or shared by every replica in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tiergate.accounting.budgets import OverLimit, Reservation
from tiergate.accounting.cost import CostModel
from tiergate.errors import RateLimited
from tiergate.limits import Limiter
from tiergate.pipeline.gateway import Caller, Plan
from tiergate.tokens import estimate_prompt_tokens
from tiergate.types import ChatRequest, Tier, Usage

__all__ = ["DEFAULT_OUTPUT_TOKENS", "Admission", "Admitted", "downgraded", "estimate_usage"]

DEFAULT_OUTPUT_TOKENS = 4096
_CLOSED_BY_POLICY = ("guard:",)  # route reasons that oblige the closed tier: never downgraded


def estimate_usage(chat: ChatRequest) -> Usage:
    prompt = estimate_prompt_tokens(chat, chars_per_token=3) + 8 * len(chat.messages) + 64 * len(chat.tools)
    return Usage(input_tokens=prompt, output_tokens=chat.max_tokens or DEFAULT_OUTPUT_TOKENS, estimated=True)


def downgraded(plan: Plan) -> Plan | None:
    """The plan restricted to its open-tier targets, or ``None`` where policy forbids or none exist."""
    if any(reason in plan.route for reason in _CLOSED_BY_POLICY):
        return None
    targets = [t for t in plan.targets if t.config.tier is Tier.OPEN]
    if not targets:
        return None
    if len(targets) == len(plan.targets):
        return plan
    return replace(plan, targets=targets, route=f"{plan.route};budget:downgrade", tier=Tier.OPEN)


@dataclass(frozen=True, slots=True)
class Admitted:
    """The plan to dispatch (the planned one, or its open-tier downgrade) and the reservation to settle."""

    plan: Plan
    reservation: Reservation | None = None


class Admission:
    def __init__(self, limiter: Limiter, costs: CostModel) -> None:
        self.limiter = limiter
        self.costs = costs

    async def admit(self, caller: Caller, chat: ChatRequest, plan: Plan) -> Admitted:
        """Reserve this request against its key's limits.

        Raises :class:`RateLimited` (429, in the caller's dialect) when a limit would be broken, and its
        :class:`~tiergate.errors.LimitsUnavailable` (503) when shared limits cannot be checked and fail closed.
        """
        if self.limiter.limits(caller.name) is None:
            return Admitted(plan)
        usage = estimate_usage(chat)
        fallback = downgraded(plan)
        try:
            reservation = await self.limiter.reserve(
                caller.name,
                self._worst(plan, usage),
                usage.input_tokens + usage.output_tokens,
                fallback_usd=None if fallback is None else self._worst(fallback, usage),
            )
        except OverLimit as exc:
            raise RateLimited(exc.message, retry_after=exc.retry_after) from exc
        if reservation is not None and reservation.downgraded and fallback is not None:
            return Admitted(fallback, reservation)
        return Admitted(plan, reservation)

    def _worst(self, plan: Plan, usage: Usage) -> float:
        return max((self.costs.cost(t.config, usage).usd for t in plan.targets), default=0.0)
