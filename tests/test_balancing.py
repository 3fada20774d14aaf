"""Load balancing and saturation end to end: the real gateway and fake upstreams on loopback.

- least outstanding requests per weight among a tier's replicas;
- per-backend ``max_concurrency`` with a bounded wait queue: beyond it the backend is *saturated* and the
  request overflows at once (a decision, not an accident);
- an open tier that is saturated overflows to the closed tier (``policy.failover.open_to_closed``), and does
  not when the policy says no.

Requests are held in flight at the upstream with the fakes' ``Hang`` step and released by the test, so the
load each decision sees is known; nothing here depends on timing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import CLAUDE_KEY_ENV
from tests.fakes import FakeAnthropic, FakeOpenAI, Hang
from tests.support.servers import serve_app
from tiergate.api import create_app
from tiergate.config import parse_config
from tiergate.dispatch.pool import BackendState

OA = "/v1/chat/completions"
WAIT_S = 10.0  # generous deadline for anything the test waits for


@dataclass
class Topology:
    url: str
    app: Any
    replicas: dict[str, FakeOpenAI]
    claude: FakeAnthropic

    def state(self, name: str) -> BackendState:
        state: BackendState = self.app.state.tiergate.pool.states[name]
        return state

    def upstream_requests(self) -> int:
        return sum(len(f.received) for f in self.replicas.values())


@contextlib.contextmanager
def topology(replicas: dict[str, dict[str, Any]], *, open_to_closed: bool = True) -> Iterator[Topology]:
    """Open-tier OpenAI-compatible replicas (name -> extra backend settings) and one Claude, behind a gateway."""
    fakes = {name: FakeOpenAI(stream_chunks=4) for name in replicas}
    claude = FakeAnthropic(api_key="sk-ant-test")
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve_app(fake)) for name, fake in fakes.items()}
        claude_url = stack.enter_context(serve_app(claude))
        backends: list[dict[str, Any]] = [
            {"name": name, "tier": "open", "kind": "openai", "base_url": urls[name] + "/v1", "model": "m", **extra}
            for name, extra in replicas.items()
        ]
        backends.append(
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "base_url": claude_url,
                "model": "claude-sonnet-4-5",
                "api_key_env": CLAUDE_KEY_ENV,
            }
        )
        config = parse_config(
            {
                "backends": backends,
                "router": {"kind": "open"},
                "ledger": {"url": "sqlite:///:memory:"},
                "dispatch": {"deadline_s": 30, "health_interval_s": 60},
                "policy": {"failover": {"open_to_closed": open_to_closed}},
            }
        )
        os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
        app = create_app(config)
        url = stack.enter_context(serve_app(app))
        top = Topology(url, app, fakes, claude)
        try:
            yield top
        finally:
            for fake in (*fakes.values(), claude):  # let anything still held finish before the servers stop
                fake.flap(None)
                fake.release()


def ask(top: Topology, *, stream: bool = False) -> httpx.Response:
    body = {"model": "open", "messages": [{"role": "user", "content": "Tell me something."}], "stream": stream}
    return httpx.post(top.url + OA, json=body, timeout=30)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {WAIT_S:.0f}s for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [((1.0, 1.0), (3, 3)), ((2.0, 1.0), (4, 2))],
    ids=["equal-weights", "weights-2-1"],
)
def test_least_outstanding_requests_per_weight(weights: tuple[float, float], expected: tuple[int, int]) -> None:
    replicas = {"r1": {"weight": weights[0]}, "r2": {"weight": weights[1]}}
    with topology(replicas) as top, ThreadPoolExecutor(max_workers=6) as clients:
        for fake in top.replicas.values():
            fake.flap([Hang()])  # every request stays in flight until released
        pending: list[Future[httpx.Response]] = []
        for i in range(6):  # one at a time: each decision sees the requests already in flight
            pending.append(clients.submit(ask, top, stream=i % 2 == 1))
            wait_until(lambda: top.upstream_requests() == len(pending), f"request {i + 1} to reach a replica")
        held = (len(top.replicas["r1"].received), len(top.replicas["r2"].received))
        in_flight = (top.state("r1").in_flight, top.state("r2").in_flight)
        for fake in top.replicas.values():
            fake.flap(None)
            fake.release()
        responses = [f.result(timeout=WAIT_S) for f in pending]
    assert held == expected
    assert in_flight == expected
    assert [r.status_code for r in responses] == [200] * 6
    served = sorted(r.headers["x-tiergate-backend"] for r in responses)
    assert served == ["r1"] * expected[0] + ["r2"] * expected[1]
    assert top.claude.received == []


def test_an_idle_replica_takes_the_next_request_while_the_other_is_busy() -> None:
    with topology({"r1": {}, "r2": {}}) as top, ThreadPoolExecutor(max_workers=2) as clients:
        top.replicas["r1"].script(Hang())
        slow = clients.submit(ask, top)
        wait_until(lambda: len(top.replicas["r1"].received) == 1, "the slow request to reach r1")
        quick = [ask(top) for _ in range(3)]  # one after another: r2 is free again each time
        top.replicas["r1"].release()
        assert slow.result(timeout=WAIT_S).headers["x-tiergate-backend"] == "r1"
    assert [r.headers["x-tiergate-backend"] for r in quick] == ["r2", "r2", "r2"]


SMALL = {"max_concurrency": 1, "max_queue": 1}


def test_a_full_queue_overflows_the_open_tier_to_the_closed_tier() -> None:
    with topology({"r": SMALL}) as top, ThreadPoolExecutor(max_workers=2) as clients:
        replica = top.replicas["r"]
        replica.script(Hang())  # only the first request is held
        first = clients.submit(ask, top)
        wait_until(lambda: len(replica.received) == 1, "the first request to take r's only slot")
        second = clients.submit(ask, top, stream=True)
        wait_until(lambda: top.state("r").waiting == 1, "the second request to wait in r's queue")
        third = ask(top)  # slot and queue place taken: saturated, overflows at once
        still_held = not first.done() and not second.done()
        replica.release()
        answers = [first.result(timeout=WAIT_S), second.result(timeout=WAIT_S)]
    assert still_held  # the third request did not wait for the queue to move
    assert third.status_code == 200
    assert third.headers["x-tiergate-backend"] == "claude"
    assert third.headers["x-tiergate-tier"] == "closed"
    assert third.headers["x-tiergate-route"].endswith(";failover:open-down")
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.headers["x-tiergate-backend"] for a in answers] == ["r", "r"]  # the queued one waited its turn
    assert len(replica.received) == 2  # the overflow never reached r
    assert len(top.claude.received) == 1
    assert top.state("r").breaker.state == "closed"  # saturation is not a fault of the backend


def test_every_replica_saturated_overflows_to_the_closed_tier() -> None:
    no_queue = {"max_concurrency": 1, "max_queue": 0}
    with topology({"r1": no_queue, "r2": no_queue}) as top, ThreadPoolExecutor(max_workers=2) as clients:
        for fake in top.replicas.values():
            fake.script(Hang())
        held = [clients.submit(ask, top) for _ in range(2)]
        wait_until(lambda: top.upstream_requests() == 2, "both replicas to hold a request")
        overflow = ask(top, stream=True)
        for fake in top.replicas.values():
            fake.release()
        answers = [h.result(timeout=WAIT_S) for h in held]
    assert overflow.status_code == 200
    assert overflow.headers["x-tiergate-backend"] == "claude"
    assert "data: [DONE]" in overflow.text
    assert sorted(a.headers["x-tiergate-backend"] for a in answers) == ["r1", "r2"]


def test_saturated_open_tier_without_open_to_closed_is_a_clean_error() -> None:
    with topology({"r": SMALL}, open_to_closed=False) as top, ThreadPoolExecutor(max_workers=2) as clients:
        replica = top.replicas["r"]
        replica.script(Hang())
        first = clients.submit(ask, top)
        wait_until(lambda: len(replica.received) == 1, "the first request to take r's only slot")
        second = clients.submit(ask, top)
        wait_until(lambda: top.state("r").waiting == 1, "the second request to wait in r's queue")
        refused = ask(top)
        replica.release()
        answers = [first.result(timeout=WAIT_S), second.result(timeout=WAIT_S)]
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert "saturated" in error["message"]
    assert "'r'" in error["message"]
    assert top.claude.received == []  # the policy forbids the closed tier: it is never asked
    assert [a.status_code for a in answers] == [200, 200]
