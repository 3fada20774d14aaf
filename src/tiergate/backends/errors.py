"""The one boundary where upstream failures become :mod:`tiergate.errors`, by status and structured type.

Three wire envelopes are understood: OpenAI's ``{"error": {"type", "code", "message"}}``, Anthropic's
``{"type": "error", "error": {"type", "message"}}`` and older vLLM's flat ``{"object": "error", "type",
"message", "code"}``. Errors are classified by status, type and code; the message text is read for one
thing only, a context-length rejection that carries no structured code (Claude's ``invalid_request_error``
"prompt is too long: N tokens > M maximum", vLLM's ``BadRequestError`` "This model's maximum context length
is ..."), and only on a 400/413/422, so a server error is never mistaken for one.

>>> from_http_error("claude", 400, {}, b'{"type": "error", "error": {"type": "invalid_request_error",'
...                 b' "message": "prompt is too long: 250000 tokens > 200000 maximum"}}').__class__.__name__
'ContextLengthExceeded'
>>> retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412480.0)
30.0
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx2

from tiergate.errors import (
    RETRYABLE_STATUS,
    ContextLengthExceeded,
    PrefillRejected,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

#: Structured codes and types that say "the prompt does not fit" (OpenAI, vLLM >= 0.9, llama.cpp server).
CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
CONTEXT_TYPES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
#: Statuses a context-length rejection comes with (413: some proxies; 422: TGI's validation errors).
CONTEXT_STATUS = frozenset({400, 413, 422})
#: The wording of context-length rejections that carry no structured code, matched case-insensitively.
CONTEXT_MESSAGE = re.compile(
    "|".join(
        (
            r"prompt is too long",  # Claude: "prompt is too long: 250000 tokens > 200000 maximum"
            r"exceed context limit",  # Claude: "input length and `max_tokens` exceed context limit: ..."
            r"maximum context length",  # OpenAI, vLLM: "This model's maximum context length is 4096 tokens. ..."
            r"longer than the (?:model's context length|maximum model length)",  # vLLM v1, Together
            r"exceeds? the available context size",  # llama.cpp server
            r"inputs`? tokens \+ `?max_new_tokens`? must be <=",  # TGI: "... + `max_new_tokens` must be <= 4096"
        )
    ),
    re.IGNORECASE,
)
#: The wording of a refused final assistant turn (Claude Sonnet 4.6 / Opus 4.7 and later, OpenAI-compatible
#: servers that do not continue a prefix or do not know ``continue_final_message``), on a 400/422.
PREFILL_MESSAGE = re.compile(
    r"prefill|continue_final_message|final assistant (?:message|turn)|must end with a user message", re.IGNORECASE
)
MAX_RETRY_AFTER_S = 60.0


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, or ``retry-after`` in either of its forms (delay-seconds or
    an HTTP-date, counted from ``now``, the wall clock by default); capped at ``MAX_RETRY_AFTER_S``, a date in
    the past is 0; None when absent or unreadable.

    >>> retry_after({"retry-after": "120"}), retry_after({"retry-after-ms": "250"})
    (60.0, 0.25)
    >>> retry_after({"retry-after": "soon"}) is None
    True
    """
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        value: float | None
        try:
            value = float(raw) * scale
        except ValueError:
            value = _seconds_until(raw, time.time() if now is None else now) if name == "retry-after" else None
        if value is not None and value >= 0:
            return min(value, MAX_RETRY_AFTER_S)
    return None


def _seconds_until(http_date: str, now: float) -> float | None:
    """Seconds from ``now`` (epoch) to an HTTP-date (``Wed, 21 Oct 2015 07:28:00 GMT``), never negative."""
    try:
        when = parsedate_to_datetime(http_date.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _envelope(content: bytes) -> tuple[str | None, str | None, str, str | None]:
    """(type, code, message, machine code) from any of the understood error bodies. The machine code is what the
    caller is told (:attr:`UpstreamError.code`): a textual OpenAI-style ``code`` (not vLLM's numeric status), or
    the ``error.type`` of Anthropic's envelope, which is its code."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, None, content[:200].decode("utf-8", "replace").strip(), None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        if isinstance(data, dict) and data.get("object") == "error":  # vLLM before 0.9: the error is the body
            err = data
        else:
            return None, None, str(data)[:200], None
    code = err.get("code")
    kind = err.get("type")
    message = str(err.get("message") or "")
    machine = code if isinstance(code, str) and code and not code.isdigit() else None
    if machine is None and isinstance(data, dict) and data.get("type") == "error" and isinstance(kind, str):
        machine = kind or None
    return (str(kind) if kind is not None else None), (str(code) if code is not None else None), message, machine


def is_context_length(status: int, err_type: str | None, code: str | None, message: str) -> bool:
    """Does this rejection say the prompt does not fit the backend's context window?

    >>> is_context_length(400, "BadRequestError", "400", "This model's maximum context length is 4096 tokens.")
    True
    >>> is_context_length(500, "server_error", None, "prompt is too long")  # a server error stays one
    False
    """
    if code in CONTEXT_CODES or err_type in CONTEXT_TYPES:
        return True
    return status in CONTEXT_STATUS and CONTEXT_MESSAGE.search(message) is not None


def is_prefill_rejection(status: int, message: str) -> bool:
    """Does this rejection say the backend does not continue a final assistant turn?

    >>> is_prefill_rejection(400, "This model does not support assistant message prefill.")
    True
    >>> is_prefill_rejection(500, "prefill failed"), is_prefill_rejection(400, "bad logit_bias")
    (False, False)
    """
    return status in (400, 422) and PREFILL_MESSAGE.search(message) is not None


def from_http_error(backend: str, status: int, headers: Mapping[str, str], content: bytes) -> UpstreamError:
    """An upstream's error answer as one of ours, its machine-readable code kept for the caller.

    >>> err = from_http_error("vllm", 400, {}, b'{"error": {"type": "invalid_request_error",'
    ...                       b' "code": "content_policy_violation", "message": "rejected by the safety system"}}')
    >>> type(err).__name__, err.code
    ('UpstreamClientError', 'content_policy_violation')
    >>> from_http_error("claude", 403, {}, b'{"type": "error", "error": {"type": "permission_error",'
    ...                 b' "message": "no access"}}').code
    'permission_error'
    """
    err_type, code, message, machine = _envelope(content)
    detail = f"HTTP {status}" + (f" {err_type}" if err_type else "") + (f": {message}" if message else "")
    after = retry_after(headers)
    if is_context_length(status, err_type, code, message):
        return ContextLengthExceeded(detail, backend=backend, upstream_status=status, code=machine)
    if is_prefill_rejection(status, message):
        return PrefillRejected(detail, backend=backend, upstream_status=status, code=machine)
    if status in RETRYABLE_STATUS or err_type == "overloaded_error" or status >= 500:
        cls = UpstreamTimeout if status in (408, 504) else UpstreamUnavailable
        return cls(detail, backend=backend, upstream_status=status, retry_after=after, code=machine)
    return UpstreamClientError(detail, backend=backend, upstream_status=status, code=machine)


def from_transport_error(backend: str, exc: Exception) -> UpstreamError:
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout(f"timed out ({type(exc).__name__})", backend=backend)
    if isinstance(exc, httpx2.ConnectError):
        return UpstreamUnavailable(f"cannot connect ({exc})", backend=backend)
    return UpstreamUnavailable(f"connection failed ({type(exc).__name__}: {exc})", backend=backend)


def malformed(backend: str, what: str) -> UpstreamError:
    """A reply that does not follow the protocol: 502 Bad Gateway (retryable elsewhere)."""
    return UpstreamError(f"malformed upstream reply: {what}", backend=backend)
