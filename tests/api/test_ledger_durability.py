"""The ledger survives the way a gateway ends: SIGTERM loses nothing; ``kill -9`` loses at most the last second.

Each test runs ``tiergate serve`` as a real process (over the fake OpenAI-compatible upstream) and reads its
SQLite ledger afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import FakeOpenAI
from tests.support.ledger import read_rows
from tests.support.servers import free_port


class Gateway:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, url: str) -> None:
        self.proc, self.base, self.url = proc, base, url

    def send(self, n: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=self.base, timeout=30) as client:
            for i in range(n):
                body = {"model": "open", "max_tokens": 5, "messages": [{"role": "user", "content": f"q{i}"}]}
                resp = client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text
                ids.append(resp.headers["x-request-id"])
        return ids

    def stop(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=30)


def launch(upstream: str, tmp_path: Path) -> Gateway:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        f"server: {{port: {port}}}\n"
        f"backends: [{{name: vllm, tier: open, kind: openai, base_url: '{upstream}/v1', model: fake-llama-8b}}]\n"
        f"ledger: {{url: '{url}'}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--log-level", "warning"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return Gateway(proc, f"http://127.0.0.1:{port}", url)


def wait_ready(gateway: Gateway) -> None:
    deadline = time.monotonic() + 60
    while True:
        stderr = gateway.proc.stderr
        assert gateway.proc.poll() is None, (stderr.read() if stderr else b"").decode()
        try:
            if httpx.get(gateway.base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "tiergate serve did not start"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gateways(fake_openai: tuple[FakeOpenAI, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    """Two gateways, started together (start-up is most of these tests' time), one for each test."""
    started = [launch(fake_openai[1], tmp_path_factory.mktemp("gateway")) for _ in range(2)]
    try:
        for gateway in started:
            wait_ready(gateway)
        yield list(started)
    finally:
        for gateway in started:
            if gateway.proc.poll() is None:
                gateway.proc.kill()
                gateway.proc.wait()
            if gateway.proc.stderr:
                gateway.proc.stderr.close()


@pytest.fixture
def gateway(gateways: list[Gateway]) -> Gateway:
    return gateways.pop()


def test_sigterm_writes_every_row(gateway: Gateway) -> None:
    ids = gateway.send(30)
    gateway.stop(signal.SIGTERM)  # at once: most rows are still queued in memory
    assert gateway.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
    assert {r.request_id for r in read_rows(gateway.url)} == set(ids)


def test_kill_9_loses_at_most_the_last_second(gateway: Gateway) -> None:
    durable = gateway.send(30)
    time.sleep(1.5)
    recent = gateway.send(5)
    gateway.stop(signal.SIGKILL)
    written = {r.request_id for r in read_rows(gateway.url)}
    assert set(durable) <= written
    assert written <= set(durable) | set(recent)
