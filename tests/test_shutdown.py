"""Graceful shutdown and client disconnects, against a real `tiergate serve` process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import Delay, FakeAnthropic, FakeOpenAI, StallStream, script_marker
from tests.support.servers import free_port, serve_app
from tiergate.config import parse_config


def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    fake = FakeOpenAI()
    with serve_app(fake) as upstream:
        port = free_port()
        config = tmp_path / "tiergate.yaml"
        config.write_text(
            "backends: [{{name: up, tier: open, kind: openai, base_url: '{}/v1', model: m}}]\n"
            "ledger: {{url: 'sqlite:///{}'}}\n".format(upstream, tmp_path / "ledger.db")
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiergate",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            results: list[tuple[str, object]] = []

            def one(i: int) -> None:
                body = {
                    "model": "open",
                    "stream": i % 2 == 0,
                    "messages": [{"role": "user", "content": f"req {i} " + script_marker(Delay(1.0))}],
                }
                try:
                    resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
                except httpx.HTTPError as exc:  # refused: never accepted, so nothing was promised
                    results.append(("refused", repr(exc)))
                    return
                if resp.status_code != 200:
                    results.append(("error", resp.json()["error"]["message"]))
                elif body["stream"]:
                    results.append(("ok" if resp.text.rstrip().endswith("data: [DONE]") else "truncated", resp.text))
                else:
                    results.append(("ok" if resp.json()["choices"][0]["message"]["content"] else "empty", resp.text))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
            for t in threads:
                t.start()
            fake.wait_for_requests(12, timeout=20)  # every request is in flight upstream
            proc.send_signal(signal.SIGTERM)
            for t in threads:
                t.join(timeout=40)
            code = proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0
    assert len(results) == 12
    assert [kind for kind, _ in results].count("ok") == 12, results


@pytest.fixture
def own_gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """A gateway of its own: the shared one's circuits may be open after other modules' failure tests."""
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


def test_client_disconnect_cancels_the_upstream_stream(own_gateway: str) -> None:
    fast_gateway = own_gateway
    body = {
        "model": "vllm",
        "stream": True,
        "messages": [
            {"role": "user", "content": "long story " + script_marker(StallStream(after_events=3, seconds=20))}
        ],
    }
    with httpx.stream("POST", fast_gateway + "/v1/chat/completions", json=body, timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and "content" in line:
                break  # we have part of the answer; now hang up
    for _ in range(100):
        backends = httpx.get(fast_gateway + "/readyz").json()["backends"]
        metrics = httpx.get(fast_gateway + "/metrics").text
        if backends["vllm"]["in_flight"] == 0 and 'status="cancelled"' in metrics:
            break
        time.sleep(0.05)
    assert backends["vllm"]["in_flight"] == 0  # the upstream request was closed, not left generating
    cancelled = [
        ln for ln in metrics.splitlines() if 'status="cancelled"' in ln and ln.startswith("tiergate_requests_total")
    ]
    assert cancelled
    assert float(cancelled[0].rsplit(" ", 1)[1]) >= 1
