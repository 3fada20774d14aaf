"""OpenTelemetry traces: a span per request with inspect / decide / attempt / account children (in-memory exporter),
and a real OTLP/HTTP export to a collector stand-in on loopback."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import CLAUDE_KEY_ENV, backend_configs
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault
from tests.support.servers import serve_app
from tiergate.api import create_app
from tiergate.config import TracingConfig, parse_config
from tiergate.tracing import Tracing

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def traced(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> Iterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    config = parse_config(
        {
            "backends": backend_configs(fake_claude[1], fake_openai[1]),
            "router": {"kind": "rules"},
            "ledger": {"url": "sqlite:///:memory:"},
        }
    )
    os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
    tracing = Tracing.from_config(TracingConfig(), exporter=exporter)
    with serve_app(create_app(config, tracing=tracing)) as url:
        yield url, exporter


def request_spans(exporter: InMemorySpanExporter, request_id: str, timeout_s: float = 10.0) -> list[ReadableSpan]:
    """The spans of the trace whose request span carries ``request_id``, once the request span has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        spans = exporter.get_finished_spans()
        roots = [s for s in spans if (s.attributes or {}).get("tiergate.request_id") == request_id]
        if roots:
            trace_id = roots[0].context.trace_id
            return [s for s in spans if s.context.trace_id == trace_id]
        time.sleep(0.02)
    raise AssertionError(f"no finished request span for {request_id}")


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_a_completion_is_one_trace_with_its_stages(traced: tuple[str, InMemorySpanExporter]) -> None:
    url, exporter = traced
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="open", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16, temperature=0.2
    )
    request_id = raw.headers["x-request-id"]
    spans = by_name(request_spans(exporter, request_id))
    root = spans["chat open"]
    assert root.kind is SpanKind.SERVER
    assert root.parent is None
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "open"
    assert attrs["gen_ai.request.max_tokens"] == 16
    assert attrs["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert attrs["tiergate.tier"] == "open"
    assert attrs["tiergate.backend"] == "vllm"
    assert attrs["tiergate.route"] == raw.headers["x-tiergate-route"]
    assert attrs["http.response.status_code"] == 200
    usage = raw.parse().usage
    assert usage is not None
    assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
    for stage in ("tiergate.inspect", "tiergate.decide", "tiergate.account"):
        span = spans[stage]
        assert span.parent is not None, stage
        assert span.parent.span_id == root.context.span_id, stage
    decide = dict(spans["tiergate.decide"].attributes or {})
    assert decide["tiergate.tier"] == "open"
    assert "Name a colour" not in str([s.attributes for s in spans.values()]), "prompts never go on spans"


def test_a_stream_span_ends_with_the_stream(traced: tuple[str, InMemorySpanExporter]) -> None:
    url, exporter = traced
    client = anthropic.Anthropic(base_url=url, api_key="unused")
    with client.messages.with_streaming_response.create(
        model="closed", max_tokens=32, stream=True, messages=[{"role": "user", "content": "Hello"}]
    ) as raw:
        request_id = raw.headers["x-request-id"]
        events = list(raw.iter_lines())
    assert any("message_stop" in line for line in events)
    spans = by_name(request_spans(exporter, request_id))
    root = spans["chat closed"]
    attrs = dict(root.attributes or {})
    assert attrs["tiergate.dialect"] == "anthropic"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["tiergate.backend"] == "claude"
    assert attrs["tiergate.status"] == "ok"
    output_tokens = attrs["gen_ai.usage.output_tokens"]
    assert isinstance(output_tokens, int)
    assert output_tokens > 0
    account = spans["tiergate.account"]
    assert account.parent is not None
    assert account.parent.span_id == root.context.span_id
    assert root.end_time is not None
    assert account.end_time is not None
    assert root.end_time >= account.end_time


def test_an_error_is_a_failed_span(traced: tuple[str, InMemorySpanExporter]) -> None:
    url, exporter = traced
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert r.status_code == 404
    root = by_name(request_spans(exporter, r.headers["x-request-id"]))["chat no-such-model"]
    attrs = dict(root.attributes or {})
    assert attrs["http.response.status_code"] == 404
    assert attrs["tiergate.status"] == "error"
    assert attrs["error.type"] == "404"
    assert root.status.status_code is StatusCode.ERROR


def test_tracing_is_off_by_default() -> None:
    tracing = Tracing.from_config(TracingConfig())
    assert not tracing.enabled
    span = tracing.start("openai", "r1", "/v1/chat/completions")
    assert not span.recording


class Collector:
    """An OTLP/HTTP collector stand-in: keeps each export request it receives, decoded."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.received = threading.Event()
        self.app = Starlette(routes=[Route("/v1/traces", self.export, methods=["POST"])])

    async def export(self, request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        self.requests.append(message)
        self.headers.append(dict(request.headers))
        self.received.set()
        return Response(b"", media_type="application/x-protobuf")

    def span_names(self) -> list[str]:
        return [
            span.name
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def resource(self) -> dict[str, Any]:
        attrs = self.requests[0].resource_spans[0].resource.attributes
        return {a.key: a.value.string_value for a in attrs}


def test_enabled_in_config_exports_over_otlp_http(fake_openai: tuple[FakeOpenAI, str]) -> None:
    collector = Collector()
    with serve_app(collector.app) as collector_url:
        config = parse_config(
            {
                "backends": [
                    {
                        "name": "vllm",
                        "tier": "open",
                        "kind": "openai",
                        "base_url": fake_openai[1] + "/v1",
                        "model": "fake-llama-8b",
                    }
                ],
                "ledger": {"url": "sqlite:///:memory:"},
                "tracing": {
                    "enabled": True,
                    "endpoint": collector_url + "/v1/traces",
                    "headers": {"x-collector-key": "k1"},
                    "service_name": "tiergate-test",
                },
            }
        )
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(serve_app(create_app(config)))
            r = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                timeout=10,
            )
            assert r.status_code == 200, r.text
        # the app's shutdown flushed the batch processor
        assert collector.received.wait(10)
    assert "chat auto" in collector.span_names()
    assert {"tiergate.inspect", "tiergate.decide", "tiergate.account"} <= set(collector.span_names())
    assert collector.resource()["service.name"] == "tiergate-test"
    assert collector.headers[0]["x-collector-key"] == "k1"


def test_each_dispatch_attempt_is_a_client_span() -> None:
    """The primary answers 503 (no retry on it: a replica is ready), the replica answers: two CLIENT spans under
    the request span, in order, the first failed with the upstream's status and why it was left."""
    primary, replica = FakeOpenAI(models=["m"]), FakeOpenAI(models=["m"])
    exporter = InMemorySpanExporter()
    with serve_app(primary) as p_url, serve_app(replica) as r_url:
        backends = [
            {"name": name, "tier": "open", "kind": "openai", "base_url": url + "/v1", "model": "m", "weight": weight}
            for name, url, weight in (("primary", p_url, 1.0), ("replica", r_url, 0.5))
        ]
        config = parse_config({"backends": backends, "ledger": {"url": "sqlite:///:memory:"}})
        tracing = Tracing.from_config(TracingConfig(), exporter=exporter)
        with serve_app(create_app(config, tracing=tracing)) as url:
            primary.script(Fault(503))
            r = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "open", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-tiergate-backend"] == "replica"
            spans = request_spans(exporter, r.headers["x-request-id"])
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    tries = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert [dict(s.attributes or {})["tiergate.backend"] for s in tries] == ["primary", "replica"]
    failed, served = (dict(s.attributes or {}) for s in tries)
    assert failed["tiergate.attempt.outcome"] == "failed"
    assert failed["http.response.status_code"] == 503
    assert failed["error.type"] == "failed"
    assert "503" in str(failed["tiergate.attempt.reason"])
    assert tries[0].status.status_code is StatusCode.ERROR
    assert served["tiergate.attempt.outcome"] == "ok"
    assert served["tiergate.attempt.purpose"] == "failover"
    assert served["gen_ai.provider.name"] == "openai"
    assert served["gen_ai.request.model"] == "m"
    assert tries[0].name == "chat m"
    for s in tries:
        assert s.parent is not None
        assert s.parent.span_id == root.context.span_id
        assert root.start_time is not None
        assert s.start_time is not None
        assert s.end_time is not None
        assert root.start_time <= s.start_time <= s.end_time
