"""Every attempt of a request, in order: which backend, why it was asked, how it ended and why it was left.

The dispatcher opens a :class:`Try` for each backend it asks (and for each it passes over: an open circuit, a full
queue), and closes it with an outcome; accounting writes the tries to the ledger's ``attempts`` table and, when
the path was more than one clean answer, to the log (:meth:`Trace.path`), so an operator sees the whole path of a
request: a prefill 400 learned, a silent replica left, a stream cut and spliced, a hedge that lost.

    >>> trace = Trace(origin=0.0)
    >>> t = trace.begin("primary", "open", "first", input_tokens=12, now=0.0)
    >>> t.fail(UpstreamUnavailable("HTTP 503", backend="primary", upstream_status=503), now=0.05)
    >>> trace.begin("secondary", "open", "failover", input_tokens=12, now=0.05).close("ok", now=0.3)
    >>> trace.path()
    "primary failed (backend 'primary': HTTP 503) -> secondary ok"
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from tiergate.errors import (
    ContextLengthExceeded,
    PrefillRejected,
    Saturated,
    Silent,
    SpliceDiverged,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

#: Why a backend was asked: the request's ``first`` try, a ``retry`` on the same backend, a ``failover`` to
#: another, the rest of a cut stream (``continue`` with the text so far as a prefix, or ``restart`` without it,
#: spliced), a ``hedge`` raced against a slow one, or the gateway's ``escalate`` to the closed tier.
Purpose: TypeAlias = Literal["first", "retry", "failover", "continue", "restart", "hedge", "escalate"]
#: How it ended. ``streaming`` only while a stream is read.
Outcome: TypeAlias = Literal[
    "ok",
    "streaming",
    "failed",  # a retryable failure: 5xx, 429, refused or reset connection, a malformed reply
    "silent",  # no first token (or answer) within its budget: not asked again in this request
    "timeout",  # connect timeout, a queue wait to the deadline
    "rejected",  # a client error (4xx): the caller's answer
    "prefill_rejected",  # refused to continue an assistant prefix: learned, the answer restarted
    "context_length",  # the prompt does not fit its window: a larger one is tried
    "saturated",  # every slot and queue place taken: overflow, no fault
    "skipped",  # not asked: circuit open, or a window too small after a context-length error
    "cut",  # a stream that broke after bytes reached the caller (then resumed, or the stream's error)
    "diverged",  # a resumed answer that differs from what the caller has: the stream's error
    "lost",  # a hedge that lost the race (or the backend it raced), cancelled
    "cancelled",  # the caller went away
]


def outcome_of(exc: UpstreamError) -> Outcome:
    """The outcome a failed exchange is recorded with.

    >>> outcome_of(Silent("no first token within 10.0s", backend="b")), outcome_of(UpstreamError("x", backend="b"))
    ('silent', 'failed')
    """
    if isinstance(exc, Silent):
        return "silent"
    if isinstance(exc, PrefillRejected):
        return "prefill_rejected"
    if isinstance(exc, ContextLengthExceeded):
        return "context_length"
    if isinstance(exc, Saturated):
        return "saturated"
    if isinstance(exc, SpliceDiverged):
        return "diverged"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamUnavailable) or exc.retryable:
        return "failed"
    return "rejected"


@dataclass(slots=True)
class Try:
    """One attempt: times are ``time.monotonic()``; ``output_tokens`` what it produced (a stream's deltas)."""

    backend: str
    tier: str
    purpose: Purpose
    started: float
    input_tokens: int = 0
    output_tokens: int = 0
    ended: float | None = None
    outcome: Outcome = "streaming"
    reason: str = ""
    upstream_status: int | None = None

    def close(self, outcome: Outcome, reason: str = "", now: float | None = None) -> None:
        """End the try with ``outcome`` (once: a later close changes nothing)."""
        if self.ended is not None:
            return
        self.ended = time.monotonic() if now is None else now
        self.outcome, self.reason = outcome, reason

    def fail(self, exc: UpstreamError, now: float | None = None) -> None:
        self.upstream_status = exc.upstream_status
        self.close(outcome_of(exc), exc.message, now)

    @property
    def clean(self) -> bool:
        return self.outcome in ("ok", "streaming")

    def describe(self) -> str:
        out = f"{self.backend} {self.outcome}" + (f" ({self.reason})" if self.reason else "")
        return out if self.purpose in ("first", "failover", "retry") else f"{self.purpose}: {out}"


@dataclass(slots=True)
class Trace:
    """The tries of one request, in the order they began (``origin``: when the request began, monotonic)."""

    origin: float = field(default_factory=time.monotonic)
    tries: list[Try] = field(default_factory=list)

    def begin(self, backend: str, tier: str, purpose: Purpose, input_tokens: int = 0, now: float | None = None) -> Try:
        tried = Try(backend, tier, purpose, time.monotonic() if now is None else now, input_tokens)
        self.tries.append(tried)
        return tried

    def passed_over(self, backend: str, tier: str, outcome: Outcome, reason: str) -> None:
        """A backend not asked (circuit open, a window too small): recorded, with no tokens and no time."""
        self.begin(backend, tier, "failover" if self.tries else "first").close(outcome, reason)

    def purpose(self, attempt: int) -> Purpose:
        """``first``, ``retry`` (``attempt`` > 1 on one backend) or ``failover`` (a backend after another's)."""
        if attempt > 1:
            return "retry"
        return "failover" if self.tries else "first"

    @property
    def eventful(self) -> bool:
        """More than one clean try: worth a line in the log."""
        return len(self.tries) > 1 or any(not t.clean for t in self.tries)

    def path(self) -> str:
        return " -> ".join(t.describe() for t in self.tries)

    def settle(self, outcome: Outcome, reason: str = "") -> None:
        """Close every try still open (a stream the caller left, a request cut short) with ``outcome``."""
        for t in self.tries:
            t.close(outcome, reason)
