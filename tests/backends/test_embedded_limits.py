"""The embedded backend's limits over HTTP, with the real SmolLM2 model: a full queue is a clean 503 in the
caller's dialect (and ``/healthz`` still answers), and an image is refused rather than silently dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import serve_gateway
from tiergate.config import parse_config

AN_HEADERS = {"anthropic-version": "2023-06-01"}
# A prompt SmolLM2 answers at length at temperature 0 ("1, 2, 3, ..."): it is still generating when the queue
# fills, however slow this machine is. The test hangs up long before max_tokens.
LONG = {"role": "user", "content": "Count from 1 to 100, separated by commas."}


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    backend = {"name": "local", "tier": "open", "kind": "embedded", "n_threads": 2, "max_queue": 1}
    config = parse_config({"backends": [backend], "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


def in_flight(base: str) -> int:
    count: int = httpx.get(base + "/readyz", timeout=5).json()["backends"]["local"]["in_flight"]
    return count


def wait_in_flight(base: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while in_flight(base) != n:
        assert time.monotonic() < deadline, f"never {n} requests in flight"
        time.sleep(0.05)


def test_a_full_queue_is_a_clean_503_in_each_dialect(gateway: str) -> None:
    queued: dict[str, Any] = {}

    def wait_in_queue() -> None:  # answered only once the first request is done
        body = {"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]}
        queued["resp"] = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=300)

    first = {"model": "local", "stream": True, "max_tokens": 256, "temperature": 0, "messages": [LONG]}
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=first, timeout=300) as generating:
        assert generating.status_code == 200
        lines = generating.iter_lines()
        next(line for line in lines if '"content":"' in line and '"content":""' not in line)  # it generates
        waiter = threading.Thread(target=wait_in_queue)
        waiter.start()
        wait_in_flight(gateway, 2)  # one generating, one waiting: the queue (max_queue: 1) is full

        oa_body = {"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        oa = httpx.post(gateway + "/v1/chat/completions", json=oa_body, timeout=30)
        oa_stream = httpx.post(gateway + "/v1/chat/completions", json={**oa_body, "stream": True}, timeout=30)
        an = httpx.post(gateway + "/v1/messages", json=oa_body, headers=AN_HEADERS, timeout=30)
        started = time.perf_counter()
        health = httpx.get(gateway + "/healthz", timeout=5)
        health_s = time.perf_counter() - started
        still = in_flight(gateway)
        more = [httpx.post(gateway + "/v1/chat/completions", json=oa_body, timeout=30) for _ in range(5)]
        circuit = httpx.get(gateway + "/readyz", timeout=5).json()["backends"]["local"]["circuit"]
    # A full queue is overflow, not a fault: eight refusals (more than breaker_failures) leave the circuit closed.
    assert [r.status_code for r in more] == [503] * 5
    assert circuit == "closed"
    for resp in (oa, oa_stream):
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"] == "application/json"
        err = resp.json()["error"]
        assert err["type"] == "service_unavailable"
        assert err["message"] == "backend 'local': queue is full (1 generating, 1 waiting); try again later"
        assert (resp.headers["x-tiergate-backend"], resp.headers["x-tiergate-tier"]) == ("local", "open")
    assert an.status_code == 503, an.text
    assert an.json() == {
        "type": "error",
        "error": {
            "type": "overloaded_error",
            "message": "backend 'local': queue is full (1 generating, 1 waiting); try again later",
        },
    }
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert health_s < 1.0  # answered at once while the model was busy
    assert still == 2  # the generation and the queued request were there all along
    # The first client hung up: its generation stops and the queued request is served.
    waiter.join(timeout=300)
    assert queued["resp"].status_code == 200, queued["resp"].text
    assert queued["resp"].json()["choices"][0]["message"]["content"]
    wait_in_flight(gateway, 0, timeout=10)
    metrics = httpx.get(gateway + "/metrics").text
    assert 'tiergate_requests_total{backend="local",dialect="anthropic",status="503",tier="open"} 1.0' in metrics


def test_an_image_is_refused_with_a_clear_error(gateway: str) -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    body = {
        "model": "local",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}],
    }
    resp = httpx.post(gateway + "/v1/messages", json=body, headers=AN_HEADERS, timeout=30)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("backend 'local': model SmolLM2-135M-Instruct reads text only")
    assert "cannot take images" in err["message"]
    oa_body = {
        "model": "local",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    }
    resp = httpx.post(gateway + "/v1/chat/completions", json=oa_body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert "cannot take images" in resp.json()["error"]["message"]
