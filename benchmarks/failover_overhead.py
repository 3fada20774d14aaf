"""Failover overhead: what a failed attempt adds to a request, over a direct success, beyond the backoff chosen.

    python benchmarks/failover_overhead.py [--rounds 300] [--out docs/benchmarks-reliability.md]

Goal: the p50 added latency of a request that failed and was retried or failed over is at most the backoff the
gateway chose plus 5 ms.

Processes on loopback, as in ``soak.py``: two open-tier replicas ``r1`` and ``r2`` (the fake OpenAI-compatible
upstream behind ``soak.Injector``) and two tiergate gateways over them, ``base 0`` (``backoff_base_s: 0``: every
backoff is zero, so what is added is the decision and the failed round trip alone) and ``base 0.05`` (the default
``backoff_base_s``). Both have ``dispatch.seed`` set and ``breaker_failures`` high (hundreds of deliberate faults
must not open ``r1``'s circuit: that would measure skipping a backend, not failing over from it).

**The backoff each request chose.** The dispatcher draws its jitter from one ``random.Random(seed)``, one
``uniform(0, min(backoff_cap_s, backoff_base_s * 2 ** (attempt - 1)))`` per retry on the same backend, and nothing
else draws from it. A failure that goes on at once to a ready replica of the same tier (the default
``retry_other_replica_first``) draws nothing; only the last ready replica of a tier is retried on itself. Requests
here go one at a time, so this script replays the same generator and knows the backoff of every request exactly (a
``Retry-After`` is used as it is, without a draw). The correlation of the measured added latency with the replayed
backoff is reported as a check that the replay is in step.

Scenarios; every round sends one request of each scenario to each gateway, in a new random order (the first
request after a pause is slower, so no scenario may always come first; drift and other load hit all alike):
``direct`` (no fault; ``direct on r2`` names the replica, a control for the failover rows); ``503 on r1 -> r2 at
once`` (``r1`` answers 503 once: no backoff, ``r2`` answers); ``503 on r1 and r2`` (each replica answers 503
once: ``r2``, the last ready replica, is retried after one backoff); ``r1 by name`` (a plan of ``r1`` alone, as
with ``model: r1``: a 503 once is retried on ``r1`` after one backoff; a 429 with ``Retry-After: 0.05`` once, after
that wait); for streams also ``continue`` (``r1`` cuts the stream after 4 events; continued on ``r2``, no
backoff). The ``base 0.05`` gateway runs only the rows that differ between the two gateways: those with a drawn
backoff, and the ``503 on r1 -> r2 at once`` rows (the default configuration's answer to a failed replica). *Added* = a
request's latency minus the p50 of ``direct`` (same gateway, same mode); *excess* = added minus the backoff that
request chose. ``upstream alone`` gives the fake's own round trip for a 200 and a 503, to show what a failed
attempt costs before the gateway does anything.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overhead import Service, SetupError, load_average, percentile
from soak import (
    DOC,
    REPLY,
    Connection,
    Fault,
    chat_request,
    gateway_config,
    judge,
    prepare_run_dir,
    run_conditions,
    services,
    start_gateway,
    start_upstream,
    write_section,
)

RETRY_AFTER_S = 0.05
GOAL_MS = 5.0
_BACKEND = re.compile(rb"\r\nx-tiergate-backend:\s*(\S+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    stream: bool
    step: dict[str, Any] | None  # what r1 plays (None: no fault)
    times: int = 1
    failed: int = 0  # upstream attempts that fail before the one that answers
    draws: int = 0  # backoffs drawn from the dispatcher's generator
    fixed_backoff_s: float = 0.0  # a Retry-After, used as it is
    served_by: str = "r1"  # the x-tiergate-backend header expected (for streams: the first backend)
    model: str = "open"  # "r1", "r2": that backend alone, by name (no sibling to go to)
    each: bool = False  # every replica plays ``step`` ``times`` times (else only the first that sees it)


_503 = {"kind": "fault", "status": 503}
SCENARIOS = [
    Scenario("direct", False, None),
    Scenario("direct on r2 (by name)", False, None, served_by="r2", model="r2"),
    Scenario("503 on r1 -> r2 at once", False, _503, failed=1, served_by="r2"),
    Scenario("503 on r1 and r2 -> r2 after a backoff", False, _503, failed=2, draws=1, served_by="r2", each=True),
    Scenario("r1 by name: 503 once -> r1 after a backoff", False, _503, failed=1, draws=1, model="r1"),
    Scenario(
        "r1 by name: 429, Retry-After 0.05",
        False,
        {"kind": "fault", "status": 429, "retry_after": RETRY_AFTER_S},
        failed=1,
        fixed_backoff_s=RETRY_AFTER_S,
        model="r1",
    ),
    Scenario("stream direct", True, None),
    Scenario("stream 503 on r1 -> r2 at once", True, _503, failed=1, served_by="r2"),
    Scenario("stream 503 on r1 and r2 -> r2 after a backoff", True, _503, failed=2, draws=1, served_by="r2", each=True),
    Scenario("stream r1 by name: 503 once -> r1 after a backoff", True, _503, failed=1, draws=1, model="r1"),
    Scenario("stream continue (cut after 4 events -> r2)", True, {"kind": "cut_stream", "after_events": 4}, failed=1),
]


def runs_on(scenario: Scenario, base_s: float) -> bool:
    """Which rows the gateway with a real backoff runs: directs (its baseline), drawn backoffs, and the move to a
    sibling at once (the default configuration's answer to a failed replica); the rest is the same on both."""
    return base_s == 0 or scenario.step is None or scenario.draws > 0 or scenario.served_by == "r2"


@dataclass(frozen=True, slots=True)
class Gateway:
    label: str
    service: Service
    base_s: float
    cap_s: float
    seed: int
    scenarios: list[Scenario]


@dataclass
class Series:
    latency: list[float] = field(default_factory=list)
    backoff: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def check(answer_head: bytes, body: bytes, status: int, scenario: Scenario) -> str | None:
    """Why this answer is not the expected success (``None``: it is)."""
    if status != 200:
        return f"HTTP {status}: {body[:120]!r}"
    backend = _BACKEND.search(answer_head)
    served = backend.group(1).decode() if backend else "?"
    if served != scenario.served_by:
        return f"served by {served}, expected {scenario.served_by}"
    if scenario.stream:
        return None  # judged by the caller with soak.judge
    content = json.loads(body)["choices"][0]["message"]["content"]
    return None if content == REPLY else f"text {content[:40]!r}"


async def measure(gateways: list[Gateway], upstream: Service, rounds: int, warmup: int) -> dict[str, Series]:
    results: dict[str, Series] = {}
    rngs = {g.label: random.Random(g.seed) for g in gateways}
    conns = {g.label: Connection(g.service.port) for g in gateways}
    direct = Connection(upstream.port)
    serial = 0

    async def one(g: Gateway, scenario: Scenario, counted: bool) -> None:
        nonlocal serial
        serial += 1
        step = scenario.step
        fault = Fault(f"f{serial}", scenario.name, step, scenario.times, False, scenario.each) if step else None
        text = f"Failover overhead {serial}." + (f" {fault.marker()}" if fault else "")
        payload = chat_request(g.service.port, "openai", text, scenario.stream, scenario.model)
        backoff = scenario.fixed_backoff_s
        for attempt in range(1, scenario.draws + 1):
            backoff += rngs[g.label].uniform(0, min(g.cap_s, g.base_s * 2 ** (attempt - 1)))
        t0 = time.perf_counter()
        answer = await conns[g.label].exchange(payload)
        elapsed = answer.end - t0
        why = check(answer.head, answer.body, answer.status, scenario)
        if why is None and scenario.stream and (verdict := judge(answer, "openai")).outcome != "ok":
            why = f"{verdict.outcome}: {verdict.reason}"
        if counted:
            series = results.setdefault(f"{g.label}|{scenario.name}", Series())
            series.latency.append(elapsed)
            series.backoff.append(backoff)
            if why is not None:
                series.wrong.append(why)

    async def alone(status: int | None, counted: bool) -> None:
        nonlocal serial
        serial += 1
        step = None if status is None else {"kind": "fault", "status": status}
        fault = Fault(f"f{serial}", "alone", step, 1, True) if step else None
        text = f"Upstream alone {serial}." + (f" {fault.marker()}" if fault else "")
        payload = chat_request(upstream.port, "openai", text, False)
        t0 = time.perf_counter()
        answer = await direct.exchange(payload)
        if counted:
            key = f"upstream alone|{'200' if status is None else status}"
            results.setdefault(key, Series()).latency.append(answer.end - t0)

    order = random.Random(0)
    jobs: list[Callable[[bool], Awaitable[None]]] = [
        *(functools.partial(one, g, scenario) for g in gateways for scenario in g.scenarios),
        functools.partial(alone, None),
        functools.partial(alone, 503),
    ]
    for r in range(warmup + rounds):
        order.shuffle(jobs)  # the first request after a pause is slower: no scenario may always come first
        for job in jobs:
            await job(r >= warmup)
    for c in (*conns.values(), direct):
        c.close()
    return results


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def _correlation(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return math.nan
    return statistics.correlation(xs, ys)


def render(results: dict[str, Series], gateways: list[Gateway], info: dict[str, str], rounds: int) -> tuple[str, bool]:
    rows, all_met = [], True
    for g in gateways:
        base = {
            stream: statistics.median(results[f"{g.label}|{'stream direct' if stream else 'direct'}"].latency)
            for stream in (False, True)
        }
        for scenario in g.scenarios:
            s = results[f"{g.label}|{scenario.name}"]
            added = [lat - base[scenario.stream] for lat in s.latency]
            excess = [a - b for a, b in zip(added, s.backoff, strict=True)]
            is_direct = scenario.step is None
            met = is_direct or percentile(excess, 50) * 1000 <= GOAL_MS
            all_met &= met
            corr = _correlation(added, s.backoff) if scenario.draws and g.base_s > 0 else math.nan
            if is_direct:
                cells = ["", "", "", "", "", "", str(len(s.wrong)), ""]
            else:
                per_attempt = percentile(excess, 50) / scenario.failed
                cells = [
                    str(scenario.failed),
                    _ms(percentile(added, 50)),
                    _ms(percentile(s.backoff, 50)),
                    _ms(percentile(excess, 50)),
                    _ms(percentile(excess, 99)),
                    f"{_ms(per_attempt)}" + ("" if math.isnan(corr) else f" (corr {corr:.2f})"),
                    str(len(s.wrong)),
                    "**met**" if met else "**not met**",
                ]
            row = [g.label, scenario.name, str(len(s.latency)), _ms(percentile(s.latency, 50)), *cells]
            rows.append("| " + " | ".join(row) + " |")
    wrong = [(k, w) for k, s in results.items() for w in s.wrong]
    alone = {k.split("|")[1]: statistics.median(s.latency) for k, s in results.items() if k.startswith("upstream")}
    lines = [
        "## Failover overhead: a failed attempt vs a direct success",
        "",
        "Generated by `python benchmarks/failover_overhead.py`; the method is in that file's docstring.",
        "",
        "### Run conditions",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        "",
        f"### Results ({rounds} counted requests per row; ms)",
        "",
        "*added* = latency minus the p50 of the same gateway's direct success (streams: of `stream direct`); "
        "*backoff* = what that request's gateway chose (replayed from the seed, or the Retry-After); *excess* = "
        f"added minus backoff. The goal is met when the p50 of excess is at most {GOAL_MS:g} ms. *corr* = "
        "correlation of added with the replayed backoff, where there is one (near 1: the replay is in step).",
        "",
        "| gateway | scenario | n | latency p50 | failed attempts | added p50 | backoff p50 | excess p50 | excess p99 "
        "| excess p50 per failed attempt | wrong answers | goal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Upstream alone (the fake, no gateway), p50: a 200 in {_ms(alone.get('200', math.nan))} ms, a 503 in "
        f"{_ms(alone.get('503', math.nan))} ms: each failed attempt adds at least one such round trip.",
    ]
    if wrong:
        lines += [
            "",
            f"**{len(wrong)} answers were not the expected success**, e.g.: "
            + "; ".join(f"{k}: {w}" for k, w in wrong[:5]),
        ]
    return "\n".join(lines) + "\n", all_met and not wrong


def start_variant(upstreams: dict[str, Service], run_dir: Path, base: float, seed: int) -> Service:
    dispatch = {"backoff_base_s": base, "seed": seed, "attempts": 2}
    config = gateway_config(upstreams, dispatch, {"breaker_failures": 1_000_000})
    return start_gateway(config, run_dir, f"tiergate-base-{base:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="counted requests per scenario and gateway")
    parser.add_argument("--warmup", type=int, default=20, help="rounds not counted")
    parser.add_argument("--base", type=float, default=0.05, help="backoff_base_s of the second gateway")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()

    run_dir, claims = prepare_run_dir("failover-run")
    info = run_conditions("python benchmarks/failover_overhead.py " + " ".join(sys.argv[1:]))
    starters: list[Callable[[], Service]] = [
        lambda: start_upstream("r1", "openai_replica", run_dir, claims),
        lambda: start_upstream("r2", "openai_replica", run_dir, claims),
    ]
    gateways: list[Gateway] = []
    try:
        with services(starters) as upstreams:
            by_name = {s.name: s for s in upstreams}
            with services(
                [functools.partial(start_variant, by_name, run_dir, base, args.seed) for base in (0.0, args.base)]
            ) as started:
                for service, base in zip(started, (0.0, args.base), strict=True):
                    scenarios = [s for s in SCENARIOS if runs_on(s, base)]
                    label = f"base {base:g}"
                    gateways.append(Gateway(label, service, base, 2.0, args.seed, scenarios))
                print(
                    f"failover overhead: {args.rounds} rounds after {args.warmup} warm-up; logs in {run_dir}",
                    flush=True,
                )
                started_at = time.monotonic()
                results = asyncio.run(measure(gateways, by_name["r1"], args.rounds, args.warmup))
                info["Load after"] = load_average()
                info["Duration"] = f"{time.monotonic() - started_at:.0f} s"
    except SetupError as exc:
        sys.exit(f"failover_overhead: setup failed: {exc}")
    info["Gateways"] = (
        "`python -m tiergate serve --log-level warning`, replicas r1 and r2 (open, `openai`), `attempts: 2`, "
        "`retry_other_replica_first: true` (the default), "
        f"`backoff_cap_s: 2`, `seed: {args.seed}`, `breaker_failures: 1000000`; `backoff_base_s` 0 and {args.base:g}"
    )
    info["Client"] = "this script, one request at a time, one keep-alive connection per gateway (no concurrency)"
    text, met = render(results, gateways, info, args.rounds)
    print(text)
    write_section(args.out, "failover", text)
    print(f"written to {args.out}; goal {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
