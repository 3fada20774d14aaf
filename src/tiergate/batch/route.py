"""Route one batch item like a live request: the library call of :mod:`tiergate.batch`.

:func:`route_item` runs the gateway's own inspect and decide (:meth:`Gateway.plan`: hard policy first, then
rules, then the router) and says which *way* the item goes:

- ``live``: dispatched like a live request, through the plan's targets in order (retries and failover
  included); an open-weight backend first in most cases;
- ``message-batch``: the first backend the plan would try declares ``message_batches`` (Claude on the
  first-party API): the item is submitted in a Message Batch at the batch price, with the request as that
  backend may see it (:func:`outbound`: redacted where the policy redacts);
- ``refused``: the guard refused it (the refusal is its answer, as live);
- ``failed``: the line is not a request, or no backend may take it (a sovereign item with no backend inside
  the perimeter): its error is its answer.

A sovereign item's plan only lists backends inside the perimeter, so it can never be a ``message-batch``
item of a backend outside it: hard policy holds exactly as it does live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from tiergate.backends.anthropic import request_json
from tiergate.dispatch.pool import BackendState
from tiergate.errors import TiergateError
from tiergate.pipeline.gateway import Caller, Gateway, Plan
from tiergate.signals.redact import Restorer
from tiergate.types import JSON, ChatRequest

__all__ = ["BATCH_CALLER", "Routed", "Way", "message_batch_params", "outbound", "route_item"]

Way: TypeAlias = Literal["live", "message-batch", "refused", "failed"]
#: Who batch items are routed as when no key is named: no key's policy, ``batch`` in the ledger.
BATCH_CALLER = Caller("batch")


@dataclass(slots=True)
class Routed:
    """Where one item goes and why. ``plan`` is the gateway's plan (``None`` when the item failed before one);
    ``error`` is the failure of a ``failed`` item."""

    way: Way
    plan: Plan | None = None
    error: TiergateError | None = None

    @property
    def target(self) -> BackendState | None:
        """The backend the item goes to first (``None`` for refused and failed items)."""
        return self.plan.targets[0] if self.plan is not None and self.plan.targets else None

    @property
    def tier(self) -> str | None:
        target = self.target
        if target is not None:
            return target.config.tier.value
        return None if self.plan is None else self.plan.tier.value

    @property
    def route(self) -> str:
        return "" if self.plan is None else self.plan.route

    def to_json(self) -> JSON:
        """What a distributed engine carries between its stages: the way, tier, first backend and route."""
        target = self.target
        return {
            "way": self.way,
            "tier": self.tier,
            "backend": None if target is None else target.name,
            "route": self.route,
            "sovereign": self.plan is not None and self.plan.sovereign,
            "error": None if self.error is None else {"status": self.error.status, "message": self.error.message},
        }


async def route_item(gateway: Gateway, chat: ChatRequest | None, caller: Caller = BATCH_CALLER) -> Routed:
    """Inspect and decide one item as the gateway does a live request (``chat`` ``None``: a line that is not a
    request; such an item is ``failed`` with the error its parser gave, see :func:`tiergate.batch.parse_line`).

        gateway = build_gateway(load_config("tiergate.yaml"))
        await gateway.load_encoder()            # where the router or the guard needs it
        routed = await route_item(gateway, parse_line(line, 0, 1).chat)
        routed.way, routed.tier, routed.route   # ('live', 'open', 'rule:routine:classification')
    """
    if chat is None:
        return Routed("failed")
    try:
        plan = await gateway.plan(chat, caller)
    except TiergateError as exc:
        return Routed("failed", error=exc)
    if plan.refusal is not None:
        return Routed("refused", plan)
    first = plan.targets[0]
    return Routed("message-batch" if first.backend.capabilities.message_batches else "live", plan)


def outbound(routed: Routed, chat: ChatRequest) -> tuple[ChatRequest, Restorer | None]:
    """The item's request as its first backend may receive it (redacted where the policy redacts for a backend
    outside the perimeter), and what restores the answer's placeholders (``None``: nothing to restore)."""
    target = routed.target
    if routed.plan is None or routed.plan.outbound is None or target is None:
        return chat, None
    return routed.plan.outbound(target, chat)


def message_batch_params(routed: Routed, chat: ChatRequest) -> JSON:
    """The Messages API ``params`` of a ``message-batch`` item, for its backend's model (redacted where the
    policy redacts: personal data never leaves the perimeter in a batch either)."""
    target = routed.target
    if routed.way != "message-batch" or target is None:
        raise ValueError(f"a {routed.way} item is not submitted in a Message Batch")
    sent, _ = outbound(routed, chat)
    return request_json(sent, target.backend.model, False)
