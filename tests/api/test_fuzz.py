"""A bounded run of the hostile-request suite (``tests/support/hostile.py``; ``benchmarks/fuzz.py`` sends
10,000 and more): no answer is a 5xx, every error is in the caller's envelope with no exception class named,
and afterwards every circuit is closed and good requests are served. ``TIERGATE_FUZZ_EXAMPLES`` sets the
number of requests (default 150)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.hostile import JSON_HEADERS, Hostile, hostile_requests
from tiergate.config import parse_config

EXAMPLES = int(os.environ.get("TIERGATE_FUZZ_EXAMPLES", "150"))
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b")


@pytest.fixture(scope="module")
def gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """Both fakes at the default breaker settings: five counted failures would open a circuit."""
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


def envelope_problem(request: Hostile, resp: httpx.Response) -> str | None:
    """What is wrong with an error answer's envelope, if anything."""
    try:
        body = resp.json()
    except ValueError:
        return f"not JSON: {resp.text[:80]!r}"
    if request.path.startswith("/v1/messages"):
        ok = isinstance(body, dict) and body.get("type") == "error"
        ok = ok and set(body.get("error", {})) >= {"type", "message"}
    else:
        ok = isinstance(body, dict) and set(body.get("error", {})) >= {"message", "type", "param", "code"}
    if not ok:
        return f"not the dialect's envelope: {resp.text[:120]!r}"
    message = body["error"]["message"]
    return f"names an exception class: {message[:120]!r}" if CLASS_NAME.search(message) else None


def test_hostile_requests_never_get_a_5xx_and_never_open_a_circuit(gateway: str) -> None:
    seen: Counter[str] = Counter()

    @given(request=hostile_requests())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def send(request: Hostile) -> None:
        url = gateway + request.path
        resp = httpx.request(request.method, url, content=request.body, headers=request.wire_headers(), timeout=60)
        seen[request.family.split(" (")[0]] += 1
        assert resp.status_code < 500, f"{request.describe()} -> {resp.status_code} {resp.text[:300]}"
        if resp.status_code >= 400:
            problem = envelope_problem(request, resp)
            assert problem is None, f"{request.describe()} -> {resp.status_code}: {problem}"

    send()
    assert len(seen) >= 10, seen  # most families were drawn
    ready = httpx.get(gateway + "/readyz", timeout=10).json()
    assert ready["ready"] is True
    assert {name: b["circuit"] for name, b in ready["backends"].items()} == {"vllm": "closed", "claude": "closed"}
    for model in ("vllm", "claude"):
        body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        resp = httpx.post(gateway + "/v1/messages", content=json.dumps(body), headers=JSON_HEADERS)
        assert resp.status_code == 200, resp.text
