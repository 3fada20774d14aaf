"""The ledger's tables: ``requests``, one row per request the gateway answered (or refused), and ``attempts``, one
row per try of a request on a backend (revision 0003), so the whole path of a request can be read back.

The tables are created and evolved by the Alembic migrations in ``accounting/migrations/``; this module
is the typed view the code reads and writes through. Columns are plain SQL types that SQLite and
PostgreSQL both store natively; money is USD in double precision, durations are milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

from sqlalchemy import Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, text

__all__ = ["STATUSES", "AttemptRow", "LedgerRow", "Status", "attempts", "metadata", "requests", "status_of"]

Status: TypeAlias = Literal["ok", "error", "refused", "cancelled"]
STATUSES: tuple[Status, ...] = ("ok", "error", "refused", "cancelled")


def status_of(value: str) -> Status:
    """``value`` as a ledger status; anything unknown is an error."""
    for status in STATUSES:
        if status == value:
            return status
    return "error"


metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(64), nullable=False, index=True),  # revision 0003: feedback finds it
    Column("key_name", String(200), nullable=False),
    Column("dialect", String(16), nullable=False),
    Column("model", String(200), nullable=False),
    Column("tier", String(16), nullable=True),
    Column("backend", String(200), nullable=True),
    Column("route", String(1000), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cache_read_tokens", Integer, nullable=False),
    Column("cache_write_tokens", Integer, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("counterfactual_usd", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("status", String(16), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("failovers", Integer, nullable=False),
    Column("estimated", Boolean, nullable=False),
    # Revision 0002: open-weight backends' marginal cost and measured utilisation.
    Column("marginal_usd", Float, nullable=False, server_default=text("0")),
    Column("utilisation", Float, nullable=True),
    # Revision 0003: the ``tiergate batch`` run a row belongs to; NULL for live traffic.
    Column("batch", String(64), nullable=True),
)


# Revision 0003: every try of a request, in order (``seq`` from 0), joined to its row by ``request_id``.
attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("backend", String(200), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("outcome", String(24), nullable=False),
    Column("reason", String(1000), nullable=False),
    Column("upstream_status", Integer, nullable=True),
    Column("started_ms", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One try of a request on a backend (see :mod:`tiergate.dispatch.trace`).

    ``purpose``: ``first``, ``retry``, ``failover``, ``continue``, ``restart``, ``hedge``, ``escalate``;
    ``outcome``: ``ok``, ``failed``, ``silent``, ``timeout``, ``rejected``, ``prefill_rejected``,
    ``context_length``, ``saturated``, ``skipped``, ``cut``, ``diverged``, ``lost``, ``cancelled``; ``reason``: why
    it was abandoned (the upstream's error, "circuit open", ...). ``ts`` is when the try began (UTC);
    ``started_ms`` the same, counted from the request's start; ``latency_ms`` how long it lasted. ``input_tokens``
    are estimated (four characters a token) and ``output_tokens`` what it produced. ``cost_usd`` is what the try
    cost *beyond* the request's own row: a hedge that lost the race (its prompt and any tokens it produced);
    0 for the others (a failed exchange is not billed; the answer's tokens are in the request's row).
    """

    request_id: str
    seq: int
    backend: str
    tier: str
    purpose: str
    outcome: str
    reason: str = ""
    upstream_status: int | None = None
    started_ms: float = 0.0
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def values(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, row: Any) -> AttemptRow:
        values = {name: row[name] for name in _ATTEMPT_FIELDS}
        ts: datetime = values["ts"]
        values["ts"] = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        return cls(**values)


_ATTEMPT_FIELDS = tuple(AttemptRow.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One request, as the ledger stores it.

    ``ts`` is when the request ended (UTC); ``route`` the ``x-tiergate-route`` header (reasons joined by
    ``;``); ``counterfactual_usd`` what the reference closed model would have charged for the same
    tokens; ``estimated`` is true when the backend reported no usage and the token counts are the
    gateway's estimate. ``status``: ``ok``, ``error`` (any 4xx/5xx, or a stream that failed after its
    first byte), ``refused`` (a budget or rate limit: 429) or ``cancelled`` (the client went away).

    ``cost_usd`` is what the request cost: the bill on a closed backend, the amortised GPU time on an
    open one (at the ``utilisation`` the gateway measured on that backend, in [0, 1]; ``None`` elsewhere).
    ``marginal_usd`` is what it added to the bill: all of it on a closed backend, nothing on an open one
    while its capacity was idle (see :mod:`tiergate.accounting.utilisation`).

    ``batch`` names the ``tiergate batch`` run of offline work the row belongs to (``None``: live traffic). Its
    ``counterfactual_usd`` is the reference model at the Message Batches price, the like-for-like alternative;
    its closed-tier items sent through Message Batches cost the batch price (the ``route`` ends with
    ``message-batch:<id>``).

        >>> row = LedgerRow(request_id="r1", key_name="hr-app", dialect="openai", model="auto",
        ...                 tier="open", backend="vllm", route="router:0.12<0.41", status="ok")
        >>> row.reasons
        ['router:0.12<0.41']
    """

    request_id: str
    key_name: str
    dialect: str
    model: str
    tier: str | None
    backend: str | None
    route: str
    status: Status
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    counterfactual_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    http_status: int = 200
    failovers: int = 0
    estimated: bool = False
    marginal_usd: float = 0.0
    utilisation: float | None = None
    batch: str | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def reasons(self) -> list[str]:
        return [r for r in self.route.split(";") if r]

    def values(self) -> dict[str, Any]:
        """The row as column values for an INSERT."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, row: Any) -> LedgerRow:
        """Read a result row (a SQLAlchemy ``RowMapping``); SQLite returns naive UTC times."""
        values = {name: row[name] for name in _FIELDS}
        ts: datetime = values["ts"]
        values["ts"] = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        values["estimated"] = bool(values["estimated"])
        return cls(**values)


_FIELDS = tuple(LedgerRow.__dataclass_fields__)
