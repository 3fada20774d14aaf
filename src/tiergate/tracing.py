"""OpenTelemetry traces: one span per request, child spans for inspect, decide, each dispatch attempt and account.

Off by default. ``tracing: {enabled: true}`` in the config (or ``TIERGATE_TRACING=1``) installs the official SDK's
tracer provider with the OTLP/HTTP exporter (endpoint and headers from the config or the standard
``OTEL_EXPORTER_OTLP_*`` variables); the SDK and exporter are the ``[otel]`` extra. Disabled, every call here
goes to OpenTelemetry's no-op tracer: nothing is recorded and nothing is exported.

Attributes follow the GenAI semantic conventions (``gen_ai.*``, semconv 1.37+) where they fit; what is the
gateway's own (tier, route, the attempt's outcome and why it was abandoned, cost) is under ``tiergate.*``.
Prompts and answers are never put on spans.

The request span is started by the edge and ended by the account step (:meth:`RequestTrace.end`), the one place
every ending passes through, so a stream's span covers the whole stream. Spans are parented explicitly, not
through the ambient context alone: a stream's body runs in another task than the handler that opened it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from tiergate.config import TracingConfig

__all__ = ["PROVIDERS", "AttemptSpan", "RequestTrace", "Tracing", "stage"]

log = logging.getLogger("tiergate.tracing")
INSTRUMENTATION = "tiergate"

#: ``gen_ai.provider.name`` by backend kind: the semconv's well-known values where there is one.
PROVIDERS = {
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "vertex": "gcp.vertex_ai",
    "openai": "openai",  # the OpenAI-compatible protocol; the server (vLLM, TGI, ...) is in server.address
    "embedded": "llama.cpp",
}

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"


@dataclass(frozen=True, slots=True)
class AttemptSpan:
    """One try of one backend, as the dispatcher recorded it (:class:`tiergate.dispatch.trace.Try`), wall times
    in nanoseconds."""

    backend: str
    kind: str
    model: str
    tier: str
    start_ns: int
    end_ns: int
    outcome: str  # ok, failed, silent, timeout, rejected, prefill_rejected, skipped, cut, lost, ...
    purpose: str = "first"  # first, retry, failover, continue, restart, hedge, escalate
    number: int = 1  # the try's place in the request
    error: str | None = None  # set when the try did not answer: its outcome
    reason: str | None = None  # why it was abandoned, in words
    status: int | None = None  # the upstream's HTTP status, where it answered
    input_tokens: int = 0
    output_tokens: int = 0


class RequestTrace:
    """The spans of one request. ``span`` is the request's own; children hang under it explicitly."""

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self.tracer = tracer
        self.span = span
        self._ended = False

    @property
    def recording(self) -> bool:
        return self.span.is_recording()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the request span the ambient parent (for the pipeline's own ``stage`` spans) in this task."""
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            yield
        finally:
            otel_context.detach(token)

    @contextlib.contextmanager
    def stage(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
        """A child span of the request for a stage (``account``; the pipeline's own stages use :func:`stage`)."""
        parent = trace.set_span_in_context(self.span)
        with self.tracer.start_as_current_span(f"tiergate.{name}", context=parent) as span:
            _set(span, attributes or {})
            yield span

    def attempt(self, a: AttemptSpan) -> None:
        """A dispatch attempt, recorded after the fact with its own start and end times (a CLIENT span)."""
        if not self.recording:
            return
        span = self.tracer.start_span(
            f"chat {a.model}",
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            start_time=a.start_ns,
        )
        _set(
            span,
            {
                OPERATION: "chat",
                PROVIDER: PROVIDERS.get(a.kind, a.kind),
                REQUEST_MODEL: a.model,
                INPUT_TOKENS: a.input_tokens or None,
                OUTPUT_TOKENS: a.output_tokens or None,
                "tiergate.backend": a.backend,
                "tiergate.tier": a.tier,
                "tiergate.attempt.number": a.number,
                "tiergate.attempt.purpose": a.purpose,
                "tiergate.attempt.outcome": a.outcome,
                "tiergate.attempt.reason": a.reason,
                "http.response.status_code": a.status,
            },
        )
        if a.error is not None:
            span.set_attribute(ERROR_TYPE, a.error)
            span.set_status(Status(StatusCode.ERROR, a.reason))
        span.end(end_time=a.end_ns)

    def set(self, attributes: dict[str, Any]) -> None:
        """Attributes of the request span (``gen_ai.request.*`` once the body is parsed, the route once decided)."""
        _set(self.span, attributes)

    def end(
        self, *, status: str, http_status: int, error: str | None = None, attributes: dict[str, Any] | None = None
    ) -> None:
        """End the request span (once: later calls are ignored)."""
        if self._ended:
            return
        self._ended = True
        _set(self.span, {"tiergate.status": status, "http.response.status_code": http_status, **(attributes or {})})
        if error is not None or http_status >= 500:
            self.span.set_attribute(ERROR_TYPE, error or str(http_status))
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


@contextlib.contextmanager
def stage(tracer: Tracer, name: str) -> Iterator[Span]:
    """A span for a pipeline stage under the ambient span (:meth:`RequestTrace.active`), e.g. ``inspect``."""
    with tracer.start_as_current_span(f"tiergate.{name}") as span:
        yield span


def _set(span: Span, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)


class Tracing:
    """The process's tracer: the SDK's when enabled, OpenTelemetry's no-op tracer otherwise."""

    def __init__(self, tracer: Tracer, provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self.provider = provider

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(trace.NoOpTracer())

    @classmethod
    def from_config(cls, config: TracingConfig, exporter: SpanExporter | None = None) -> Tracing:
        """A tracer provider of the gateway's own (the global one is left alone: an embedding application may
        have its own). ``exporter`` replaces the configured one (tests: the SDK's in-memory exporter)."""
        enabled = config.enabled or os.environ.get("TIERGATE_TRACING", "").lower() in ("1", "true", "yes")
        if not enabled and exporter is None:
            return cls.disabled()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError as exc:  # pragma: no cover - the [otel] extra is part of [test]
            raise RuntimeError(
                "tracing is enabled but the OpenTelemetry SDK is not installed; pip install 'tiergate[otel]'"
            ) from exc
        resource = Resource.create({"service.name": config.service_name})
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(_exporter(config)))
        log.info("tracing on: %s", "OTLP/HTTP to " + (config.endpoint or "the OTEL_EXPORTER_OTLP_* endpoint"))
        return cls(provider.get_tracer(INSTRUMENTATION), provider)

    def start(self, dialect: str, request_id: str, path: str) -> RequestTrace:
        """The span of one request (SERVER), named as the semconv names a chat until the model is known."""
        span = self.tracer.start_span(
            "chat",
            kind=SpanKind.SERVER,
            attributes={
                OPERATION: "chat",
                "tiergate.dialect": dialect,
                "tiergate.request_id": request_id,
                "url.path": path,
            },
        )
        return RequestTrace(self.tracer, span)

    def shutdown(self) -> None:
        """Flush what is still queued and stop the exporter (the app's shutdown)."""
        if self.provider is not None:
            self.provider.shutdown()


def _exporter(config: TracingConfig) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    kwargs: dict[str, Any] = {}
    if config.endpoint:
        kwargs["endpoint"] = config.endpoint
    if config.headers:
        kwargs["headers"] = dict(config.headers)
    return OTLPSpanExporter(**kwargs)
