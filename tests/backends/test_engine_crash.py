"""A crashing embedded engine never takes the gateway down: the real SmolLM2 worker, killed with SIGSEGV and
SIGKILL mid-request, over HTTP in both dialects, streaming and not."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import serve_gateway
from tiergate.config import parse_config

pytestmark = pytest.mark.slow
AN_HEADERS = {"anthropic-version": "2023-06-01"}
# SmolLM2 answers this at length at temperature 0, so the worker is still generating when it is killed.
LONG = [{"role": "user", "content": "Count from 1 to 200, separated by commas."}]


def engine(base: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(base + "/readyz", timeout=10).json()["backends"]["local"]["engine"]
    return status


def wait_for(base: str, check: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = engine(base)
        if check(status):
            return status
        assert time.monotonic() < deadline, f"engine never got there: {status}"
        time.sleep(0.05)


def kill_when_generating(base: str, sig: signal.Signals, started: threading.Event) -> threading.Thread:
    pid = engine(base)["pid"]

    def kill() -> None:
        started.wait(60)
        time.sleep(0.3)  # a few tokens into the answer
        os.kill(pid, sig)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def when_in_flight(base: str, backend: str = "local") -> threading.Event:
    """Set once a request is in flight on ``backend`` (a non-streamed answer shows nothing until it ends)."""
    started = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(base + "/readyz", timeout=10).json()["backends"][backend]["in_flight"] == 1:
                started.set()
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return started


def gateway_config(**dispatch: Any) -> Any:
    backend = {"name": "local", "tier": "open", "kind": "embedded", "n_threads": 2}
    return parse_config({"backends": [backend], "router": {"kind": "rules"}, "dispatch": dispatch})


@pytest.fixture
def gateway() -> Iterator[str]:
    """A gateway of its own per test: five kills in a row within a minute are a crash loop (tested below)."""
    with serve_gateway(gateway_config(attempts=1)) as url:
        yield url


def body(dialect: str, stream: bool, max_tokens: int = 400) -> dict[str, Any]:
    return {"model": "local", "messages": LONG, "max_tokens": max_tokens, "temperature": 0, "stream": stream}


def post(base: str, dialect: str, payload: dict[str, Any]) -> httpx.Response:
    path, headers = ("/v1/messages", AN_HEADERS) if dialect == "anthropic" else ("/v1/chat/completions", {})
    return httpx.post(base + path, json=payload, headers=headers, timeout=120)


def stream_lines(base: str, dialect: str, payload: dict[str, Any], started: threading.Event) -> list[str]:
    path, headers = ("/v1/messages", AN_HEADERS) if dialect == "anthropic" else ("/v1/chat/completions", {})
    with httpx.stream("POST", base + path, json=payload, headers=headers, timeout=120) as resp:
        assert resp.status_code == 200
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            if '"text' in line or '"content":"' in line:
                started.set()
        return lines


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stream_cut_by_a_crash_ends_with_an_error_and_the_next_request_is_served(
    gateway: str, dialect: str, sig: signal.Signals
) -> None:
    wait_for(gateway, lambda s: s["state"] == "ready")
    restarts = engine(gateway)["restarts"]
    started = threading.Event()
    killer = kill_when_generating(gateway, sig, started)
    lines = stream_lines(gateway, dialect, body(dialect, True), started)
    killer.join()
    data = [line for line in lines if line.startswith("data: ")]
    if dialect == "openai":
        assert "data: [DONE]" not in data
        last = json.loads(data[-1][6:])
        assert f"the embedded engine's worker exited ({sig.name})" in last["error"]["message"]
    else:
        events = [line[7:] for line in lines if line.startswith("event: ")]
        assert "message_stop" not in events
        assert events[-1] == "error"
        assert sig.name in json.loads(data[-1][6:])["error"]["message"]
    status = wait_for(gateway, lambda s: s["state"] == "ready" and s["restarts"] == restarts + 1)
    assert status["last_exit"] == sig.name
    after = post(gateway, dialect, body(dialect, False, max_tokens=8))
    assert after.status_code == 200, after.text


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=lambda s: s.name)
def test_a_request_whose_worker_dies_gets_a_clean_503_when_nothing_else_can_serve_it(
    gateway: str, dialect: str, sig: signal.Signals
) -> None:
    wait_for(gateway, lambda s: s["state"] == "ready")
    killer = kill_when_generating(gateway, sig, when_in_flight(gateway))
    resp = post(gateway, dialect, body(dialect, False))
    killer.join()
    assert resp.status_code == 503, resp.text
    message = resp.json()["error"]["message"]
    assert message == f"backend 'local': the embedded engine's worker exited ({sig.name}) during the request"
    if dialect == "anthropic":
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["type"] == "overloaded_error"
    wait_for(gateway, lambda s: s["state"] == "ready")
    assert post(gateway, dialect, body(dialect, False, max_tokens=8)).status_code == 200


def test_a_retry_after_the_crash_is_served_by_the_restarted_worker() -> None:
    """With the default dispatch (two attempts), the retry of the one backend waits for its restart."""
    with serve_gateway(gateway_config()) as base:
        killer = kill_when_generating(base, signal.SIGKILL, when_in_flight(base))
        resp = post(base, "openai", body("openai", False))
        killer.join()
        assert resp.status_code == 200, resp.text
        status = engine(base)
        assert (status["restarts"], status["last_exit"]) == (1, "SIGKILL")
        ready = httpx.get(base + "/readyz", timeout=10).json()
        assert ready["backends"]["local"]["circuit"] == "closed"


def test_a_crash_loop_leaves_the_backend_down_with_the_reason() -> None:
    with serve_gateway(gateway_config(attempts=1, health_interval_s=0.2)) as base:
        for n in range(5):
            status = wait_for(base, lambda s, n=n: s["state"] == "ready" and s["restarts"] == n)
            os.kill(status["pid"], signal.SIGKILL)
        status = wait_for(base, lambda s: s["state"] == "down")
        assert status["reason"].startswith("crash loop: 5 workers in a row exited within 60s of starting, last SIGKILL")
        deadline = time.monotonic() + 10
        while (ready := httpx.get(base + "/readyz", timeout=10)).status_code != 503:  # the next health round
            assert time.monotonic() < deadline, ready.json()
            time.sleep(0.1)
        assert ready.json()["backends"]["local"]["healthy"] is False
        resp = post(base, "openai", body("openai", False, max_tokens=8))
        assert resp.status_code == 503
        assert "the embedded engine is down: crash loop" in resp.json()["error"]["message"]
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200  # the gateway itself serves on


def test_an_engine_that_crashes_at_start_is_one_clear_line_not_a_dead_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Stands in for a broken engine build: every Python the gateway starts from here on segfaults at start-up.
    (tmp_path / "sitecustomize.py").write_text("import faulthandler\nfaulthandler._sigsegv()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with caplog.at_level("ERROR", logger="tiergate.engine"), serve_gateway(gateway_config(attempts=1)) as base:
        status = engine(base)
        assert status["state"] == "down"
        assert status["reason"].startswith("the embedded engine crashed in its self-test: SIGSEGV")
        assert "see README: Troubleshooting the embedded engine" in status["reason"]
        resp = post(base, "anthropic", body("anthropic", False, max_tokens=8))
        assert resp.status_code == 503
        assert resp.json()["error"]["message"].startswith("backend 'local': the embedded engine is down")
    assert [r.getMessage() for r in caplog.records] == [status["reason"]]


def test_a_request_whose_worker_dies_fails_over_to_another_open_backend(fake_openai: tuple[Any, str]) -> None:
    backends = [
        {"name": "local", "tier": "open", "kind": "embedded", "n_threads": 2},
        {
            "name": "vllm",
            "tier": "open",
            "kind": "openai",
            "base_url": fake_openai[1] + "/v1",
            "model": "fake-llama-8b",
        },
    ]
    config = parse_config({"backends": backends, "router": {"kind": "rules"}})
    with serve_gateway(config) as base:
        killer = kill_when_generating(base, signal.SIGSEGV, when_in_flight(base))
        resp = httpx.post(base + "/v1/chat/completions", json={**body("openai", False), "model": "open"}, timeout=120)
        killer.join()
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-tiergate-backend"] == "vllm"
        assert resp.json()["choices"][0]["message"]["content"].startswith("Hello from fake LLM")
        status = wait_for(base, lambda s: s["state"] == "ready" and s["restarts"] == 1)
        assert status["last_exit"] == "SIGSEGV"
