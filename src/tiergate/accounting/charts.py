"""The report's charts as PNG bytes: traffic by tier and by reason, cost against all-closed, latency by tier.

matplotlib is imported inside each function (Agg canvas, no pyplot, so no global figure state): importing
this module costs nothing and the gateway never loads matplotlib.
"""

from __future__ import annotations

import io
from typing import Any

from tiergate.accounting.summary import Summary

__all__ = ["cost_png", "latency_png", "mix_png", "reasons_png"]

_COLOURS = {"open": "#2f6f9f", "closed": "#c15f3c", "tiergate": "#5b8c3a", "marginal": "#9cc47f"}
_MAX_REASONS = 8


def _figure(height: float = 2.6) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(7, height), dpi=100)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def mix_png(summary: Summary) -> bytes:
    """Requests served by each tier, as horizontal bars labelled with their share."""
    fig = _figure()
    ax = fig.add_subplot()
    tiers = [t.tier for t in summary.tiers]
    counts = [t.requests for t in summary.tiers]
    bars = ax.barh(tiers, counts, color=[_COLOURS.get(t, "#888888") for t in tiers])
    ax.bar_label(bars, labels=[f"{t.requests} ({t.share:.0%})" for t in summary.tiers], padding=3, fontsize=8)
    ax.set_xlabel("requests")
    ax.set_title("Traffic by tier")
    ax.margins(x=0.15)
    return _png(fig)


def reasons_png(summary: Summary) -> bytes:
    """Requests served, by route reason (the most frequent few; the rest summed as "other")."""
    shown = summary.reasons[:_MAX_REASONS]
    labels = [r.label for r in shown]
    counts = [r.requests for r in shown]
    rest = sum(r.requests for r in summary.reasons[_MAX_REASONS:])
    if rest:
        labels.append("other")
        counts.append(rest)
    fig = _figure(height=max(2.0, 0.6 + 0.32 * len(labels)))
    ax = fig.add_subplot()
    bars = ax.barh(labels[::-1], counts[::-1], color="#7a7a9f")
    total = summary.served or 1
    ax.bar_label(bars, labels=[f"{n} ({n / total:.0%})" for n in counts[::-1]], padding=3, fontsize=8)
    ax.set_xlabel("requests")
    ax.set_title("Traffic by route reason")
    ax.margins(x=0.15)
    return _png(fig)


def cost_png(summary: Summary) -> bytes:
    """What tiergate cost (amortised, and at the margin) against what the reference closed model would have
    charged for the same tokens."""
    fig = _figure()
    ax = fig.add_subplot()
    labels = ["tiergate", "tiergate marginal", "all-closed"]
    values = [summary.cost_usd, summary.marginal_usd, summary.all_closed_usd]
    bars = ax.barh(labels, values, color=[_COLOURS["tiergate"], _COLOURS["marginal"], _COLOURS["closed"]])
    ax.bar_label(bars, labels=[f"${v:,.4f}" for v in values], padding=3, fontsize=8)
    saving = "" if summary.saving_pct is None else f": {summary.saving_pct:.1f}% saved"
    ax.set_title(f"Cost against all-closed{saving}")
    ax.set_xlabel("USD")
    ax.margins(x=0.2)
    return _png(fig)


def latency_png(summary: Summary) -> bytes:
    """p50 and p95 latency of successful requests, by tier."""
    fig = _figure()
    ax = fig.add_subplot()
    tiers = [t.tier for t in summary.tiers]
    positions = range(len(tiers))
    p50 = [t.p50_ms or 0.0 for t in summary.tiers]
    p95 = [t.p95_ms or 0.0 for t in summary.tiers]
    ax.bar([p - 0.2 for p in positions], p50, width=0.4, label="p50", color="#7aa6c8")
    ax.bar([p + 0.2 for p in positions], p95, width=0.4, label="p95", color="#2f6f9f")
    ax.set_xticks(list(positions), tiers)
    ax.set_ylabel("ms")
    ax.set_title("Latency by tier")
    ax.legend(fontsize=8)
    return _png(fig)
