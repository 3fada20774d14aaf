"""Inspect and decide, then dispatch: the targets of one request, in order, and why.

Edges (``api/``) parse and render; this module never sees a dialect. ``plan`` turns the model name, the
caller and the router's score into an ordered list of targets with the reason (admission may then narrow it:
:mod:`tiergate.pipeline.admit`); ``complete`` and ``stream`` hand the plan to :mod:`tiergate.dispatch`, which
tries the targets in order, failing over only on retryable upstream errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Tracer

from tiergate.config import Config
from tiergate.dispatch import Dispatcher, Outbound, Served
from tiergate.dispatch.pool import BackendState, Pool
from tiergate.dispatch.trace import Trace
from tiergate.errors import InvalidRequest, NoBackendAvailable, UpstreamError
from tiergate.offload import off_loop
from tiergate.pipeline.models import TIER_NAMES, ModelNames, Named
from tiergate.pipeline.policy import HardPolicy, PolicyVerdict
from tiergate.routing import RouteDecision, Router, Signals, decide
from tiergate.routing.capacity import Capacity
from tiergate.routing.escalation import problem, wants_structure
from tiergate.routing.features import routing_text
from tiergate.routing.routine import routine_task
from tiergate.signals.encoder import Encoder
from tiergate.tokens import estimate_prompt_tokens, prompt_chars
from tiergate.tracing import stage
from tiergate.types import ChatRequest, ChatResponse, EventStream, StreamEvent, Tier

log = logging.getLogger("tiergate.requests")

REFUSAL = (
    "I can't help with that request. It was flagged by this gateway's safety policy; "
    "contact your administrator if you believe this is a mistake."
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key's name and its policy (anonymous on an unauthenticated loopback gateway)."""

    name: str = "anonymous"
    sovereign: bool = False
    default_tier: Tier | None = None


@dataclass(slots=True)
class Plan:
    """Where a request may go, in order, and why. ``refusal``: answer with it instead of dispatching."""

    targets: list[BackendState]
    route: str
    tier: Tier
    score: float | None = None
    outbound: Outbound | None = None
    sovereign: bool = False
    refusal: str | None = None
    verdict: PolicyVerdict | None = None
    #: The caller named this backend: no escalation or tier change beyond what it asked for.
    pinned: bool = False
    #: The Claude model the caller named (:mod:`tiergate.pipeline.models`), for backends serving any Claude model.
    claude_model: str | None = None
    #: Every try of the request, in order (dispatch fills it; accounting writes it to the ledger and the log).
    trace: Trace = field(default_factory=Trace)
    #: The router's decision and what it read, when the router decided (shadow pairs learn from them).
    decision: RouteDecision | None = None
    signals: Signals | None = None


@dataclass(slots=True)
class Outcome:
    """Where a request was served, and why. ``failovers`` lists the backends that failed before it."""

    backend: BackendState
    route: str
    failovers: list[str] = field(default_factory=list)
    #: What the caller sent that the backend did without (:func:`dropped`), for ``x-tiergate-dropped``.
    dropped: tuple[str, ...] = ()
    #: The model served where it is not the backend's configured one (a Claude model the caller named).
    model: str | None = None

    @property
    def tier(self) -> Tier:
        return self.backend.config.tier


class Gateway:
    def __init__(
        self,
        config: Config,
        pool: Pool,
        router: Router,
        encoder: Encoder | None = None,
        policy: HardPolicy | None = None,
    ) -> None:
        self.config = config
        self.policy = policy or HardPolicy(config.policy)
        self.encoder = encoder
        self.pool = pool
        self.dispatcher = Dispatcher(pool, config.dispatch)
        self.router = router
        #: The app's tracer (:class:`tiergate.tracing.Tracing`); no-op unless tracing is on.
        self.tracer: Tracer = trace.NoOpTracer()
        self.names = ModelNames(pool, config.models)
        self.capacity = Capacity(config.router.capacity)

    def needs_encoder(self, *, always_score: bool = False) -> bool:
        """Does a stage need the encoder? The router when it scores (both tiers present, or ``always_score``, as
        ``tiergate route`` shows the score anyway), the guard when it checks (an open tier)."""
        has_open, has_closed = self.pool.has_tier(Tier.OPEN), self.pool.has_tier(Tier.CLOSED)
        routing = self.router.needs_embedding and (always_score or (has_open and has_closed))
        return routing or (self.policy.guard_enabled and has_open)

    async def load_encoder(self, *, always_score: bool = False) -> None:
        """Load the encoder (off the event loop) where :meth:`needs_encoder` says a stage needs it."""
        if self.encoder is None and self.needs_encoder(always_score=always_score):
            self.encoder = await asyncio.to_thread(Encoder.load)

    def close_encoder(self) -> None:
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None

    def models(self) -> list[str]:
        return ["auto", "open", "closed", *self.pool.states]

    async def plan(
        self, request: ChatRequest, caller: Caller, tier_header: str | None = None, sovereign_header: str | None = None
    ) -> Plan:
        """Hard policy first, then rules (explicit tier, header, key default, context window), then the router."""
        name = self.names.resolve(request.model)  # before the guard: no encoder pass for a 404
        with stage(self.tracer, "inspect") as span:
            verdict = await off_loop(  # a PII scan of a long prompt takes a while: not on the loop
                prompt_chars(request),
                self.policy.inspect,
                request,
                key_sovereign=caller.sovereign,
                header=sovereign_header,
            )
            span.set_attribute("tiergate.sovereign", verdict.sovereign)
            span.set_attribute("tiergate.reasons", list(verdict.reasons))
        with stage(self.tracer, "decide") as span:
            plan = await self._choose(request, name, caller, tier_header, verdict)
            if name.claude_model is not None:
                plan.claude_model = name.claude_model
                plan.targets = self.names.serving_first(plan.targets, name.claude_model)
            span.set_attribute("tiergate.tier", plan.tier.value)
            span.set_attribute("tiergate.route", plan.route)
            if plan.score is not None:
                span.set_attribute("tiergate.router.score", plan.score)
            span.set_attribute("tiergate.guard.flagged", verdict.flagged)
        if verdict.reasons:
            plan.route = ";".join([*verdict.reasons, plan.route])
        plan.targets = [t for t in plan.targets if verdict.allows(t)]
        if request.logprobs is not None and plan.targets:
            _only_logprobs(plan)
        plan.sovereign, plan.outbound, plan.verdict = verdict.sovereign, self.policy.outbound(verdict), verdict
        if verdict.flagged and not plan.targets:
            plan.refusal = REFUSAL
            plan.route += ";guard:refused"
        elif not plan.targets and verdict.sovereign:
            raise NoBackendAvailable(
                f"no in-perimeter backend can take this sovereign request ({';'.join(verdict.reasons)}); "
                "it is never sent outside the perimeter"
            )
        elif not plan.targets:
            raise NoBackendAvailable(f"no backend may take this request ({plan.route})")
        return plan

    async def _choose(
        self, request: ChatRequest, name: Named, caller: Caller, tier_header: str | None, verdict: PolicyVerdict
    ) -> Plan:
        named = name.backend
        eligible = {t for t in (Tier.OPEN, Tier.CLOSED) if any(verdict.allows(s) for s in self.pool.tier(t))}
        signals: Signals | None = None
        if self.policy.guard_enabled and Tier.OPEN in eligible:  # the guard sees every request the open tier may
            with stage(self.tracer, "guard"):
                signals = await self.signals(request, guard=True)
                assert signals.states is not None
                known = {routing_text(request).strip(): signals.states}
                await self.policy.judge(verdict, request, self.encoder, known)
            if verdict.flagged:
                if verdict.action == "closed" and any(verdict.allows(s) for s in self.pool.tier(Tier.CLOSED)):
                    return Plan(self.pool.tier(Tier.CLOSED), "guard:closed", Tier.CLOSED)
                return Plan([], "guard", Tier.OPEN)
        if named is not None:
            if not verdict.allows(named) and verdict.sovereign:  # the caller's own contradiction: no retry helps
                raise InvalidRequest(
                    f"model: backend {named.name!r} is outside the perimeter and this request is sovereign "
                    f"({';'.join(verdict.reasons)}); use an in-perimeter backend",
                    param="model",
                )
            return Plan([named], name.route, named.config.tier, pinned=True)
        score: float | None = None
        if name.tier is not None:
            tier, route = name.tier, name.route
        elif tier_header in TIER_NAMES:
            tier, route = TIER_NAMES[tier_header], f"header:{tier_header}"
        elif caller.default_tier is not None:
            tier, route = caller.default_tier, f"key:{caller.name}:{caller.default_tier.value}"
        elif (too_long := self._over_open_context(request)) is not None and Tier.CLOSED in eligible:
            tier, route = Tier.CLOSED, f"rule:context>{too_long}"
        elif (
            request.model == "auto"
            and (task := routine_task(routing_text(request))) is not None
            and Tier.OPEN in eligible
        ):
            tier, route = Tier.OPEN, f"rule:routine:{task}"
        elif len(eligible) < 2:
            tier = Tier.OPEN if Tier.OPEN in eligible or not eligible else Tier.CLOSED
            route = f"single-tier:{tier.value}"
        else:
            signals = signals or await self.signals(request)
            threshold, moved = self.capacity.threshold(self.router, self.pool)
            decision = decide(self.router, request, signals, threshold)
            route = decision.reason if moved is None or decision.fallback else f"{decision.reason};{moved}"
            plan = self._targets(decision.tier, route, decision.score)
            plan.decision, plan.signals = decision, signals
            return plan
        return self._targets(tier, route, score)

    async def signals(self, request: ChatRequest, *, guard: bool = False) -> Signals:
        """Inspection shared by every stage: one encoder pass per request, only when a stage needs it."""
        signals = Signals()
        if self.router.needs_embedding or guard:
            if self.encoder is None:
                raise RuntimeError("the router or guard needs the encoder, but none was loaded")
            if guard:  # the guard also reads intermediate layers of the same run
                signals.states = await self.encoder.embed_layers(routing_text(request))
                signals.embedding = signals.states[0]
            else:
                signals.embedding = await self.encoder.embed(routing_text(request))
        return signals

    def _over_open_context(self, request: ChatRequest) -> int | None:
        """The open tier's largest known window, when the prompt cannot fit any open backend."""
        windows = [s.config.context_window for s in self.pool.tier(Tier.OPEN)]
        if not windows or None in windows or not self.pool.has_tier(Tier.CLOSED):
            return None
        largest = max(w for w in windows if w is not None)
        return largest if estimate_prompt_tokens(request) + (request.max_tokens or 0) > largest else None

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
        request = _for_dispatch(request, plan)
        try:
            response, served = await self.dispatcher.complete(request, plan.targets, plan.outbound, plan.trace)
        except UpstreamError as exc:
            raise _in_perimeter(plan, exc) from exc
        outcome = _outcome(plan, served, request)
        if outcome.tier is Tier.OPEN and self.config.router.escalate and not plan.pinned and wants_structure(request):
            why = problem(request, response)
            closed = [s for s in self.pool.tier(Tier.CLOSED) if plan.verdict is None or plan.verdict.allows(s)]
            if why is not None and closed:
                try:
                    response, served = await self.dispatcher.complete(
                        request, closed, plan.outbound, plan.trace, purpose="escalate"
                    )
                except UpstreamError:
                    return response, outcome  # the open answer stands; the caller still gets an answer
                escalated = _outcome(plan, served, request)
                escalated.route = f"{outcome.route};escalated:{why}"
                escalated.failovers = outcome.failovers + escalated.failovers
                return response, escalated
        return response, outcome

    async def stream(self, request: ChatRequest, plan: Plan) -> tuple[StreamEvent, EventStream, Outcome]:
        """Open a stream; failover is transparent until the first event, continuation after it.

        ``events`` yields the whole stream, ``first`` included (returned apart for callers that peek).
        """
        request = _for_dispatch(request, plan)
        try:
            first, events, served = await self.dispatcher.stream(request, plan.targets, plan.outbound, trace=plan.trace)
        except UpstreamError as exc:
            raise _in_perimeter(plan, exc) from exc
        outcome = _outcome(plan, served, request)
        return first, _follow(events, served, outcome), outcome


#: Routes by which the caller chose the tier (a model or backend name, a header, its key, a model rule).
_CALLERS_CHOICE = ("explicit:", "header:", "key:", "model:", "model-rule:")


def _only_logprobs(plan: Plan) -> None:
    """Keep the targets that return log probabilities. Where the tier the caller chose has none, or no target
    has any, a 400 that says so, never an answer without them; where the gateway chose the tier, the other one."""
    able = [t for t in plan.targets if t.backend.capabilities.logprobs]
    chosen = [t.name for t in plan.targets if t.config.tier is plan.tier]
    forced = plan.pinned or any(part.startswith(_CALLERS_CHOICE) for part in plan.route.split(";"))
    if not able or (forced and able[0].config.tier is not plan.tier):
        names = ", ".join(chosen if able else [t.name for t in plan.targets])
        raise InvalidRequest(
            f"logprobs: {names} cannot return log probabilities; OpenAI-compatible backends (kind: openai, "
            "e.g. vLLM) can: ask for one of those, or leave logprobs out",
            param="logprobs",
        )
    if able[0] is not plan.targets[0]:
        plan.route += ";needs:logprobs"
    plan.targets = able


def _for_dispatch(request: ChatRequest, plan: Plan) -> ChatRequest:
    """The request as backends get it: with the Claude model the caller named, where it named one."""
    if plan.claude_model is None or request.claude_model == plan.claude_model:
        return request
    return dataclasses.replace(request, claude_model=plan.claude_model)


def _in_perimeter(plan: Plan, exc: UpstreamError) -> UpstreamError:
    """For a sovereign request, say plainly that no in-perimeter backend could answer."""
    if not plan.sovereign or not exc.retryable:
        return exc
    return NoBackendAvailable(f"no in-perimeter backend is available for this sovereign request: {exc.message}")


async def _follow(events: EventStream, served: Served, outcome: Outcome) -> EventStream:
    """Keep ``outcome`` true to the stream: when a broken stream is continued on another backend, the request
    was served by the backend that finished it (ledger row, metrics), and its route says so."""
    try:
        async for ev in events:
            if served.state is not outcome.backend:
                outcome.route += f";continued:{served.state.name}"
                outcome.backend = served.state
                outcome.failovers = list(served.attempts.failed)
            yield ev
    finally:
        await events.aclose()


def dropped(request: ChatRequest, state: BackendState) -> tuple[str, ...]:
    """What ``request`` carries that the backend of ``state`` does without: nothing for a backend that takes the
    caller's own body; else what the canonical model does not carry (``thinking``, ``cache_control``, ...), and
    the canonical fields the backend ignores (Claude has no ``seed``).

    Nothing here is an error: a backend answers without what it has no translation for, and the response says so.
    """
    caps = state.backend.capabilities
    native = request.native is not None and caps.native is request.native.dialect and request.native.matches(request)
    ignored = {name for name in caps.ignores if getattr(request, name, None) not in (None, (), {})}
    return tuple(sorted(ignored.union(() if native else request.unmodelled)))


def _outcome(plan: Plan, served: Served, request: ChatRequest) -> Outcome:
    failed = served.attempts.failed
    route = plan.route
    if failed:
        state = served.state
        what = f"{plan.tier.value}-down" if state.config.tier is not plan.tier else f"{failed[-1]}-down"
        route = f"{route};failover:{what}"
    if served.tried is not None and served.tried.purpose == "hedge":  # a hedge answered first
        route = f"{route};hedge:{served.state.name}"
    named = plan.claude_model is not None and served.state.backend.capabilities.serves_named_models
    return Outcome(served.state, route, failed, dropped(request, served.state), plan.claude_model if named else None)
