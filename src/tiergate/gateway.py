"""The pipeline of one request: decide the targets, dispatch to them in order, account for the result.

Edges (``api/``) parse and render; this module never sees a dialect. ``plan`` turns the model name, the
caller and the router's score into an ordered list of targets with the reason; ``complete`` and ``stream``
try them in order, failing over only on retryable upstream errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tiergate.accounting.cost import CostModel
from tiergate.backends.pool import BackendState, Pool
from tiergate.config import Config
from tiergate.dispatch import Dispatcher, Served
from tiergate.errors import NoBackendAvailable, NotFound, UpstreamError
from tiergate.routing import Router, Signals, decide
from tiergate.routing.features import routing_text
from tiergate.signals.encoder import Encoder
from tiergate.types import ChatRequest, ChatResponse, EventStream, StreamEvent, Tier


def estimate_tokens(request: ChatRequest) -> int:
    """A cheap prompt-size estimate (four characters a token) for rules that must not wait for a tokenizer."""
    return sum(len(t) for t in request.texts()) // 4


TIER_NAMES = {"open": Tier.OPEN, "closed": Tier.CLOSED}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key's name and its policy (anonymous on an unauthenticated loopback gateway)."""

    name: str = "anonymous"
    sovereign: bool = False
    default_tier: Tier | None = None


@dataclass(slots=True)
class Plan:
    targets: list[BackendState]
    route: str
    tier: Tier
    score: float | None = None


@dataclass(slots=True)
class Outcome:
    """Where a request was served, and why. ``failovers`` lists the backends that failed before it."""

    backend: BackendState
    route: str
    failovers: list[str] = field(default_factory=list)

    @property
    def tier(self) -> Tier:
        return self.backend.config.tier


class Gateway:
    def __init__(
        self, config: Config, pool: Pool, router: Router, costs: CostModel, encoder: Encoder | None = None
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.pool = pool
        self.dispatcher = Dispatcher(pool, config.dispatch)
        self.router = router
        self.costs = costs

    def models(self) -> list[str]:
        return ["auto", "open", "closed", *self.pool.states]

    async def plan(self, request: ChatRequest, caller: Caller, tier_header: str | None = None) -> Plan:
        """Rules first (explicit tier, header, key default, context window), then the router's score."""
        model = request.model
        named = self.pool.get(model) or (None if model in ("auto", *TIER_NAMES) else self.pool.by_model(model))
        if named is not None:
            return Plan([named], f"explicit:{named.name}", named.config.tier)
        if model not in ("auto", *TIER_NAMES):
            raise NotFound(
                f"model {model!r} does not exist here; use auto, open, closed or one of: {', '.join(self.pool.states)}",
                param="model",
            )
        score: float | None = None
        if model in TIER_NAMES:
            tier, route = TIER_NAMES[model], f"explicit:{model}"
        elif tier_header in TIER_NAMES:
            tier, route = TIER_NAMES[tier_header], f"header:{tier_header}"
        elif caller.default_tier is not None:
            tier, route = caller.default_tier, f"key:{caller.name}:{caller.default_tier.value}"
        elif (too_long := self._over_open_context(request)) is not None:
            tier, route = Tier.CLOSED, f"rule:context>{too_long}"
        elif not (self.pool.has_tier(Tier.OPEN) and self.pool.has_tier(Tier.CLOSED)):
            tier = Tier.OPEN if self.pool.has_tier(Tier.OPEN) else Tier.CLOSED
            route = f"single-tier:{tier.value}"
        else:
            decision = decide(self.router, request, await self.signals(request))
            tier, route, score = decision.tier, decision.reason, decision.score
        return self._targets(tier, route, score)

    async def signals(self, request: ChatRequest) -> Signals:
        """Inspection shared by every stage: one encoder pass per request, only when a stage needs it."""
        signals = Signals(prompt_tokens=estimate_tokens(request))
        if self.router.needs_embedding:
            if self.encoder is None:
                raise RuntimeError("the router needs the encoder, but none was loaded")
            signals.embedding = await self.encoder.embed(routing_text(request))
        return signals

    def _over_open_context(self, request: ChatRequest) -> int | None:
        """The open tier's largest known window, when the prompt cannot fit any open backend."""
        windows = [s.config.context_window for s in self.pool.tier(Tier.OPEN)]
        if not windows or None in windows or not self.pool.has_tier(Tier.CLOSED):
            return None
        largest = max(w for w in windows if w is not None)
        return largest if estimate_tokens(request) + (request.max_tokens or 0) > largest else None

    def _targets(self, tier: Tier, route: str, score: float | None) -> Plan:
        other = Tier.CLOSED if tier is Tier.OPEN else Tier.OPEN
        if not self.pool.has_tier(tier):
            if not self.pool.has_tier(other):
                raise NoBackendAvailable(f"no backend is configured for the {tier.value} tier")
            return Plan(self.pool.tier(other), f"{route};no-{tier.value}-backend", other, score)
        targets = self.pool.tier(tier)
        failover = self.config.policy.failover
        if (tier is Tier.CLOSED and failover.closed_to_open) or (tier is Tier.OPEN and failover.open_to_closed):
            targets = targets + self.pool.tier(other)
        return Plan(targets, route, tier, score)

    async def complete(self, request: ChatRequest, plan: Plan) -> tuple[ChatResponse, Outcome]:
        response, served = await self.dispatcher.complete(request, plan.targets)
        return response, _outcome(plan, served)

    async def stream(self, request: ChatRequest, plan: Plan) -> tuple[StreamEvent, EventStream, Outcome]:
        """Open a stream; failover is transparent until the first event, continuation after it."""
        first, events, served = await self.dispatcher.stream(request, plan.targets)
        return first, events, _outcome(plan, served)

    async def count_tokens(self, request: ChatRequest) -> int:
        """Input tokens by the most authoritative counter configured (closed tier first), else an estimate."""
        for tier in (Tier.CLOSED, Tier.OPEN):
            for state in self.pool.tier(tier):
                counter = getattr(state.backend, "count_tokens", None)
                if counter is None:
                    continue
                try:
                    count: int = await counter(request)
                except UpstreamError:
                    continue
                return count
        return max(1, sum(len(t) for t in request.texts()) // 4)


def _outcome(plan: Plan, served: Served) -> Outcome:
    failed = served.attempts.failed
    route = plan.route
    if failed:
        state = served.state
        what = f"{plan.tier.value}-down" if state.config.tier is not plan.tier else f"{failed[-1]}-down"
        route = f"{route};failover:{what}"
    return Outcome(served.state, route, failed)
