"""The one boundary where upstream failures become :mod:`tiergate.errors`, by status and structured type.

Both wire envelopes are understood: OpenAI's ``{"error": {"type", "code", "message"}}`` and Anthropic's
``{"type": "error", "error": {"type", "message"}}``. Messages are never matched by substring.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx2 as httpx

from tiergate.errors import (
    ContextLengthExceeded,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
UNAVAILABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER_S = 60.0


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds form), capped; None when absent or odd."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue
        if value >= 0:
            return min(value, MAX_RETRY_AFTER_S)
    return None


def _envelope(content: bytes) -> tuple[str | None, str | None, str]:
    """(type, code, message) from either dialect's error body."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, None, content[:200].decode("utf-8", "replace").strip()
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None, str(data)[:200]
    code = err.get("code")
    return err.get("type"), str(code) if code is not None else None, str(err.get("message") or "")


def from_http_error(backend: str, status: int, headers: Mapping[str, str], content: bytes) -> UpstreamError:
    err_type, code, message = _envelope(content)
    detail = f"HTTP {status}" + (f" {err_type}" if err_type else "") + (f": {message}" if message else "")
    after = retry_after(headers)
    if code in CONTEXT_CODES or err_type == "context_length_exceeded":
        return ContextLengthExceeded(detail, backend=backend, upstream_status=status)
    if status in UNAVAILABLE_STATUS or err_type == "overloaded_error" or status >= 500:
        cls = UpstreamTimeout if status in (408, 504) else UpstreamUnavailable
        return cls(detail, backend=backend, upstream_status=status, retry_after=after)
    return UpstreamClientError(detail, backend=backend, upstream_status=status)


def from_transport_error(backend: str, exc: Exception) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"timed out ({type(exc).__name__})", backend=backend)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(f"cannot connect ({exc})", backend=backend)
    return UpstreamUnavailable(f"connection failed ({type(exc).__name__}: {exc})", backend=backend)


def malformed(backend: str, what: str) -> UpstreamError:
    """A reply that does not follow the protocol: 502 Bad Gateway (retryable elsewhere)."""
    return UpstreamError(f"malformed upstream reply: {what}", backend=backend)
