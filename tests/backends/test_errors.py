"""Upstream failures -> tiergate errors: context-length rejections of every server we speak to, Retry-After in
both of its forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

import httpx2
import pytest

from tiergate.backends.errors import MAX_RETRY_AFTER_S, from_http_error, from_transport_error, retry_after
from tiergate.errors import ContextLengthExceeded, UpstreamClientError, UpstreamTimeout, UpstreamUnavailable


def _openai(message: str, kind: str = "invalid_request_error", code: object = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def _anthropic(message: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


CONTEXT_BODIES = {
    "claude: prompt is too long": _anthropic("prompt is too long: 250000 tokens > 200000 maximum"),
    "claude: input + max_tokens": _anthropic(
        "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input length or "
        "`max_tokens` and try again"
    ),
    "openai: code": _openai("This model's maximum context length is 8192 tokens.", code="context_length_exceeded"),
    "vllm: maximum context length": _openai(
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (5000 in the "
        "messages, 0 in the completion). Please reduce the length of the messages or completion.",
        kind="BadRequestError",
        code=400,
    ),
    "vllm v1: longer than the maximum model length": _openai(
        "The decoder prompt (length 5000) is longer than the maximum model length of 4096. Make sure that "
        "`max_model_len` is no smaller than the number of text tokens.",
        kind="BadRequestError",
        code=400,
    ),
    "vllm legacy envelope": json.dumps(
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    ).encode(),
    "longer than the model's context length": _openai(
        "The input (250000 tokens) is longer than the model's context length (200000 tokens)."
    ),
    "llama.cpp server": _openai(
        "the request exceeds the available context size, try increasing it", kind="exceed_context_size_error", code=400
    ),
    "tgi": json.dumps(
        {
            "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000 "
            "`inputs` tokens and 20 `max_new_tokens`",
            "error_type": "validation",
        }
    ).encode(),
}


@pytest.mark.parametrize("body", CONTEXT_BODIES.values(), ids=CONTEXT_BODIES.keys())
def test_context_length_rejections_are_recognised(body: bytes) -> None:
    err = from_http_error("b", 400, {}, body)
    assert isinstance(err, ContextLengthExceeded)
    assert err.upstream_status == 400
    assert not err.retryable  # never on the same backend; only on a larger window (dispatch decides)


def test_tgi_validation_is_a_422_too() -> None:
    body = CONTEXT_BODIES["tgi"]
    assert isinstance(from_http_error("tgi", 422, {}, body), ContextLengthExceeded)


@pytest.mark.parametrize(
    "body",
    [
        _anthropic("max_tokens: 300000 > 64000, which is the maximum allowed number of output tokens"),
        _openai("temperature must be <= 2", kind="BadRequestError", code=400),
        _openai("Invalid 'messages[1].role': expected one of system, user, assistant"),
    ],
)
def test_other_client_errors_stay_client_errors(body: bytes) -> None:
    err = from_http_error("b", 400, {}, body)
    assert type(err) is UpstreamClientError


def test_a_server_error_mentioning_the_context_is_still_a_server_error() -> None:
    err = from_http_error("b", 500, {}, _openai("prompt is too long for the KV cache", kind="server_error"))
    assert isinstance(err, UpstreamUnavailable)
    assert err.retryable


def test_overloaded_and_timeouts_by_status() -> None:
    assert isinstance(from_http_error("c", 529, {}, _anthropic("Overloaded", "overloaded_error")), UpstreamUnavailable)
    assert isinstance(from_http_error("c", 504, {}, b"gateway timeout"), UpstreamTimeout)


def test_connect_timeout_is_a_retryable_timeout() -> None:
    err = from_transport_error("b", httpx2.ConnectTimeout("timed out"))
    assert isinstance(err, UpstreamTimeout)
    assert err.retryable
    assert "ConnectTimeout" in err.message


NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC).timestamp()


def test_retry_after_seconds_and_milliseconds() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # the finer one wins
    assert retry_after({}) is None
    assert retry_after({"retry-after": "-4"}) is None


def test_retry_after_http_date() -> None:
    in_30s = format_datetime(datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert in_30s == "Mon, 30 Nov 2026 12:00:30 GMT"
    assert retry_after({"retry-after": in_30s}, now=NOW) == 30.0


def test_retry_after_http_date_in_the_past_means_now() -> None:
    assert retry_after({"retry-after": "Mon, 30 Nov 2026 11:59:00 GMT"}, now=NOW) == 0.0


def test_retry_after_http_date_without_a_zone_is_gmt() -> None:
    assert retry_after({"retry-after": "Mon, 30 Nov 2026 12:00:10 -0000"}, now=NOW) == 10.0


def test_retry_after_far_future_is_capped() -> None:
    assert retry_after({"retry-after": "86400"}) == MAX_RETRY_AFTER_S
    assert retry_after({"retry-after": formatdate(NOW + 86400, usegmt=True)}, now=NOW) == MAX_RETRY_AFTER_S


def test_retry_after_http_date_against_the_wall_clock() -> None:
    value = retry_after({"retry-after": formatdate(None, usegmt=True)})
    assert value is not None
    assert 0.0 <= value <= 1.0  # "now", to the second


@pytest.mark.parametrize("raw", ["soon", "Mon, 99 Foo 2026 12:00:00 GMT", ""])
def test_unreadable_retry_after_is_ignored(raw: str) -> None:
    assert retry_after({"retry-after": raw}) is None


def test_retry_after_reaches_the_error() -> None:
    err = from_http_error("b", 429, {"retry-after": "Mon, 30 Nov 2026 12:00:02 GMT"}, _openai("slow down"))
    assert isinstance(err, UpstreamUnavailable)
    assert err.retry_after is not None  # seconds until that date by the wall clock (0 once it has passed)
