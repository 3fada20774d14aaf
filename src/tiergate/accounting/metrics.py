"""Prometheus metrics, in a registry owned by the app (no process-wide globals).

``status`` is the request's outcome, the same value on every series of one request: ``ok``, ``cancelled``
(the client went away), ``error`` (a stream that failed after its first byte), ``refused`` (the hard
policy's refusal) or, for a request answered with an error envelope, its HTTP status (``400``, ``503``, ...).
Errors are attributed to the tier and backend they happened on when the gateway knows them (the backend
that failed last, else the tier the plan chose), and to ``none`` before a plan exists (bad input, auth).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CIRCUIT_STATES = ("closed", "half-open", "open")
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("dialect", "tier", "backend", "status")
        self.requests = Counter("tiergate_requests", "Requests handled", labels, registry=self.registry)
        self.latency = Histogram(
            "tiergate_request_seconds",
            "Request latency, by outcome",
            labels,
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
        self.tokens = Counter(
            "tiergate_tokens", "Tokens, by outcome", ("tier", "backend", "direction", "status"), registry=self.registry
        )
        self.cost = Counter("tiergate_cost_usd", "Cost in USD", ("tier", "backend"), registry=self.registry)
        self.failovers = Counter(
            "tiergate_failovers", "Requests served after a failover", ("tier",), registry=self.registry
        )
        self.backend_up = Gauge(
            "tiergate_backend_up",
            "1 when the backend is healthy and its circuit is not open (it takes traffic)",
            ("backend", "tier"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "tiergate_backend_in_flight",
            "Requests in flight on the backend or waiting for one of its slots (for autoscaling on load)",
            ("backend", "tier"),
            registry=self.registry,
        )
        self.circuit = Gauge(
            "tiergate_backend_circuit_state",
            "1 for the backend's current circuit-breaker state (closed, half-open, open), 0 for the others",
            ("backend", "tier", "state"),
            registry=self.registry,
        )

        self.loop_lag = Histogram(
            "tiergate_event_loop_lag_seconds",
            "How late the event loop woke a timer (server.loop_lag_interval_s): the longest it was kept busy",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_busy = Histogram(
            "tiergate_event_loop_busy_seconds",
            "The part of each event-loop lag this process spent on a CPU (its own work holding the loop)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "tiergate_event_loop_lag_max_seconds", "The largest event-loop lag seen since start", registry=self.registry
        )
        self.bodies_parsed = Counter(
            "tiergate_bodies_parsed",
            "Request bodies decoded and validated, by where: inline (small), thread, or process (limits.parse_workers)",
            ("where",),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
