"""Prometheus metrics, in a registry owned by the app (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("dialect", "tier", "backend", "status")
        self.requests = Counter("tiergate_requests", "Requests handled", labels, registry=self.registry)
        self.latency = Histogram(
            "tiergate_request_seconds",
            "Request latency",
            ("dialect", "tier", "backend"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds",
            "Streaming time to first token",
            ("tier", "backend"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter("tiergate_tokens", "Tokens", ("tier", "backend", "direction"), registry=self.registry)
        self.cost = Counter("tiergate_cost_usd", "Cost in USD", ("tier", "backend"), registry=self.registry)
        self.failovers = Counter(
            "tiergate_failovers", "Requests served after a failover", ("tier",), registry=self.registry
        )
        self.backend_up = Gauge(
            "tiergate_backend_up", "1 when the backend is healthy", ("backend", "tier"), registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
