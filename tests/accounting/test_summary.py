"""The report's figures from hand-made rows: shares, saving, percentiles, reasons and counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tiergate.accounting.schema import LedgerRow
from tiergate.accounting.summary import parse_since, percentile, reason_label, summarise

BACKENDS = {"open": "vllm", "closed": "claude"}


def row(tier: str | None, route: str, *, key: str = "k", **kw: Any) -> LedgerRow:
    kw.setdefault("status", "ok" if tier else "error")
    kw.setdefault("backend", BACKENDS.get(tier or ""))
    return LedgerRow(request_id="r", key_name=key, dialect="openai", model="auto", tier=tier, route=route, **kw)


ROWS = [
    row(
        "open",
        "router:0.10<0.41",
        cost_usd=0.001,
        counterfactual_usd=0.010,
        latency_ms=100,
        input_tokens=10,
        output_tokens=5,
    ),
    row("open", "router:0.20<0.41", cost_usd=0.001, counterfactual_usd=0.010, latency_ms=200, ttft_ms=50),
    row("open", "policy:sovereign", cost_usd=0.002, counterfactual_usd=0.020, latency_ms=300, key="hr"),
    row(
        "closed",
        "router:0.90>0.41;failover:vllm-down",
        cost_usd=0.030,
        counterfactual_usd=0.030,
        latency_ms=1000,
        failovers=1,
    ),
    row(
        "closed",
        "explicit:closed;guard:flagged",
        cost_usd=0.010,
        counterfactual_usd=0.010,
        latency_ms=3000,
        status="cancelled",
    ),
    row(None, "", http_status=400),
    row(None, "", status="refused", http_status=429, key="hr"),
    row("open", "router:0.3<0.41;budget:downgrade", latency_ms=400, estimated=True),
]


def test_totals_and_saving() -> None:
    s = summarise(ROWS)
    assert (s.requests, s.served) == (8, 6)
    assert s.statuses == {"ok": 5, "error": 1, "refused": 1, "cancelled": 1}
    assert s.cost_usd == pytest.approx(0.044)
    assert s.all_closed_usd == pytest.approx(0.080)
    assert s.saving_usd == pytest.approx(0.036)
    assert s.saving_pct == pytest.approx(45.0)


def test_counts_of_special_routes() -> None:
    s = summarise(ROWS)
    assert (s.failovers, s.failover_attempts) == (1, 1)
    assert (s.sovereign, s.guarded, s.downgraded, s.estimated) == (1, 1, 1, 1)


def test_tiers_shares_and_latency_over_successes() -> None:
    s = summarise(ROWS)
    assert [t.tier for t in s.tiers] == ["closed", "open"]
    closed, open_ = s.tiers
    assert (open_.requests, open_.share) == pytest.approx((4, 4 / 6))
    assert (open_.input_tokens, open_.output_tokens) == (10, 5)
    assert open_.cost_usd == pytest.approx(0.004)
    assert open_.p50_ms == pytest.approx(250.0)  # 100, 200, 300, 400
    assert open_.p95_ms == pytest.approx(385.0)  # rank 0.95 x 3 = 2.85: 300 + 0.85 x 100
    assert open_.ttft_p50_ms == 50
    assert (closed.requests, closed.p50_ms, closed.p95_ms) == (2, 1000, 1000)  # the cancelled one is left out


def test_reasons_by_first_reason() -> None:
    s = summarise(ROWS)
    assert {r.label: r.requests for r in s.reasons} == {"router": 4, "policy:sovereign": 1, "explicit:closed": 1}
    assert s.reasons[0].share == pytest.approx(4 / 6)


def test_keys() -> None:
    s = summarise(ROWS)
    assert [(k.key, k.requests) for k in s.keys] == [("hr", 2), ("k", 6)]
    assert s.keys[0].cost_usd == pytest.approx(0.002)


def test_marginal_cost_and_utilisation_by_backend() -> None:
    rows = [
        row("open", "router:0.1<0.4", cost_usd=0.004, output_tokens=100, utilisation=0.2),
        row("open", "router:0.1<0.4", cost_usd=0.001, marginal_usd=0.0005, output_tokens=300, utilisation=1.0),
        row("open", "explicit:bare", backend="bare", cost_usd=0.0),
        row("closed", "router:0.9>0.4", cost_usd=0.03, marginal_usd=0.03, output_tokens=50),
        row(None, "", http_status=400),
    ]
    s = summarise(rows)
    assert s.cost_usd == pytest.approx(0.035)
    assert s.marginal_usd == pytest.approx(0.0305)  # Claude's tokens, plus the open ones past capacity
    assert {t.tier: t.marginal_usd for t in s.tiers} == pytest.approx({"closed": 0.03, "open": 0.0005})
    figures = {b.backend: b for b in s.backends}
    assert list(figures) == ["bare", "claude", "vllm"]
    vllm = figures["vllm"]
    assert (vllm.tier, vllm.requests, vllm.output_tokens) == ("open", 2, 400)
    assert (vllm.cost_usd, vllm.marginal_usd) == pytest.approx((0.005, 0.0005))
    assert vllm.utilisation == pytest.approx(0.6)  # the mean of 0.2 and 1.0
    assert figures["bare"].utilisation is None  # no cost section: nothing measured
    assert figures["claude"].utilisation is None


def test_empty() -> None:
    s = summarise([])
    assert (s.requests, s.served, s.saving_pct, s.tiers, s.reasons, s.backends) == (0, 0, None, [], [], [])
    assert s.marginal_usd == 0.0


def test_json_is_plain() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    data = summarise(ROWS, since).to_json()
    assert data["since"] == "2026-01-01T00:00:00+00:00"
    assert data["until"] is None
    assert data["tiers"][1]["tier"] == "open"
    assert data["reasons"][0] == {"label": "router", "requests": 4, "share": pytest.approx(4 / 6)}


@pytest.mark.parametrize(
    ("route", "label"),
    [
        ("router:0.27<0.41", "router"),
        ("router:0.27<0.41;failover:closed-down", "router"),
        ("explicit:vllm", "explicit:vllm"),
        ("key:hr-app:open", "key:hr-app"),
        ("header:closed", "header:closed"),
        ("policy:sovereign;no-closed-backend", "policy:sovereign"),
        ("", "none"),
    ],
)
def test_reason_label(route: str, label: str) -> None:
    assert reason_label(route) == label


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([float(v) for v in range(1, 101)], 95) == pytest.approx(95.05)


def test_parse_since() -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("all", now) is None
    assert parse_since("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="use a duration such as 7d"):
        parse_since("last week", now)


def test_batch_work_apart_from_live_traffic() -> None:
    batch = [
        row("open", "rule:routine:classification", cost_usd=0.0, counterfactual_usd=0.004, batch="tgb-1", latency_ms=5),
        row(
            "closed",
            "router:0.9>=0.4;message-batch:msgbatch_1",
            cost_usd=0.004,
            counterfactual_usd=0.004,
            batch="tgb-1",
            latency_ms=3_600_000,  # a Message Batch result, an hour after its submission
        ),
        row(None, "", batch="tgb-2", http_status=400),
    ]
    s = summarise([*ROWS, *batch])
    live, work = s.work
    assert (live.kind, live.requests, live.runs) == ("live", len(ROWS), 0)
    assert (work.kind, work.requests, work.open, work.closed, work.runs) == ("batch", 3, 1, 1, 2)
    assert (work.cost_usd, work.all_closed_usd) == pytest.approx((0.004, 0.008))
    assert work.saving_pct == pytest.approx(50.0)
    assert s.requests == len(ROWS) + 3  # the totals still count everything
    closed = next(t for t in s.tiers if t.tier == "closed")
    live_closed = next(t for t in summarise(ROWS).tiers if t.tier == "closed")
    assert closed.requests == live_closed.requests + 1
    assert closed.p95_ms == live_closed.p95_ms  # latency is live traffic's: a batch result waits hours
    assert summarise(ROWS).work == [summarise(ROWS).work[0]]  # no batch rows, no batch entry


def test_guard_flags_by_category() -> None:
    rows = [
        row("closed", "guard:0.93>=0.86:suicide_self_harm;guard:closed"),
        row("closed", "guard:0.99>=0.86:jailbreak;guard:closed"),
        row("closed", "guard:0.91>=0.86:suicide_self_harm;guard:closed"),
        row("open", "guard:0.90>=0.86:hate:allow;router:0.2<0.5"),
        row("open", "router:0.2<0.5"),
    ]
    s = summarise(rows)
    assert s.guard_categories == {"suicide_self_harm": 2, "jailbreak": 1, "hate": 1}
    assert list(s.guard_categories) == ["suicide_self_harm", "jailbreak", "hate"]  # most frequent first
    assert s.to_json()["guard_categories"] == s.guard_categories
    assert summarise(ROWS).guard_categories == {}  # a route of the first format names no category
