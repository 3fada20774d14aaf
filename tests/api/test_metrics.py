"""/metrics over HTTP: every series carries the request's outcome, errors count where they happened, failovers
are counted, and an open circuit shows."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault, StallStream, script_marker
from tiergate.config import parse_config

AN_HEADERS = {"anthropic-version": "2023-06-01"}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series (0 when it does not exist yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def scrape(base: str) -> str:
    resp = httpx.get(base + "/metrics")
    assert resp.status_code == 200
    return resp.text


def chat(base: str, model: str, text: str = "hello", **body: object) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": text}], **body}
    return httpx.post(base + "/v1/chat/completions", json=payload, timeout=30)


@pytest.fixture(scope="module")
def gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    backends = backend_configs(fake_claude[1], fake_openai[1])
    for b in backends:  # these tests count single failures: no retry, no circuit opening
        b["breaker_failures"] = 1000
    config = parse_config({"backends": backends, "router": {"kind": "rules"}, "dispatch": {"attempts": 1}})
    with serve_gateway(config) as url:
        yield url


def test_latency_and_tokens_carry_the_outcome(gateway: str) -> None:
    ok = {"dialect": "openai", "tier": "open", "backend": "vllm", "status": "ok"}
    before = scrape(gateway)
    assert chat(gateway, "vllm").status_code == 200
    after = scrape(gateway)
    assert (
        sample(after, "tiergate_request_seconds_count", **ok)
        == sample(before, "tiergate_request_seconds_count", **ok) + 1
    )
    tokens = {"tier": "open", "backend": "vllm", "status": "ok"}
    assert sample(after, "tiergate_tokens_total", direction="input", **tokens) > sample(
        before, "tiergate_tokens_total", direction="input", **tokens
    )


def test_a_cancelled_stream_is_labelled_cancelled(gateway: str) -> None:
    labels = {"tier": "open", "backend": "vllm", "status": "cancelled"}
    stall = script_marker(StallStream(after_events=3, seconds=5))
    body = {"model": "vllm", "stream": True, "messages": [{"role": "user", "content": f"Tell me {stall}"}]}
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        assert '"content":"Hello' in next(line for line in lines if '"content":"H' in line)
    deadline = time.monotonic() + 5
    while (text := scrape(gateway)) and sample(text, "tiergate_requests_total", dialect="openai", **labels) < 1:
        assert time.monotonic() < deadline, "the cancelled stream was never counted"
        time.sleep(0.05)
    assert sample(text, "tiergate_request_seconds_count", dialect="openai", **labels) >= 1
    assert sample(text, "tiergate_tokens_total", direction="output", **labels) >= 1  # what was streamed


def test_upstream_errors_count_on_the_backend_that_failed(gateway: str, fake_claude: tuple[FakeAnthropic, str]) -> None:
    failed = {"dialect": "anthropic", "tier": "closed", "backend": "claude", "status": "503"}
    before = scrape(gateway)
    fake_claude[0].script(Fault(529))
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(gateway + "/v1/messages", json=body, headers=AN_HEADERS)
    assert resp.status_code == 503, resp.text
    assert fake_claude[0].pending_steps == 0
    after = scrape(gateway)
    for name in ("tiergate_requests_total", "tiergate_request_seconds_count"):
        assert sample(after, name, **failed) == sample(before, name, **failed) + 1, name
    # Before any plan exists (bad input) there is no tier or backend to blame.
    assert httpx.post(gateway + "/v1/chat/completions", json={"model": "auto", "messages": []}).status_code == 400
    bad = {"dialect": "openai", "tier": "none", "backend": "none", "status": "400"}
    assert sample(scrape(gateway), "tiergate_requests_total", **bad) >= 1


def test_failovers_are_counted(
    gateway: str, fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    before = scrape(gateway)
    fake_claude[0].script(Fault(529))
    resp = chat(gateway, "closed")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tiergate-route"] == "explicit:closed;failover:closed-down"
    after = scrape(gateway)
    assert (
        sample(after, "tiergate_failovers_total", tier="open")
        == sample(before, "tiergate_failovers_total", tier="open") + 1
    )
    served = {"dialect": "openai", "tier": "open", "backend": "vllm", "status": "ok"}
    assert sample(after, "tiergate_requests_total", **served) == sample(before, "tiergate_requests_total", **served) + 1
    # A request served where it was meant to go is not a failover.
    assert chat(gateway, "closed").status_code == 200
    assert sample(scrape(gateway), "tiergate_failovers_total", tier="open") == sample(
        after, "tiergate_failovers_total", tier="open"
    )


def test_an_open_circuit_shows_and_later_errors_count_on_the_planned_tier(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    backends = backend_configs(fake_claude[1], fake_openai[1])
    backends[1].update(breaker_failures=1, breaker_cooldown_s=600)  # claude: one failure opens it, for long
    config = parse_config(
        {
            "backends": backends,
            "router": {"kind": "rules"},
            "dispatch": {"attempts": 1},
            "policy": {"failover": {"closed_to_open": False}},
        }
    )
    with serve_gateway(config) as base:
        fresh = scrape(base)
        assert sample(fresh, "tiergate_backend_up", backend="claude", tier="closed") == 1.0
        assert sample(fresh, "tiergate_backend_circuit_state", backend="claude", tier="closed", state="closed") == 1.0
        fake_claude[0].script(Fault(529))
        assert chat(base, "closed").status_code == 503
        opened = scrape(base)
        assert sample(opened, "tiergate_backend_up", backend="claude", tier="closed") == 0.0
        circuit = {
            s: sample(opened, "tiergate_backend_circuit_state", backend="claude", tier="closed", state=s)
            for s in ("closed", "half-open", "open")
        }
        assert circuit == {"closed": 0.0, "half-open": 0.0, "open": 1.0}
        assert sample(opened, "tiergate_backend_up", backend="vllm", tier="open") == 1.0
        # Claude is skipped now: nothing failed on a backend, so the error counts on the tier the plan chose.
        skipped = chat(base, "closed")
        assert skipped.status_code == 503
        assert "x-tiergate-backend" not in skipped.headers
        assert (skipped.headers["x-tiergate-tier"], skipped.headers["x-tiergate-route"]) == (
            "closed",
            "explicit:closed",
        )
        labels = {"dialect": "openai", "tier": "closed", "backend": "none", "status": "503"}
        assert sample(scrape(base), "tiergate_requests_total", **labels) == 1.0
    assert fake_claude[0].pending_steps == 0


def test_the_event_loop_lag_is_measured_and_can_be_turned_off(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    for interval, probed in ((0.01, True), (0.0, False)):
        config = parse_config(
            {"backends": backend_configs(fake_claude[1], fake_openai[1]), "server": {"loop_lag_interval_s": interval}}
        )
        with serve_gateway(config) as url:
            deadline = time.monotonic() + 30
            while True:
                text = httpx.get(url + "/metrics").text
                count = next(
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith("tiergate_event_loop_lag_seconds_count")
                )
                if count > 0 or not probed or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert (count > 0) is probed
        assert "tiergate_event_loop_lag_max_seconds" in text
