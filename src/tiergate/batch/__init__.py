"""Batch work: many requests from a file, routed like live ones, the closed half through Message Batches.

    items.py          BatchItem, parse_line, render_line   the file formats (in: one request a line; out: results)
    route.py          route_item, Routed                   inspect and decide one item, as a live request
    books.py          BatchBooks                           one item's ledger row, priced as offline work
    messagebatches.py MessageBatches                       Anthropic's Message Batches API (official SDK)
    store.py          Store                                a run's state on disk (SQLite): resume, input order
    runner.py         run_batch, BatchOptions, Report      ``tiergate batch``: the whole run, resumable
    engine.py         BatchRouter                          routing and accounting as plain calls, for the
                                                           workers of a distributed engine (Ray Data, Spark)

``BatchRouter`` (and, for async code, ``route_item`` and ``BatchBooks.row``) are the library calls for running
the same work on another engine (Ray Data with vLLM, Spark): route each item there, serve it, and write its
ledger row (docs/batch.md, "Beyond one machine").
"""

from tiergate.batch.books import BatchBooks
from tiergate.batch.engine import BatchRouter
from tiergate.batch.items import BatchItem, detect_dialect, parse_line, render_line
from tiergate.batch.messagebatches import MessageBatches
from tiergate.batch.route import Routed, Way, message_batch_params, outbound, route_item
from tiergate.batch.runner import BatchOptions, Progress, Report, run_batch

__all__ = [
    "BatchBooks",
    "BatchItem",
    "BatchOptions",
    "BatchRouter",
    "MessageBatches",
    "Progress",
    "Report",
    "Routed",
    "Way",
    "detect_dialect",
    "message_batch_params",
    "outbound",
    "parse_line",
    "render_line",
    "route_item",
    "run_batch",
]
