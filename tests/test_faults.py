"""Fault scenarios, one test each, against real fake upstreams on loopback (see docs/reliability.md).

Topology: two OpenAI-compatible open-tier replicas (``primary`` is tried first while idle) and Claude.
Faults are scripted on one upstream at a time through its FIFO queue, so only that backend misbehaves.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import CLAUDE_KEY_ENV, serve_gateway
from tests.fakes import (
    ContextLength,
    CutStream,
    Delay,
    FakeAnthropic,
    FakeOpenAI,
    Fault,
    Hang,
    MalformedStream,
    Refusal,
    StallStream,
)
from tests.support.servers import free_port, serve_app
from tiergate.api import create_app
from tiergate.backends.breaker import Breaker
from tiergate.config import parse_config

OA = "/v1/chat/completions"
TIMEOUTS = {"first_token_timeout_s": 1.0, "stall_timeout_s": 1.0, "timeout_s": 2.0, "breaker_failures": 3}


class World:
    def __init__(self, url: str, app: Any, primary: FakeOpenAI, secondary: FakeOpenAI, claude: FakeAnthropic) -> None:
        self.url, self.app, self.primary, self.secondary, self.claude = url, app, primary, secondary, claude

    def reset(self) -> None:
        for fake in (self.primary, self.secondary, self.claude):
            fake.reset()
        for state in self.app.state.tiergate.pool.states.values():  # each scenario starts with closed circuits
            state.breaker = Breaker(state.breaker.failures, state.breaker.window_s, state.breaker.cooldown_s)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    primary, secondary = FakeOpenAI(stream_chunks=8), FakeOpenAI(stream_chunks=8)
    claude = FakeAnthropic(api_key="sk-ant-test")
    with serve_app(primary) as p_url, serve_app(secondary) as s_url, serve_app(claude) as c_url:
        backends: list[dict[str, Any]] = [
            {
                "name": "primary",
                "tier": "open",
                "kind": "openai",
                "base_url": p_url + "/v1",
                "model": "m",
                "context_window": 4096,
                **TIMEOUTS,
            },
            {
                "name": "secondary",
                "tier": "open",
                "kind": "openai",
                "base_url": s_url + "/v1",
                "model": "m",
                "context_window": 4096,
                "weight": 0.5,
                **TIMEOUTS,
            },
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "base_url": c_url,
                "model": "claude-sonnet-4-5",
                "api_key_env": CLAUDE_KEY_ENV,
                "context_window": 200000,
                **TIMEOUTS,
            },
        ]
        config = parse_config(
            {
                "backends": backends,
                "router": {"kind": "open"},
                "ledger": {"url": "sqlite:///:memory:"},
                "dispatch": {"attempts": 2, "backoff_base_s": 0.01, "deadline_s": 6, "seed": 1},
            }
        )
        os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
        app = create_app(config)
        with serve_app(app) as url:
            yield World(url, app, primary, secondary, claude)


@pytest.fixture
def w(world: World) -> Iterator[World]:
    world.reset()
    yield world
    world.reset()
    time.sleep(0.05)


def ask(w: World, *, stream: bool = False, model: str = "open", text: str = "Tell me something.") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    return httpx.post(w.url + OA, json=body, timeout=15)


def stream_text(resp: httpx.Response) -> tuple[str, list[dict[str, Any]], bool]:
    chunks, done = [], False
    for line in resp.text.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return text, chunks, done


def test_503_is_retried_on_the_same_backend(w: World) -> None:
    w.primary.script(Fault(503))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "primary"
    assert len(w.primary.received) == 2
    assert w.secondary.received == []


def test_429_retry_after_is_honoured_on_the_same_backend(w: World) -> None:
    w.primary.script(Fault(429, retry_after=0.3))
    started = time.monotonic()
    resp = ask(w)
    waited = time.monotonic() - started
    assert resp.headers["x-tiergate-backend"] == "primary"
    assert len(w.primary.received) == 2
    assert waited >= 0.3  # the gateway waited as told before the second try (a lower bound, not a timing goal)


def test_repeated_failure_goes_to_another_replica(w: World) -> None:
    w.primary.script(Fault(500), Fault(502))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert resp.headers["x-tiergate-route"].endswith("failover:primary-down")


def test_client_error_is_never_retried(w: World) -> None:
    w.primary.script(Fault(400, message="bad logit_bias"))
    resp = ask(w)
    assert resp.status_code == 400
    assert "bad logit_bias" in resp.json()["error"]["message"]
    assert len(w.primary.received) == 1
    assert w.secondary.received == []


def test_accept_then_never_answer_times_out_to_another_replica(w: World) -> None:
    w.primary.script(Hang(seconds=5), Hang(seconds=5))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "secondary"


def test_slow_first_token_streams_from_another_replica(w: World) -> None:
    w.primary.script(Delay(3.0), Delay(3.0))
    resp = ask(w, stream=True)
    text, _, done = stream_text(resp)
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert done
    assert text


def test_malformed_stream_fails_over_before_the_first_byte(w: World) -> None:
    w.primary.script(MalformedStream(), MalformedStream())
    resp = ask(w, stream=True)
    text, _, done = stream_text(resp)
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert done
    assert text


def test_stream_cut_mid_answer_is_continued_elsewhere(w: World) -> None:
    w.primary.script(CutStream(after_events=4))
    resp = ask(w, stream=True)
    text, chunks, done = stream_text(resp)
    assert done, "the continued stream ends normally"
    assert chunks[-1]["choices"] == [] or chunks[-1]["choices"][0]["finish_reason"] == "stop"
    body = w.secondary.received[0].body
    continuation = body["messages"]
    assert continuation[-1]["role"] == "assistant"  # the partial answer, sent as the prefix to continue
    assert continuation[-2]["role"] == "user"
    assert body["continue_final_message"] is True  # vLLM continues the final assistant turn
    assert body["add_generation_prompt"] is False
    assert text.startswith(continuation[-1]["content"])
    assert len(text) > len(continuation[-1]["content"])


def test_stream_stall_mid_answer_is_continued_elsewhere(w: World) -> None:
    w.primary.script(StallStream(after_events=4, seconds=5))
    resp = ask(w, stream=True)
    text, _, done = stream_text(resp)
    assert done
    assert w.secondary.received[0].body["messages"][-1]["role"] == "assistant"
    assert text


def test_stream_cut_with_nowhere_to_continue_ends_with_an_error(w: World) -> None:
    w.primary.script(CutStream(after_events=4))
    w.secondary.script(Fault(503), Fault(503))
    w.claude.script(Fault(529), Fault(529))
    resp = ask(w, stream=True)
    _, chunks, done = stream_text(resp)
    assert not done
    assert "error" in chunks[-1]


def test_context_length_goes_to_a_larger_window_only(w: World) -> None:
    w.primary.script(ContextLength())
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "claude"  # not secondary: same 4096 window
    assert w.secondary.received == []
    assert len(w.primary.received) == 1


def test_content_filter_refusal_is_passed_through(w: World) -> None:
    w.primary.script(Refusal())
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["finish_reason"] == "content_filter"
    assert len(w.primary.received) == 1


def test_open_tier_down_fails_over_to_closed(w: World) -> None:
    w.primary.script(Fault(503), Fault(503))
    w.secondary.script(Fault(503), Fault(503))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-tier"] == "closed"
    assert resp.headers["x-tiergate-route"].endswith("failover:open-down")


def test_closed_tier_down_fails_over_to_open(w: World) -> None:
    w.claude.script(Fault(529), Fault(529))
    resp = ask(w, model="closed")
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-tier"] == "open"
    assert resp.headers["x-tiergate-route"] == "explicit:closed;failover:closed-down"


def test_everything_down_is_a_clean_error_within_the_deadline(w: World) -> None:
    for fake in (w.primary, w.secondary):
        fake.script(Hang(seconds=10), Hang(seconds=10))
    w.claude.script(Hang(seconds=10), Hang(seconds=10))
    resp = ask(w)
    assert resp.status_code == 504
    assert resp.json()["error"]["type"] == "timeout"


def test_flapping_primary_opens_its_circuit(w: World) -> None:
    w.primary.flap(["fail"])  # every request fails while flapping
    for _ in range(4):
        assert ask(w).headers["x-tiergate-backend"] == "secondary"
    seen = len(w.primary.received)
    assert seen <= 3  # breaker_failures=3: the circuit opened, primary is skipped
    for _ in range(3):
        assert ask(w).headers["x-tiergate-backend"] == "secondary"
    assert len(w.primary.received) == seen
    state = httpx.get(w.url + "/readyz").json()["backends"]["primary"]
    assert state["circuit"] == "open"


def test_connection_refused_goes_to_another_replica() -> None:
    with FakeOpenAIServer() as live:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        backends = [
            {"name": "dead", "tier": "open", "kind": "openai", "base_url": dead, "model": "m"},
            {"name": "live", "tier": "open", "kind": "openai", "base_url": live + "/v1", "model": "m", "weight": 0.5},
        ]
        with serve_gateway(parse_config({"backends": backends, "router": {"kind": "open"}})) as url:
            resp = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
            ready = httpx.get(url + "/readyz").json()["backends"]
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "live"
    assert ready["dead"]["healthy"] is False  # the active check at start-up saw it; it is tried last


class FakeOpenAIServer:
    def __init__(self) -> None:
        self._cm = serve_app(FakeOpenAI())

    def __enter__(self) -> str:
        return self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)


def test_a_streamed_success_closes_a_half_open_circuit(w: World) -> None:
    primary = w.app.state.tiergate.pool.states["primary"]
    long_ago = time.monotonic() - 3600
    for _ in range(primary.breaker.failures):
        primary.breaker.record_failure(long_ago)
    assert primary.breaker.state == "open"  # and its cooldown has passed: the next request is the probe
    resp = ask(w, stream=True)
    _, _, done = stream_text(resp)
    assert done
    assert resp.headers["x-tiergate-backend"] == "primary"
    assert primary.breaker.state == "closed"
    assert primary.in_flight == 0


def test_stream_slots_are_released_whatever_the_ending(w: World) -> None:
    w.primary.script(CutStream(after_events=4))
    ask(w, stream=True)
    w.secondary.script(Refusal())
    ask(w, stream=True)
    with httpx.stream(
        "POST", w.url + OA, json={"model": "open", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ) as resp:
        next(resp.iter_lines())  # hang up after the first line
    for _ in range(100):
        states = w.app.state.tiergate.pool.states
        if all(s.in_flight == 0 for s in states.values()):
            break
        time.sleep(0.02)
    assert [s.in_flight for s in states.values()] == [0, 0, 0]
    assert all(not s.breaker.probing for s in states.values())


def test_a_stream_cut_twice_is_continued_with_one_assistant_prefix(w: World) -> None:
    w.primary.script(CutStream(after_events=3))
    w.secondary.script(CutStream(after_events=3))
    resp = ask(w, stream=True)
    text, _, done = stream_text(resp)
    assert done
    last = w.claude.received[-1].body["messages"]
    assert [m["role"] for m in last] == ["user", "assistant"]
    prefix = last[-1]["content"][0]["text"]
    assert text.startswith(prefix)
    assert prefix == prefix.rstrip()  # the Messages API rejects a final assistant turn ending in whitespace
