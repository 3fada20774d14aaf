"""``tiergate report --html``: one self-contained page, the charts embedded as base64 PNGs."""

from __future__ import annotations

import base64
from html import escape

from tiergate.accounting.charts import cost_png, latency_png, mix_png, reasons_png
from tiergate.accounting.summary import Summary

__all__ = [
    "BACKEND_HEAD",
    "TIER_HEAD",
    "WORK_HEAD",
    "backend_rows",
    "money",
    "overview_rows",
    "render_report",
    "tier_rows",
    "work_rows",
]

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 58rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1rem; }
.note { color: #666; font-size: 0.9em; }
"""


def money(value: float) -> str:
    return f"${value:,.6f}" if 0 < abs(value) < 1 else f"${value:,.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def overview_rows(s: Summary) -> list[list[str]]:
    """The headline figures, shared by the terminal and the HTML report."""
    st = s.statuses
    return [
        ["Requests", f"{s.requests:,}"],
        ["Served by a backend", f"{s.served:,}"],
        ["Errors / refused / cancelled", f"{st['error']:,} / {st['refused']:,} / {st['cancelled']:,}"],
        ["Tokens in / out", f"{sum(t.input_tokens for t in s.tiers):,} / {sum(t.output_tokens for t in s.tiers):,}"],
        ["Cost", money(s.cost_usd)],
        ["Marginal cost (idle GPUs free)", money(s.marginal_usd)],
        ["All-closed would have cost", money(s.all_closed_usd)],
        ["Saving", f"{money(s.saving_usd)} ({_pct(s.saving_pct)})"],
        ["Failovers (attempts)", f"{s.failovers:,} ({s.failover_attempts:,})"],
        ["Sovereign", f"{s.sovereign:,}"],
        ["Guarded", f"{s.guarded:,}"],
        ["Downgraded by budget", f"{s.downgraded:,}"],
        ["Usage estimated (none reported)", f"{s.estimated:,}"],
    ]


def tier_rows(s: Summary) -> list[list[str]]:
    return [
        [
            t.tier,
            f"{t.requests:,}",
            f"{t.share:.1%}",
            f"{t.input_tokens:,} / {t.output_tokens:,}",
            money(t.cost_usd),
            money(t.counterfactual_usd),
            _ms(t.p50_ms),
            _ms(t.p95_ms),
        ]
        for t in s.tiers
    ]


TIER_HEAD = ["Tier", "Requests", "Share", "Tokens in / out", "Cost", "All-closed", "p50", "p95"]
BACKEND_HEAD = ["Backend", "Tier", "Requests", "Tokens out", "Cost", "Marginal", "Utilisation"]


def backend_rows(s: Summary) -> list[list[str]]:
    """Per backend: amortised and marginal cost, and the mean utilisation measured on open backends."""
    return [
        [
            b.backend,
            b.tier,
            f"{b.requests:,}",
            f"{b.output_tokens:,}",
            money(b.cost_usd),
            money(b.marginal_usd),
            "-" if b.utilisation is None else f"{b.utilisation:.1%}",
        ]
        for b in s.backends
    ]


WORK_HEAD = ["Work", "Requests", "Open / closed", "Cost", "All-closed", "Saving"]


def work_rows(s: Summary) -> list[list[str]]:
    """Live traffic and batch work apart; batch work's all-closed is the reference at the Message Batches price."""
    return [
        [
            w.kind if w.kind == "live" else f"batch ({w.runs:,} run{'s' * (w.runs != 1)})",
            f"{w.requests:,}",
            f"{w.open:,} / {w.closed:,}",
            money(w.cost_usd),
            money(w.all_closed_usd),
            f"{money(w.saving_usd)} ({_pct(w.saving_pct)})",
        ]
        for w in s.work
    ]


def render_report(s: Summary, title: str) -> str:
    reasons = [[r.label, f"{r.requests:,}", f"{r.share:.1%}"] for r in s.reasons]
    keys = [[k.key, f"{k.requests:,}", money(k.cost_usd)] for k in s.keys]
    charts = ""
    if s.served:
        charts = _img(mix_png(s), "traffic by tier") + _img(reasons_png(s), "traffic by route reason")
        charts += _img(cost_png(s), "cost against all-closed") + _img(latency_png(s), "latency by tier")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
{_table(["Figure", "Value"], overview_rows(s))}
{charts}
{_work_section(s)}
<h2>By tier</h2>
{_table(TIER_HEAD, tier_rows(s))}
<h2>By backend</h2>
{_table(BACKEND_HEAD, backend_rows(s))}
<h2>Route reasons</h2>
{_table(["Reason", "Requests", "Share"], reasons)}
<h2>By key</h2>
{_table(["Key", "Requests", "Cost"], keys)}
<p class="note">All-closed: what the reference closed model would have charged for the same tokens.
Open-weight backends cost their GPU time amortised at the utilisation the gateway measured; their marginal
cost (what the traffic added to the bill) is zero while capacity is idle. Latency over successful live requests.
Batch work (<code>tiergate batch</code>) is compared with the reference model at the Message Batches price.</p>
</body></html>
"""


def _work_section(s: Summary) -> str:
    if not any(w.kind == "batch" for w in s.work):
        return ""
    return f"<h2>Live traffic and batch work</h2>\n{_table(WORK_HEAD, work_rows(s))}"
