"""Where ``open_share`` comes from: the workload file, real traffic in the ledger, or a router evaluation.

From the ledger, it is the share of successful requests the gateway's decision sent to the open tier over a
window. A failover counts for the tier that was chosen, not the one that answered, since the plan sizes the
fleet for what the open tier *can* take; a budget downgrade counts for the open tier, which served it.

From a router evaluation (``tiergate router score DATA.jsonl --out PREDS.jsonl``), it is the share of prompts
whose score is under the threshold: the router sends ``score >= threshold`` to the strong (closed) model.
Hard policy (sovereignty, the guard, the context rule) moves more traffic in real life; only the ledger sees it.

    >>> from tiergate.accounting.schema import LedgerRow
    >>> rows = [LedgerRow("a", "k", "openai", "auto", "open", "vllm", "router:0.1<0.4", "ok"),
    ...         LedgerRow("b", "k", "openai", "auto", "open", "vllm", "router:0.9>0.4;failover:closed-down", "ok"),
    ...         LedgerRow("c", "k", "openai", "auto", None, None, "", "error")]
    >>> share_from_rows(rows).open_share
    0.5
    >>> share_from_scores([0.1, 0.3, 0.7, 0.9], threshold=0.5).open_share
    0.5
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tiergate.accounting.schema import LedgerRow
from tiergate.errors import ConfigError

__all__ = ["ShareSource", "load_scores", "share_from_rows", "share_from_scores"]

FAILOVER = ";failover:"


class ShareSource(BaseModel):
    """An ``open_share`` and what it rests on: ``sample`` requests (or prompts), described in ``basis``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["workload", "ledger", "router-eval"]
    open_share: float
    sample: int | None = None
    basis: str


def decided_tier(row: LedgerRow) -> str | None:
    """The tier the decision chose: the serving tier, or the other one when the request failed over."""
    if row.tier is None or FAILOVER not in row.route:
        return row.tier
    return "closed" if row.tier == "open" else "open"


def share_from_rows(rows: Iterable[LedgerRow], window: str = "the ledger") -> ShareSource:
    """The open tier's share of the successful requests in ``rows``; ``ConfigError`` when there are none."""
    served = opened = 0
    for row in rows:
        if row.status != "ok" or row.tier is None:
            continue
        served += 1
        opened += decided_tier(row) == "open"
    if not served:
        raise ConfigError(f"no successful requests in {window} to measure open_share from; widen --since")
    share = opened / served
    basis = f"measured in {window}: {opened:,} of {served:,} successful requests went to the open tier"
    return ShareSource(source="ledger", open_share=share, sample=served, basis=basis)


def share_from_scores(scores: Sequence[float], threshold: float, name: str = "the evaluation") -> ShareSource:
    """The share of ``scores`` under ``threshold`` (those the router keeps on the open tier)."""
    if not scores:
        raise ConfigError(f"{name}: no scores to measure open_share from")
    opened = sum(score < threshold for score in scores)
    basis = f"router evaluation {name}: {opened:,} of {len(scores):,} prompts score under threshold {threshold:.4f}"
    return ShareSource(source="router-eval", open_share=opened / len(scores), sample=len(scores), basis=basis)


def load_scores(path: Path) -> list[float]:
    """The ``score`` of each line of a predictions file (JSONL ``{"id": ..., "score": float}``)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the predictions ({exc.strerror})") from None
    scores: list[float] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            score = json.loads(line)["score"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f'{path}: line {number} is not {{"id": ..., "score": float}}; write it with tiergate router score'
            ) from None
        if not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 1:
            raise ConfigError(f"{path}: line {number}: score must be a number in [0, 1]")
        scores.append(float(score))
    return scores
