"""``open_share`` measured from the ledger's rows or from a router evaluation's scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.accounting.prices import load_price_table
from tiergate.accounting.schema import LedgerRow
from tiergate.economics.advice import make_plan
from tiergate.economics.share import ShareSource, decided_tier, load_scores, share_from_rows, share_from_scores
from tiergate.economics.tco import Workload, resolve_closed_price
from tiergate.errors import ConfigError


def row(tier: str | None, route: str = "router:0.1<0.4", status: str = "ok") -> LedgerRow:
    backend = {"open": "vllm", "closed": "claude"}.get(tier or "")
    return LedgerRow("r", "k", "openai", "auto", tier, backend, route, status)  # type: ignore[arg-type]


def test_decided_tier_undoes_failover() -> None:
    assert decided_tier(row("open")) == "open"
    assert decided_tier(row("open", "router:0.9>0.4;failover:closed-down")) == "closed"
    assert decided_tier(row("closed", "explicit:open;failover:open-down")) == "open"
    assert decided_tier(row("open", "explicit:closed;budget:downgrade")) == "open"
    assert decided_tier(row(None, "")) is None


def test_share_from_rows() -> None:
    rows = [
        row("open"),
        row("open", "policy:sovereign:key;single-tier:open"),
        row("open", "router:0.9>0.4;failover:closed-down"),  # chosen: closed
        row("closed", "router:0.1<0.4;failover:vllm-down"),  # chosen: open
        row("closed", "router:0.9>0.4"),
        row("open", status="cancelled"),  # not a success: left out
        row(None, "", status="error"),
        row("closed", "guard:refused", status="refused"),
    ]
    share = share_from_rows(rows, "the test")
    assert (share.source, share.sample) == ("ledger", 5)
    assert share.open_share == pytest.approx(3 / 5)
    assert share.basis == "measured in the test: 3 of 5 successful requests went to the open tier"


def test_no_successful_rows_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no successful requests in the ledger"):
        share_from_rows([row(None, "", status="error")])


def test_share_from_scores() -> None:
    share = share_from_scores([0.1, 0.4, 0.41, 0.9, 0.2], threshold=0.41, name="preds.jsonl")
    # Scores at or over the threshold go to the strong model: 0.41 and 0.9; the other three stay open.
    assert (share.source, share.sample) == ("router-eval", 5)
    assert share.open_share == pytest.approx(0.6)
    assert "preds.jsonl: 3 of 5 prompts score under threshold 0.4100" in share.basis
    with pytest.raises(ConfigError, match="no scores"):
        share_from_scores([], 0.5)


def test_load_scores(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": "a", "score": 0.25}\n\n{"id": "b", "score": 1}\n', encoding="utf-8")
    assert load_scores(path) == [0.25, 1.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a"}\n', 'line 1 is not {"id": ..., "score": float}'),
        ("not json\n", "line 1 is not"),
        ('{"id": "a", "score": 0.5}\n{"id": "b", "score": 1.5}\n', "line 2: score must be a number in [0, 1]"),
        ('{"id": "a", "score": true}\n', "line 1: score must be a number"),
    ],
)
def test_bad_predictions(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{")):
        load_scores(path)
    with pytest.raises(ConfigError, match="cannot read the predictions"):
        load_scores(tmp_path / "absent.jsonl")


def test_a_measured_share_replaces_the_workloads() -> None:
    w = Workload.model_validate(
        {
            "requests_per_day": 200_000,
            "input_tokens": 800,
            "output_tokens": 300,
            "open_share": 0.6,
            "closed": {"model": "claude-sonnet-4-5"},
            "open": {"gpu_hourly_usd": 2.69, "tokens_per_second": 3400},
            "operations": {"engineers_fte": 0.5, "engineer_yearly_usd": 200_000},
        }
    )
    table = load_price_table()
    price = resolve_closed_price(w.closed, table)
    given = make_plan(w, price, table.version)
    assert given.assumptions.open_share == ShareSource(
        source="workload", open_share=0.6, basis="given in the workload file"
    )
    measured = ShareSource(source="ledger", open_share=0.75, sample=1000, basis="measured")
    plan = make_plan(w, price, table.version, measured)
    # 25% of 41,952 on Claude = 10,488.00, plus the open fleet for 75% (520.8 tok/s: still 2 replicas) 12,260.73.
    assert plan.monthly_usd.hybrid == pytest.approx(22_748.73)
    assert plan.assumptions.open_share == measured
