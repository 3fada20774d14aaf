"""One exception tree for the whole gateway.

::

    TiergateError                      (status, kind: what the caller is told)
    ├── ConfigError                    start-up only: a wrong tiergate.yaml
    ├── RequestError                   the caller's fault, never retried
    │   ├── InvalidRequest             400  malformed JSON, wrong types, bad values
    │   ├── AuthenticationFailed       401  missing or wrong key
    │   ├── NotFound                   404  unknown model or path
    │   ├── MethodNotAllowed           405
    │   ├── PayloadTooLarge            413
    │   └── RateLimited                429  budget or rate limit of the caller's key
    │       └── LimitsUnavailable      503  the key's shared limits cannot be checked (Redis down, fail closed)
    └── UpstreamError                  a backend failed; ``backend`` names it
        ├── UpstreamClientError        the backend rejected the request (4xx): not retryable
        │   ├── ContextLengthExceeded  the prompt does not fit this backend's window
        │   └── PrefillRejected        the backend does not continue a final assistant turn
        ├── UpstreamUnavailable        503  connection refused, 5xx, overloaded, no eligible backend
        └── UpstreamTimeout            504  connect, first-token, stall or total deadline
            └── Silent                 504  accepted, then no first token, a stall, no answer: never retried on it

Edges render these in the caller's dialect (``dialects/openai.py``, ``dialects/anthropic.py``); backends
translate their transport's exceptions into this tree once, by status code and structured error type.
"""

from __future__ import annotations

#: Upstream HTTP statuses that say "not now" rather than "not this request": worth trying again or elsewhere.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class TiergateError(Exception):
    status: int = 500
    #: Anthropic's error ``type``; OpenAI envelopes derive their own from the status.
    kind: str = "api_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled whatever the subclass's ``__init__`` asks (keyword-only ``param``, ``backend``...): a body parsed
        in a worker process (``limits.parse_workers``) sends its 400 back to the event loop's process."""
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[TiergateError], args: tuple[object, ...], state: dict[str, object]) -> TiergateError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class ConfigError(TiergateError):
    pass


class RequestError(TiergateError):
    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequest(RequestError):
    pass


class AuthenticationFailed(RequestError):
    status = 401
    kind = "authentication_error"


class NotFound(RequestError):
    status = 404
    kind = "not_found_error"


class MethodNotAllowed(RequestError):
    status = 405
    kind = "invalid_request_error"


class PayloadTooLarge(RequestError):
    status = 413
    kind = "request_too_large"


class RateLimited(RequestError):
    """``retry_after``: seconds until the key's rate window frees up (the answer's ``Retry-After``), if known."""

    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LimitsUnavailable(RateLimited):
    """The key's limits live in Redis, Redis cannot be reached, and they fail closed: refused, not over a limit
    (``retry_after``: when this replica tries Redis again)."""

    status = 503
    kind = "overloaded_error"


class UpstreamError(TiergateError):
    """A backend failed. ``retryable`` says whether trying again (here or elsewhere) may help."""

    status = 502
    kind = "api_error"
    retryable = True
    #: The upstream's machine-readable error code, passed on to the caller in its dialect's envelope: an
    #: OpenAI-style ``code`` (``content_policy_violation``), else Anthropic's ``error.type`` (``permission_error``).
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"backend {backend!r}: {message}")
        self.backend = backend
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.code = code


class UpstreamClientError(UpstreamError):
    status = 400
    kind = "invalid_request_error"
    retryable = False


class ContextLengthExceeded(UpstreamClientError):
    pass


class PrefillRejected(UpstreamClientError):
    """The backend refused a final assistant turn ("does not support assistant message prefill"): it does not
    continue a prefix. Learned by dispatch for the life of the process; a continuation is restarted instead."""


class UpstreamUnavailable(UpstreamError):
    status = 503
    kind = "overloaded_error"


class Saturated(UpstreamUnavailable):
    """Every slot and queue place of a backend is taken: overflow to the next target, not a fault of the backend."""


class SpliceDiverged(UpstreamError):
    """A stream cut mid-answer could not be completed: the answer resumed on ``resumed_on`` differs from the text
    the caller already has. Names the original failure; the stream ends with it as an explicit error."""

    def __init__(self, original: UpstreamError, resumed_on: str, why: str) -> None:
        TiergateError.__init__(self, f"{original.message}; resumed on {resumed_on!r}, {why}, so it cannot be completed")
        self.backend = original.backend
        self.upstream_status = original.upstream_status
        self.retry_after = None
        self.resumed_on = resumed_on


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout_error"


class NoBackendAvailable(UpstreamUnavailable):
    """No eligible backend could take the request (all down, or none allowed by policy)."""

    def __init__(self, message: str) -> None:
        TiergateError.__init__(self, message)
        self.backend = ""
        self.upstream_status = None
        self.retry_after = None


class Silent(UpstreamTimeout):
    """The backend took the request and then said nothing in time (no first token, a stall, no answer within the
    attempt's timeout). Unlike a refused or failed exchange, it is not retried on the same backend within the
    request: waiting for it again would spend the caller's time budget twice."""
