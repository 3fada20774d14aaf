"""Shadow pairs: a share of routed requests is also answered by the other tier, after the caller has its answer.

For a request the router decided (``router:`` or ``ood:`` routes), :meth:`Learning.select` draws whether to
shadow it (``router.shadow.share``, or ``ood_share`` for out-of-distribution decisions; off by default). The
draw is refused, and counted by reason, when:

- **hard policy** forbids it: the other tier's backends are filtered by the request's policy verdict, so a
  sovereign prompt is never shadowed to a backend outside the perimeter and a flagged one never to the open tier;
  the judge is filtered the same way (a sovereign prompt is never judged outside the perimeter);
- no backend of the other tier is ready (never queue behind live traffic), too many pairs are in flight
  (``max_in_flight``), or the day's learning spend is at ``max_usd_per_day``;
- the caller's key cannot afford the estimate in its monthly budget (shadow and judge cost are charged to it, as
  learning cost: the rate limits are not touched).

The chosen request's shadow answer and judging run in a task of their own, started after the caller's response
has been sent (:meth:`Learning.after` returns a Starlette background task for a plain answer; a stream starts it
when it ends), so they never delay or change the caller's answer; any failure is logged and recorded as the
sample's status. The sample (what the router saw: vector, features, route) and one outcome per tier go to the
ledger's ``route_samples`` / ``route_outcomes`` (:mod:`tiergate.learning.store`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.background import BackgroundTask

from tiergate.accounting.cost import CostModel
from tiergate.config import ShadowConfig
from tiergate.dispatch.pool import BackendState
from tiergate.learning.judge import RUBRIC_VERSION, answer_text, combine, judge_request, parse_verdict
from tiergate.learning.store import Outcome, Sample, Store
from tiergate.limits import Limiter
from tiergate.pipeline.admit import estimate_usage
from tiergate.pipeline.gateway import Gateway, Plan
from tiergate.pipeline.gateway import Outcome as Served
from tiergate.routing.features import FEATURE_NAMES, request_features, routing_text
from tiergate.routing.simple import rules_score
from tiergate.signals.encoder import MODEL_ID
from tiergate.types import ChatRequest, ChatResponse, Tier, Usage

__all__ = ["FEATURES_VERSION", "Learning", "Ticket"]

log = logging.getLogger("tiergate.learning")
FEATURES_VERSION = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:16]
_JUDGE_TOKENS = 512


@dataclass(slots=True)
class Ticket:
    """A request chosen for a shadow pair: what the task needs once the caller's answer is complete."""

    request_id: str
    key: str
    chat: ChatRequest
    plan: Plan
    served_tier: Tier
    served_backend: str
    shadow: list[BackendState]
    judges: list[BackendState]
    sample_prob: float
    answer: list[str] = field(default_factory=list)


def _other(tier: Tier) -> Tier:
    return Tier.CLOSED if tier is Tier.OPEN else Tier.OPEN


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


class Learning:
    def __init__(
        self, config: ShadowConfig, gateway: Gateway, costs: CostModel, budgets: Limiter, seed: int = 0
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.costs = costs
        self.budgets = budgets
        self.rng = random.Random(seed)
        self.store: Store | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        #: Requests drawn, and what became of them (``skipped:<reason>``, a sample status, ``failed``).
        self.counts: Counter[str] = Counter()
        self._spend_day, self._spent_today = _day(time.time()), 0.0

    @property
    def enabled(self) -> bool:
        return self.config.share > 0 or bool(self.config.ood_share)

    async def start(self, engine: AsyncEngine) -> None:
        """Use the ledger's (migrated) database; pick up today's learning spend."""
        self.store = Store(engine)
        if self.enabled:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            self._spent_today = sum((await self.store.spend_by_key(today)).values())

    async def store_spend(self, since: datetime) -> dict[str, float]:
        """Learning spend per key since ``since`` (the budgets' month at start-up)."""
        return {} if self.store is None else await self.store.spend_by_key(since)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let pairs in flight finish for ``timeout_s``, then cancel the rest (their requests were answered)."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    @property
    def spent_today(self) -> float:
        if self._spend_day != _day(time.time()):
            self._spend_day, self._spent_today = _day(time.time()), 0.0
        return self._spent_today

    def _skip(self, reason: str) -> Ticket | None:
        self.counts[f"skipped:{reason}"] += 1
        return None

    def judges(self, plan: Plan) -> list[BackendState]:
        """The judge's backends that this request's policy allows (``router.shadow.judge``)."""
        pool, name = self.gateway.pool, self.config.judge
        if name in ("open", "closed"):
            states = pool.tier(Tier(name))
        else:
            state = pool.get(name)
            states = [] if state is None else [state]
        return [s for s in states if plan.verdict is None or plan.verdict.allows(s)]

    def select(self, request_id: str, key: str, chat: ChatRequest, plan: Plan, served: Served) -> Ticket | None:
        """Draw whether to shadow this request; ``None`` when not (see the module docstring)."""
        decision, signals = plan.decision, plan.signals
        if not self.enabled or decision is None or signals is None or signals.embedding is None:
            return None
        share = self.config.share
        if decision.fallback and self.config.ood_share is not None:
            share = self.config.ood_share
        if share <= 0 or self.rng.random() >= share:
            return None
        self.counts["drawn"] += 1
        other = _other(served.tier)
        allowed = [s for s in self.gateway.pool.tier(other) if plan.verdict is None or plan.verdict.allows(s)]
        judges = self.judges(plan)
        if not allowed:
            return self._skip("policy")
        if not judges:
            return self._skip("judge-policy")
        if not any(s.ready for s in allowed):
            return self._skip("busy")
        if len(self.tasks) >= self.config.max_in_flight:
            return self._skip("in-flight")
        estimate = self._estimate(chat, allowed, judges)
        cap = self.config.max_usd_per_day
        if cap is not None and self.spent_today + estimate > cap:
            return self._skip("daily-cap")
        if not self.budgets.affordable(key, estimate):
            return self._skip("budget")
        return Ticket(request_id, key, chat, plan, served.tier, served.backend.name, allowed, judges, share)

    def _estimate(self, chat: ChatRequest, shadow: list[BackendState], judges: list[BackendState]) -> float:
        usage = estimate_usage(chat)
        judged = Usage(input_tokens=usage.input_tokens + 2 * usage.output_tokens, output_tokens=_JUDGE_TOKENS)
        worst = max(self.costs.cost(s.config, usage).usd for s in shadow)
        return worst + 2 * max(self.costs.cost(s.config, judged).usd for s in judges)

    def after(
        self, request_id: str, key: str, chat: ChatRequest, plan: Plan, served: Served, response: ChatResponse
    ) -> BackgroundTask | None:
        """For a plain (non-streamed) answer: the background task that starts its shadow pair, if drawn."""
        ticket = self.select(request_id, key, chat, plan, served)
        if ticket is None:
            return None
        ticket.answer.append(answer_text(response))
        return BackgroundTask(self._launch_soon, ticket)

    async def _launch_soon(self, ticket: Ticket) -> None:  # a coroutine: Starlette runs plain functions in threads
        self.launch(ticket)

    def launch(self, ticket: Ticket) -> None:
        """Start the pair's task (the caller's answer is complete and sent)."""
        task = asyncio.get_running_loop().create_task(self._run(ticket), name=f"tiergate-shadow-{ticket.request_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ask(
        self, request: ChatRequest, targets: list[BackendState], plan: Plan
    ) -> tuple[ChatResponse, str, float]:
        response, served = await self.gateway.dispatcher.complete(request, targets, plan.outbound)
        cost = self.costs.charge(served.state.config, response.usage).usd
        return response, served.state.name, cost

    async def _run(self, t: Ticket) -> None:
        try:
            await self._pair(t)
        except asyncio.CancelledError:
            self.counts["cancelled"] += 1
            raise
        except Exception:  # never the caller's concern: its answer was sent
            self.counts["failed"] += 1
            log.exception("shadow pair of request %s failed", t.request_id)

    async def _pair(self, t: Ticket) -> None:
        chat, plan = t.chat, t.plan
        shadow_tier = _other(t.served_tier)
        sample = self._sample(t, shadow_tier)
        outcomes: list[Outcome] = []
        try:
            try:
                shadow, sample.shadow_backend, sample.shadow_cost_usd = await self._ask(
                    replace(chat, stream=False, include_usage=False), t.shadow, plan
                )
            except Exception as exc:
                sample.status = "shadow-failed"
                log.info("shadow of request %s on the %s tier failed: %s", t.request_id, shadow_tier.value, exc)
                return
            answers = {t.served_tier: "".join(t.answer), shadow_tier: answer_text(shadow)}
            first, second = answers[Tier.OPEN], answers[Tier.CLOSED]
            asked = await asyncio.gather(
                self._ask(judge_request(chat, first, second), t.judges, plan),
                self._ask(judge_request(chat, second, first), t.judges, plan),
                return_exceptions=True,
            )
            verdicts = []
            judge_name = ""
            for got in asked:
                if isinstance(got, BaseException):
                    log.info("judging request %s failed: %s", t.request_id, got)
                    continue
                sample.judge_cost_usd += got[2]
                judge_name = got[1]
                verdicts.append(parse_verdict(got[0].text))
            if len(verdicts) < 2:
                sample.status = "judge-failed"
                return
            v1, v2 = verdicts
            if v1 is None or v2 is None:
                sample.status = "judge-unclear"
                return
            open_score, closed_score = combine(v1, v2)
            detail = f"ab={v1};ba={v2}"
            judge = f"{judge_name}@{RUBRIC_VERSION}"
            outcomes = [
                Outcome(t.request_id, t.key, Tier.OPEN.value, open_score, "judge", judge, detail),
                Outcome(t.request_id, t.key, Tier.CLOSED.value, closed_score, "judge", judge, detail),
            ]
        finally:
            spent = sample.shadow_cost_usd + sample.judge_cost_usd
            self.budgets.charge(t.key, spent)
            _ = self.spent_today  # roll the day over first
            self._spent_today += spent
            self.counts[sample.status] += 1
            if self.store is not None:
                await self.store.record(sample, outcomes)

    def _sample(self, t: Ticket, shadow_tier: Tier) -> Sample:
        decision, signals = t.plan.decision, t.plan.signals
        assert decision is not None
        assert signals is not None
        assert signals.embedding is not None
        return Sample(
            request_id=t.request_id,
            key_name=t.key,
            route=t.plan.route,
            served_tier=t.served_tier.value,
            served_backend=t.served_backend,
            shadow_tier=shadow_tier.value,
            shadow_backend=None,
            route_score=decision.score,
            ood_distance=decision.ood,
            sample_prob=t.sample_prob,
            encoder=MODEL_ID,
            vector=signals.embedding,
            features=request_features(t.chat),
            features_version=FEATURES_VERSION,
            rules_score=rules_score(t.chat),
            prompt_sha256=hashlib.sha256(routing_text(t.chat).encode()).hexdigest(),
        )

    def snapshot(self) -> dict[str, Any]:
        """For the dashboard: the configuration in force, pairs in flight, counts since start, today's spend."""
        return {
            "share": self.config.share,
            "ood_share": self.config.ood_share,
            "judge": self.config.judge,
            "in_flight": len(self.tasks),
            "counts": dict(self.counts),
            "spent_today_usd": self.spent_today,
            "max_usd_per_day": self.config.max_usd_per_day,
        }
