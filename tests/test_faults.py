"""Fault scenarios, one test each, against real fake upstreams on loopback (see docs/reliability.md).

Topology: two OpenAI-compatible open-tier replicas (``primary`` is tried first while idle) and Claude.
Faults are scripted on one upstream at a time through its FIFO queue, so only that backend misbehaves.
The same topology with cross-tier failover forbidden (``strict``), backends of several context windows
(``windows``), unreachable backends whose connects hang (``unreachable``), a replica that goes down and
comes back (health checks, recovery), short first-token budgets (``budget_world``), hedging (``hedge_world``) and
gateways with a ledger on file (every attempt recorded) have their own fixtures below. Time is only checked
against generous upper bounds (a configured limit plus ``SLACK_S``), or as a lower bound where the gateway must
wait as told.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
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
    Reply,
    SlowFirstToken,
    StallStream,
    blackhole,
)
from tests.support.ledger import wait_attempts
from tests.support.servers import free_port, serve_app
from tiergate.accounting.schema import AttemptRow
from tiergate.api import create_app
from tiergate.config import DispatchConfig, parse_config
from tiergate.dispatch.breaker import Breaker

OA = "/v1/chat/completions"
AN = "/v1/messages"
TIMEOUTS = {"first_token_timeout_s": 1.0, "stall_timeout_s": 1.0, "timeout_s": 2.0, "breaker_failures": 3}
DEADLINE_S = 6.0
RETRY_AFTER_CAP_S = 0.5
RATE_LIMIT_S = (0.3, 0.6)  # dispatch.rate_limit_backoff_min_s / _max_s: a 429 without Retry-After waits that long
SLACK_S = 4.0  # generous allowance on top of a configured bound, for a slow shared machine


class World:
    def __init__(self, url: str, app: Any, primary: FakeOpenAI, secondary: FakeOpenAI, claude: FakeAnthropic) -> None:
        self.url, self.app, self.primary, self.secondary, self.claude = url, app, primary, secondary, claude

    def reset(self) -> None:
        for fake in (self.primary, self.secondary, self.claude):
            fake.reset()
        for state in self.app.state.tiergate.pool.states.values():  # each scenario starts with closed circuits
            state.breaker = Breaker(state.breaker.failures, state.breaker.window_s, state.breaker.cooldown_s)


@contextlib.contextmanager
def make_world(failover: dict[str, bool] | None = None) -> Iterator[World]:
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
                "continue_final_message": True,  # vLLM, configured to continue a final assistant turn
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
                "continue_final_message": True,
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
                "dispatch": {
                    "attempts": 2,
                    "backoff_base_s": 0.01,
                    "deadline_s": DEADLINE_S,
                    "retry_after_cap_s": RETRY_AFTER_CAP_S,
                    "rate_limit_backoff_min_s": RATE_LIMIT_S[0],
                    "rate_limit_backoff_max_s": RATE_LIMIT_S[1],
                    "seed": 1,
                },
                "policy": {"failover": failover or {}},
            }
        )
        os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
        app = create_app(config)
        with serve_app(app) as url:
            yield World(url, app, primary, secondary, claude)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with make_world() as world:
        yield world


@pytest.fixture
def w(world: World) -> Iterator[World]:
    world.reset()
    yield world
    world.reset()
    time.sleep(0.05)


def ask(w: World, *, stream: bool = False, model: str = "open", text: str = "Tell me something.") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    return httpx.post(w.url + OA, json=body, timeout=15)


def ask_anthropic(
    w: World, *, stream: bool = False, model: str = "open", text: str = "Tell me something.", **extra: Any
) -> httpx.Response:
    body = {"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": text}], "stream": stream}
    headers = {"anthropic-version": "2023-06-01"}
    return httpx.post(w.url + AN, json={**body, **extra}, headers=headers, timeout=15)


def anthropic_events(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each server-sent event of an Anthropic-dialect stream."""
    out: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in resp.text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
    return out


def anthropic_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    deltas = [d["delta"] for name, d in events if name == "content_block_delta"]
    return "".join(d["text"] for d in deltas if d["type"] == "text_delta")


def stream_text(resp: httpx.Response) -> tuple[str, list[dict[str, Any]], bool]:
    chunks, done = [], False
    for line in resp.text.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return text, chunks, done


@pytest.mark.parametrize("fault", [Fault(503), Fault(429, retry_after=30)], ids=["503", "429"])
def test_a_failed_replica_hands_the_request_to_the_other_replica_at_once(w: World, fault: Fault) -> None:
    w.primary.script(fault)
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert resp.headers["x-tiergate-route"].endswith("failover:primary-down")
    assert len(w.primary.received) == 1  # not retried on the primary: the secondary was ready
    assert len(w.secondary.received) == 1


def test_a_resting_replica_shows_in_readyz_and_comes_last(w: World) -> None:
    """A replica inside its Retry-After pause is reported as such and gets no first tries until it is over."""
    primary = w.app.state.tiergate.pool.states["primary"]
    primary.resting_until = time.monotonic() + 60
    state = httpx.get(w.url + "/readyz").json()["backends"]
    assert 59 < state["primary"]["resting_s"] <= 60
    assert state["secondary"]["resting_s"] == 0
    for _ in range(3):
        assert ask(w).headers["x-tiergate-backend"] == "secondary"
    assert w.primary.received == []


def test_503_on_a_replica_named_alone_is_retried_on_it(w: World) -> None:
    w.primary.script(Fault(503))
    resp = ask(w, model="primary")
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "primary"
    assert len(w.primary.received) == 2
    assert w.secondary.received == []


def test_503_with_the_other_replica_circuit_open_is_retried_on_the_same_backend(w: World) -> None:
    secondary = w.app.state.tiergate.pool.states["secondary"]
    for _ in range(secondary.breaker.failures):
        secondary.breaker.record_failure(time.monotonic())
    assert secondary.breaker.state == "open"
    w.primary.script(Fault(503))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "primary"  # the last ready replica of its tier: retried on it
    assert len(w.primary.received) == 2
    assert w.secondary.received == []
    assert w.claude.received == []


def test_429_retry_after_is_honoured_on_the_same_backend(w: World) -> None:
    w.primary.script(Fault(429, retry_after=0.3))
    started = time.monotonic()
    resp = ask(w, model="primary")
    waited = time.monotonic() - started
    assert resp.headers["x-tiergate-backend"] == "primary"
    assert len(w.primary.received) == 2
    assert waited >= 0.3  # the gateway waited as told before the second try (a lower bound, not a timing goal)


def test_a_429_without_retry_after_is_retried_after_the_rate_limit_floor(w: World) -> None:
    """A 429 without ``Retry-After`` on a replica named alone: the retry waits at least the configured floor, as
    the fake's own clock shows, not the 10 ms backoff base (the issue: three retries within 65 ms)."""
    w.primary.script(Fault(429))
    resp = ask(w, model="primary")
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "primary"
    first, second = w.primary.received
    assert second.at - first.at >= RATE_LIMIT_S[0]


def test_both_replicas_failing_once_is_answered_by_the_second_after_a_retry(w: World) -> None:
    w.primary.script(Fault(503))
    w.secondary.script(Fault(503))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert len(w.primary.received) == 1
    assert len(w.secondary.received) == 2  # the last ready replica of the tier is retried on itself
    assert w.claude.received == []


def test_repeated_failure_goes_to_another_replica(w: World) -> None:
    w.primary.script(Fault(500), Fault(502))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert resp.headers["x-tiergate-route"].endswith("failover:primary-down")
    assert len(w.primary.received) == 1


def test_client_error_is_never_retried(w: World) -> None:
    w.primary.script(Fault(400, message="bad logit_bias"))
    resp = ask(w)
    assert resp.status_code == 400
    assert "bad logit_bias" in resp.json()["error"]["message"]
    assert len(w.primary.received) == 1
    assert w.secondary.received == []


POLICY_VIOLATION = Fault(400, message="Rejected by the safety system.", code="content_policy_violation")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_an_upstream_error_code_reaches_the_caller_in_either_dialect(w: World, stream: bool) -> None:
    """An upstream's machine-readable code, not only its message: an OpenAI-compatible backend's ``code`` and
    Claude's ``error.type``, through the official SDKs of both dialects."""
    hi: Any = [{"role": "user", "content": "hi"}]
    oc = openai.OpenAI(base_url=w.url + "/v1", api_key="unused", max_retries=0)
    ac = anthropic.Anthropic(base_url=w.url, api_key="unused", max_retries=0)
    w.primary.script(POLICY_VIOLATION, POLICY_VIOLATION)
    with pytest.raises(openai.BadRequestError) as o_err:
        oc.chat.completions.create(model="primary", messages=hi, stream=stream)
    with pytest.raises(anthropic.BadRequestError) as a_err:
        ac.messages.create(model="primary", max_tokens=50, messages=hi, stream=stream)
    assert o_err.value.code == "content_policy_violation"
    assert "safety system" in o_err.value.message
    a_body: Any = a_err.value.body
    assert a_body["error"]["type"] == "invalid_request_error"  # Anthropic's vocabulary has no such type ...
    assert a_body["error"]["code"] == "content_policy_violation"  # ... so the code rides beside it
    w.claude.script(Fault(403), Fault(403))  # Claude's permission_error (its error.type is its code)
    with pytest.raises(openai.BadRequestError) as o_err:
        oc.chat.completions.create(model="claude", messages=hi, stream=stream)
    with pytest.raises(anthropic.BadRequestError) as a_err:
        ac.messages.create(model="claude", max_tokens=50, messages=hi, stream=stream)
    assert o_err.value.code == "permission_error"
    a_body = a_err.value.body
    assert a_body["error"]["type"] == "permission_error"
    assert "code" not in a_body["error"]
    assert (len(w.primary.received), len(w.claude.received)) == (2, 2)  # client errors: never retried
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


def served_ok(w: World, backend: str) -> float:
    """``tiergate_requests_total`` of successful OpenAI-dialect requests served by ``backend``."""
    prefix = f'tiergate_requests_total{{backend="{backend}",dialect="openai",status="ok"'
    lines = [ln for ln in httpx.get(w.url + "/metrics").text.splitlines() if ln.startswith(prefix)]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def test_stream_cut_mid_answer_is_continued_elsewhere(w: World) -> None:
    w.primary.script(CutStream(after_events=4))
    before = served_ok(w, "primary"), served_ok(w, "secondary")
    resp = ask(w, stream=True)
    text, chunks, done = stream_text(resp)
    # Counted where it was finished: the backend that continued it (the ledger row says the same).
    assert (served_ok(w, "primary"), served_ok(w, "secondary")) == (before[0], before[1] + 1)
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


def test_a_stall_mid_answer_on_a_non_streaming_request_is_answered_whole_by_another_replica(w: World) -> None:
    """The primary, asked for a stream to gather the answer, goes silent after a few events: left after its stall
    timeout; the caller, who has received nothing yet, gets the other replica's whole answer (asked afresh, no
    prefix to continue), as if the primary had failed before answering."""
    w.primary.script(StallStream(after_events=4, seconds=5))
    resp = ask(w)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "secondary"
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from fake LLM. You said: Tell me something."
    assert [r.body["stream"] for r in w.primary.received] == [True]
    assert [r.body["messages"][-1]["role"] for r in w.secondary.received] == ["user"]


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
    started = time.monotonic()
    resp = ask(w)
    elapsed = time.monotonic() - started
    assert resp.status_code == 504
    assert resp.json()["error"]["type"] == "timeout"
    assert elapsed <= DEADLINE_S + SLACK_S  # dispatch.deadline_s bounds retries and failover together


def test_everything_down_is_a_clean_stream_error_within_the_deadline(w: World) -> None:
    for fake in (w.primary, w.secondary, w.claude):
        fake.script(Delay(10.0), Delay(10.0))
    started = time.monotonic()
    resp = ask(w, stream=True)
    elapsed = time.monotonic() - started
    assert resp.status_code == 504  # nothing was sent yet: a clean error response, not a broken stream
    assert "no first token" in resp.json()["error"]["message"]
    assert elapsed <= DEADLINE_S + SLACK_S


@pytest.mark.parametrize(("model", "answered_by"), [("open", {"primary", "secondary"}), ("primary", {"primary"})])
def test_flapping_primary_never_fails_a_client(w: World, model: str, answered_by: set[str]) -> None:
    w.primary.flap(["ok", "fail"])  # healthy, failing (503), healthy, failing, ...
    answers = [ask(w, stream=i % 2 == 1, model=model) for i in range(8)]
    assert [a.status_code for a in answers] == [200] * 8
    # A failure goes to the secondary at once; with the primary named alone, it is retried on the primary.
    assert {a.headers["x-tiergate-backend"] for a in answers} == answered_by
    for i, answer in enumerate(answers):
        if i % 2:
            text, _, done = stream_text(answer)
            assert done
            assert text
        else:
            assert answer.json()["choices"][0]["message"]["content"]
    stats = w.primary.stats
    assert stats.get("fault", 0) >= 3  # the primary really did fail in between
    assert stats.get("ok", 0) >= 3
    assert w.app.state.tiergate.pool.states["primary"].breaker.state == "closed"  # each success resets the count
    assert w.claude.received == []


def test_persistently_failing_primary_opens_its_circuit(w: World) -> None:
    w.primary.flap(["fail"])  # every request fails
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


def test_an_empty_stream_frees_its_slot(w: World) -> None:
    w.primary.script(Reply(text=""))  # the stream's first event is its end
    resp = ask(w, stream=True)
    text, _, done = stream_text(resp)
    assert done
    assert text == ""
    primary = w.app.state.tiergate.pool.states["primary"]
    for _ in range(250):
        if primary.in_flight == 0:
            break
        time.sleep(0.02)
    assert primary.in_flight == 0
    assert primary.breaker.state == "closed"


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


# -- Claude streams, tool calls, Retry-After ---------------------------------------------------------------


def test_claude_stream_cut_mid_answer_is_continued_elsewhere(w: World) -> None:
    w.claude.script(CutStream(after_events=5))  # message_start, content_block_start, ping, two text deltas
    resp = ask_anthropic(w, stream=True, model="closed")
    events = anthropic_events(resp)
    names = [name for name, _ in events]
    assert resp.status_code == 200
    assert "error" not in names
    assert names.count("message_stop") == 1
    assert names[-1] == "message_stop"
    assert len(w.claude.received) == 1
    continued = w.primary.received[0].body  # the closed tier failed: the open tier continues (closed_to_open)
    prefix = continued["messages"][-1]
    assert prefix["role"] == "assistant"
    assert prefix["content"]  # the part Claude had streamed before the cut
    assert continued["continue_final_message"] is True
    text = anthropic_text(events)
    assert text.startswith(prefix["content"])
    assert len(text) > len(prefix["content"])


TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOLS_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
#: Cut after the tool call started and some of its arguments were sent (per upstream dialect).
TOOL_CUTS = {"primary": ("open", CutStream(after_events=3)), "claude": ("closed", CutStream(after_events=5))}


@pytest.mark.parametrize("backend", sorted(TOOL_CUTS))
def test_cut_tool_call_stream_ends_with_an_error_in_the_openai_dialect(w: World, backend: str) -> None:
    model, cut = TOOL_CUTS[backend]
    getattr(w, backend).script(cut)
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS_OPENAI,
        "tool_choice": "required",
    }
    resp = httpx.post(w.url + OA, json=body, timeout=15)
    _, chunks, done = stream_text(resp)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == backend
    calls = [c for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("tool_calls")]
    assert calls  # the tool call had started streaming
    assert not done  # no [DONE] ...
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert finishes == [None] * len(finishes)  # ... and no finish_reason that looks like success
    assert "error" in chunks[-1]
    assert backend in chunks[-1]["error"]["message"]
    others = [f for f in (w.primary, w.secondary, w.claude) if f is not getattr(w, backend)]
    assert [len(f.received) for f in others] == [0, 0]  # arguments are never stitched from another backend


@pytest.mark.parametrize("backend", sorted(TOOL_CUTS))
def test_cut_tool_call_stream_ends_with_an_error_in_the_anthropic_dialect(w: World, backend: str) -> None:
    model, cut = TOOL_CUTS[backend]
    getattr(w, backend).script(cut)
    resp = ask_anthropic(
        w, stream=True, model=model, text="Weather in Paris?", tools=TOOLS_ANTHROPIC, tool_choice={"type": "any"}
    )
    events = anthropic_events(resp)
    names = [name for name, _ in events]
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == backend
    assert any(n == "content_block_start" and d["content_block"]["type"] == "tool_use" for n, d in events)
    assert "message_stop" not in names
    assert names[-1] == "error"
    assert events[-1][1]["type"] == "error"
    assert backend in events[-1][1]["error"]["message"]
    others = [f for f in (w.primary, w.secondary, w.claude) if f is not getattr(w, backend)]
    assert [len(f.received) for f in others] == [0, 0]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_huge_retry_after_is_capped(w: World, form: str) -> None:
    an_hour = "3600" if form == "seconds" else formatdate(time.time() + 3600, usegmt=True)
    w.primary.script(Fault(429, headers={"retry-after": an_hour}))
    started = time.monotonic()
    resp = ask(w, model="primary")
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "primary"  # retried on the same backend ...
    assert len(w.primary.received) == 2
    assert elapsed <= RETRY_AFTER_CAP_S + SLACK_S  # ... after dispatch.retry_after_cap_s, not an hour


def test_retry_after_http_date_is_honoured(w: World) -> None:
    w.primary.script(Fault(503, headers={"retry-after": formatdate(time.time() + 2, usegmt=True)}))
    resp = ask(w, model="primary")
    assert resp.status_code == 200
    first, second = w.primary.received
    assert second.at - first.at >= RETRY_AFTER_CAP_S * 0.9  # waited (up to the cap), did not retry at once


# -- failover policy ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_world() -> Iterator[World]:
    """The same topology with both cross-tier failovers forbidden by policy."""
    with make_world({"closed_to_open": False, "open_to_closed": False}) as world:
        yield world


@pytest.fixture
def strict(strict_world: World) -> Iterator[World]:
    strict_world.reset()
    yield strict_world
    strict_world.reset()


def test_closed_to_open_false_keeps_a_failing_closed_tier_closed(strict: World) -> None:
    strict.claude.script(Fault(529), Fault(529))
    resp = ask(strict, model="closed")
    assert resp.status_code == 503
    assert "claude" in resp.json()["error"]["message"]
    assert len(strict.claude.received) == 2  # retried on its own tier ...
    assert strict.primary.received == []  # ... never on the open one
    assert strict.secondary.received == []


def test_closed_to_open_false_in_the_anthropic_dialect(strict: World) -> None:
    strict.claude.script(Fault(529), Fault(529))
    resp = ask_anthropic(strict, model="closed")
    assert resp.status_code == 503
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "overloaded_error"
    assert strict.primary.received == []
    assert strict.secondary.received == []


def test_open_to_closed_false_keeps_a_failing_open_tier_open(strict: World) -> None:
    strict.primary.script(Fault(503), Fault(503))
    strict.secondary.script(Fault(503), Fault(503))
    resp = ask(strict)
    assert resp.status_code == 503
    assert resp.json()["error"]["message"]
    assert len(strict.primary.received) == 1  # between replicas of the tier, failover still happens, at once
    assert len(strict.secondary.received) == 2  # the last replica of the tier is retried on itself
    assert strict.claude.received == []  # the closed tier is never asked


def test_open_to_closed_false_does_not_continue_a_stream_on_the_closed_tier(strict: World) -> None:
    strict.primary.script(CutStream(after_events=4))
    strict.secondary.script(Fault(503), Fault(503))
    resp = ask(strict, stream=True)
    _, chunks, done = stream_text(resp)
    assert not done
    assert "error" in chunks[-1]
    assert strict.claude.received == []


# -- context-length errors of Claude and vLLM --------------------------------------------------------------

SMALL_WINDOW = 100  # tokens: the fakes reject longer prompts with their real context-length error
LONG_TEXT = "Summarise this please. " * 60  # about 350 tokens at four characters a token


@pytest.fixture(scope="module")
def windows() -> Iterator[dict[str, Any]]:
    """Per tier a small-window backend, one with the same window and one with a smaller one, all of which
    reject a long prompt in their own words; and a large-window Claude that takes it."""
    fakes: dict[str, Any] = {
        "vllm-small": FakeOpenAI(context_window=SMALL_WINDOW, context_error="vllm"),
        "vllm-same": FakeOpenAI(context_window=SMALL_WINDOW, context_error="vllm"),
        "vllm-smaller": FakeOpenAI(context_window=SMALL_WINDOW // 2, context_error="vllm-legacy"),
        "claude-small": FakeAnthropic(context_window=SMALL_WINDOW),
        "claude-same": FakeAnthropic(context_window=SMALL_WINDOW),
        "claude-smaller": FakeAnthropic(context_window=SMALL_WINDOW // 2),
        "claude-large": FakeAnthropic(),
    }
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve_app(fake)) for name, fake in fakes.items()}
        backends: list[dict[str, Any]] = []
        for name, url in urls.items():
            window = 200_000 if name == "claude-large" else fakes[name].context_window
            if name.startswith("vllm"):
                backend = {"tier": "open", "kind": "openai", "base_url": url + "/v1", "model": "m"}
            else:
                backend = {"tier": "closed", "kind": "anthropic", "base_url": url, "model": "claude-sonnet-4-5"}
                backend["api_key_env"] = CLAUDE_KEY_ENV
            backends.append({"name": name, "context_window": window, **backend})
        config = parse_config({"backends": backends, "router": {"kind": "open"}, "dispatch": {"deadline_s": 30}})
        url = stack.enter_context(serve_gateway(config))
        yield {"url": url, "fakes": fakes}


def _long_request(url: str, model: str, stream: bool) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": LONG_TEXT}]}
    return httpx.post(url + OA, json=body, timeout=30)


@pytest.fixture
def win(windows: dict[str, Any]) -> dict[str, Any]:
    for fake in windows["fakes"].values():
        fake.reset()
    windows["fakes"]["vllm-small"].context_error = "vllm"
    return windows


def _asked(win: dict[str, Any]) -> dict[str, int]:
    return {name: len(fake.received) for name, fake in win["fakes"].items() if fake.received}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_claude_prompt_too_long_goes_to_a_larger_window_only(win: dict[str, Any], stream: bool) -> None:
    resp = _long_request(win["url"], "closed", stream)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "claude-large"
    # Claude's real 400 ("prompt is too long: N tokens > M maximum") is not retried, and neither the same
    # window nor a smaller one is tried: only a strictly larger one.
    assert _asked(win) == {"claude-small": 1, "claude-large": 1}


@pytest.mark.parametrize("style", ["vllm", "vllm-legacy"])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_vllm_context_length_goes_to_a_larger_window_only(win: dict[str, Any], stream: bool, style: str) -> None:
    win["fakes"]["vllm-small"].context_error = style  # vLLM says so only in its message, in either envelope
    resp = _long_request(win["url"], "open", stream)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "claude-large"  # the other tier, by open_to_closed
    assert resp.headers["x-tiergate-route"].endswith("failover:open-down")
    assert _asked(win) == {"vllm-small": 1, "claude-large": 1}


def test_context_length_with_no_larger_window_is_a_clean_400(win: dict[str, Any]) -> None:
    resp = _long_request(win["url"], "vllm-small", False)  # pinned to one backend: nowhere larger to go
    assert resp.status_code == 400
    assert "maximum context length" in resp.json()["error"]["message"]
    assert _asked(win) == {"vllm-small": 1}


def test_context_length_errors_do_not_open_the_circuit(win: dict[str, Any]) -> None:
    answers = [_long_request(win["url"], "claude-small", False) for _ in range(6)]  # breaker_failures is 5
    assert [a.status_code for a in answers] == [400] * 6  # each one the backend's own answer, not "circuit open"
    assert _asked(win) == {"claude-small": 6}
    state = httpx.get(win["url"] + "/readyz").json()["backends"]["claude-small"]
    assert state["circuit"] == "closed"


# -- connect timeout ---------------------------------------------------------------------------------------

CONNECT_S = 0.5
HANGING_CONNECT = {
    "connect_timeout_s": CONNECT_S,  # the only timeout short enough to explain a quick failover
    "first_token_timeout_s": 60,
    "timeout_s": 60,
    "breaker_failures": 1000,  # every test gets to try the unreachable backends
}


@pytest.fixture(scope="module")
def unreachable() -> Iterator[dict[str, Any]]:
    """Backends of both kinds whose address neither accepts nor refuses a connection, and a live Claude."""
    claude = FakeAnthropic()
    with blackhole() as hole, serve_app(claude) as claude_url:
        backends: list[dict[str, Any]] = [
            {"name": "hole-oa", "tier": "open", "kind": "openai", "base_url": hole + "/v1", **HANGING_CONNECT},
            {"name": "hole-an", "tier": "closed", "kind": "anthropic", "base_url": hole, **HANGING_CONNECT},
            {"name": "live", "tier": "closed", "kind": "anthropic", "base_url": claude_url},
        ]
        for b in backends:
            if b["kind"] == "anthropic":
                b["api_key_env"] = CLAUDE_KEY_ENV
        config = parse_config(
            {
                "backends": backends,
                "router": {"kind": "open"},
                "dispatch": {"attempts": 2, "backoff_base_s": 0.01, "deadline_s": 120},
            }
        )
        with serve_gateway(config) as url:
            yield {"url": url, "claude": claude}


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = call()
    return resp, time.monotonic() - started


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("model", "holes"), [("open", 2), ("closed", 1)])
def test_connect_timeout_fails_over_within_the_configured_connect_timeout(
    unreachable: dict[str, Any], model: str, holes: int, stream: bool
) -> None:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    resp, elapsed = _timed(lambda: httpx.post(unreachable["url"] + OA, json=body, timeout=120))
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "live"
    # open: hole-oa (openai) twice, then hole-an (anthropic) twice; closed: hole-an twice. Each try gives up
    # after connect_timeout_s, not after timeout_s / first_token_timeout_s (60 s) or a built-in default.
    assert elapsed <= 2 * holes * CONNECT_S + SLACK_S
    ready = httpx.get(unreachable["url"] + "/readyz").json()["backends"]
    assert "ConnectTimeout" in ready["hole-an"]["last_error"]
    if model == "open":
        assert "ConnectTimeout" in ready["hole-oa"]["last_error"]


@pytest.mark.parametrize("backend", ["hole-oa", "hole-an"])
def test_connect_timeout_alone_is_a_clean_504(unreachable: dict[str, Any], backend: str) -> None:
    body = {"model": backend, "messages": [{"role": "user", "content": "hi"}]}
    resp, elapsed = _timed(lambda: httpx.post(unreachable["url"] + OA, json=body, timeout=120))
    assert resp.status_code == 504
    assert backend in resp.json()["error"]["message"]
    assert elapsed <= 2 * CONNECT_S + SLACK_S


# -- active health checks ----------------------------------------------------------------------------------

HEALTH_INTERVAL_S = 0.2


def test_active_health_checks_see_a_replica_go_down_and_come_back_without_traffic() -> None:
    flaky, steady = FakeOpenAI(), FakeOpenAI()
    port = free_port()
    with contextlib.ExitStack() as stack:
        steady_url = stack.enter_context(serve_app(steady))
        replica = stack.enter_context(contextlib.ExitStack())
        replica.enter_context(serve_app(flaky, port=port))
        backends = [
            {"name": "flaky", "tier": "open", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"},
            {"name": "steady", "tier": "open", "kind": "openai", "base_url": steady_url + "/v1"},
        ]
        config = parse_config(
            {"backends": backends, "router": {"kind": "open"}, "dispatch": {"health_interval_s": HEALTH_INTERVAL_S}}
        )
        url = stack.enter_context(serve_gateway(config))

        def flaky_state() -> dict[str, Any]:
            state: dict[str, Any] = httpx.get(url + "/readyz").json()["backends"]["flaky"]
            return state

        def metric() -> str:
            lines = httpx.get(url + "/metrics").text.splitlines()
            return next(line for line in lines if line.startswith("tiergate_backend_up{") and '"flaky"' in line)

        assert flaky_state()["healthy"] is True
        replica.close()  # the replica goes down
        down_after = wait_for(lambda: flaky_state()["healthy"] is False, "the check to see the replica down")
        assert metric().endswith(" 0.0")
        replica.enter_context(serve_app(flaky, port=port))  # and comes back on the same address
        up_after = wait_for(lambda: flaky_state()["healthy"] is True, "the check to see the replica back")
        assert metric().endswith(" 1.0")
        ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200
    assert flaky.received == []  # no traffic: only the active checks saw it
    assert steady.received == []
    # Within a few intervals (generously bounded: the machine is shared), not on the next request.
    assert down_after <= 25 * HEALTH_INTERVAL_S + SLACK_S
    assert up_after <= 25 * HEALTH_INTERVAL_S + SLACK_S


def wait_for(check: Callable[[], bool], what: str, limit_s: float = 30.0) -> float:
    """Poll ``check`` until it holds; returns the seconds it took (fails after ``limit_s``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"still waiting after {limit_s:.0f}s for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


# -- resuming a cut stream on a fallback that does not continue a prefix ------------------------------------

ANSWER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"


@contextlib.contextmanager
def cut_and_fallback(
    fallback: FakeOpenAI | FakeAnthropic, *, ledger: str = "sqlite:///:memory:", **config: Any
) -> Iterator[tuple[str, FakeOpenAI]]:
    """A gateway over a vLLM ``primary`` that answers :data:`ANSWER` and the ``fallback`` (tried second)."""
    primary = FakeOpenAI(reply_text=ANSWER, stream_chunks=8)
    with serve_app(primary) as p_url, serve_app(fallback) as f_url:
        kind = "anthropic" if isinstance(fallback, FakeAnthropic) else "openai"
        where = (
            {"base_url": f_url, "api_key_env": CLAUDE_KEY_ENV} if kind == "anthropic" else {"base_url": f_url + "/v1"}
        )
        backends = [
            {"name": "primary", "tier": "open", "kind": "openai", "base_url": p_url + "/v1", **TIMEOUTS},
            {"name": "fallback", "tier": "open", "kind": kind, **where, **TIMEOUTS, **config},
        ]
        gateway = parse_config(
            {
                "backends": backends,
                "router": {"kind": "open"},
                "dispatch": {"deadline_s": DEADLINE_S},
                "ledger": {"url": ledger},
            }
        )
        with serve_gateway(gateway) as url:
            primary.script(CutStream(after_events=5))  # the role chunk and four text chunks, then a drop
            yield url, primary


def stream_open(url: str) -> httpx.Response:
    body = {"model": "open", "stream": True, "messages": [{"role": "user", "content": "Greek letters, please."}]}
    return httpx.post(url + OA, json=body, timeout=15)


def test_a_cut_stream_on_a_fallback_that_rejects_prefill_is_restarted_and_spliced() -> None:
    claude = FakeAnthropic(reply_text=ANSWER, prefill="reject")  # as Claude Sonnet 4.6 / Opus 4.7 and later
    with cut_and_fallback(claude, model="claude-3-7-sonnet-latest") as (url, _):  # declared continuing: learned
        resp = stream_open(url)
        again = stream_open(url)  # the next cut stream goes straight to the restart
        ready = httpx.get(url + "/readyz").json()["backends"]["fallback"]
    text, _, done = stream_text(resp)
    assert done
    assert text == ANSWER  # the whole answer once: no repeat, no gap, and never the prefill 400
    assert "prefill" not in resp.text
    assert [m["messages"][-1]["role"] for m in (r.body for r in claude.received)][:2] == ["assistant", "user"]
    assert stream_text(again)[0] == ANSWER
    assert claude.stats.get("prefill_rejected") == 1  # refused once, then known: not asked to continue again
    assert ready["circuit"] == "closed"  # a refused prefill is no fault of the backend


def test_a_cut_stream_on_an_openai_compatible_fallback_that_rejects_prefill_is_restarted() -> None:
    """A server configured as continuing (``continue_final_message: true``) that answers a final assistant turn
    with a 400: learned on the first refusal, the answer restarted there and spliced."""
    server = FakeOpenAI(reply_text=ANSWER, prefill="reject")
    with cut_and_fallback(server, continue_final_message=True) as (url, _):
        resp = stream_open(url)
        ready = httpx.get(url + "/readyz").json()["backends"]["fallback"]
    text, _, done = stream_text(resp)
    assert done
    assert text == ANSWER
    assert "prefill" not in resp.text
    assert [r.body["messages"][-1]["role"] for r in server.received] == ["assistant", "user"]
    assert server.stats.get("prefill_rejected") == 1
    assert ready["circuit"] == "closed"


def test_a_cut_stream_on_a_fallback_that_ignores_the_prefix_is_not_repeated() -> None:
    ignoring = FakeOpenAI(reply_text=ANSWER, prefill="ignore")  # continue_final_message configured, not honoured
    with cut_and_fallback(ignoring, continue_final_message=True) as (url, _):
        resp = stream_open(url)
    text, chunks, done = stream_text(resp)
    assert ignoring.received[0].body["messages"][-1]["role"] == "assistant"  # it was asked to continue
    assert done
    assert text == ANSWER  # not the primary's part followed by the whole answer again
    assert chunks[-1]["choices"] == [] or chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_restarted_answer_that_diverges_ends_the_stream_with_an_error() -> None:
    other = FakeOpenAI(reply_text="omega psi chi phi upsilon tau sigma rho", prefill="ignore")
    with cut_and_fallback(other) as (url, _):  # continue_final_message unknown: restarted, not continued
        resp = stream_open(url)
    text, chunks, done = stream_text(resp)
    assert other.received[0].body["messages"][-1]["role"] == "user"  # restarted without the prefix
    assert not done
    assert 0 < len(text) < len(ANSWER)
    assert ANSWER.startswith(text)  # what the primary sent ...
    assert "omega" not in resp.text  # ... and nothing of the other answer
    assert "primary" in chunks[-1]["error"]["message"]  # names the original failure
    assert "diverged" in chunks[-1]["error"]["message"]


# -- a primary and a lesser fallback of different models (priority) ---------------------------------------


@pytest.fixture(scope="module")
def ranked_world() -> Iterator[dict[str, Any]]:
    """``big`` (priority 10, listed last) over ``small`` (another, lesser model) in one tier, and nothing else."""
    big, small = FakeOpenAI(models=["big-model"]), FakeOpenAI(models=["small-model"])
    with serve_app(big) as big_url, serve_app(small) as small_url:
        backends: list[dict[str, Any]] = [
            {"name": "small", "tier": "open", "kind": "openai", "base_url": small_url + "/v1", "model": "small-model"},
            {"name": "big", "tier": "open", "kind": "openai", "base_url": big_url + "/v1", "model": "big-model"},
        ]
        for b in backends:
            b.update(TIMEOUTS)
        backends[1]["priority"] = 10
        dispatch = {"deadline_s": DEADLINE_S, "retry_after_cap_s": RETRY_AFTER_CAP_S, "backoff_base_s": 0.01}
        with serve_gateway(
            parse_config({"backends": backends, "router": {"kind": "open"}, "dispatch": dispatch})
        ) as url:
            yield {"url": url, "big": big, "small": small}


@pytest.fixture
def ranked(ranked_world: dict[str, Any]) -> dict[str, Any]:
    for fake in (ranked_world["big"], ranked_world["small"]):
        fake.reset()
    return ranked_world


def ask_ranked(ranked: dict[str, Any], *, stream: bool = False) -> httpx.Response:
    body = {"model": "open", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(ranked["url"] + OA, json=body, timeout=15)


@pytest.mark.parametrize(
    "fault", [Fault(500), Fault(429, retry_after=0.3), Fault(429)], ids=["500", "429-retry-after", "429"]
)
def test_a_transient_failure_of_the_primary_is_retried_on_it_before_a_lesser_fallback(
    ranked: dict[str, Any], fault: Fault
) -> None:
    ranked["big"].script(fault)
    started = time.monotonic()
    resp = ask_ranked(ranked)
    waited = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "big"
    assert resp.json()["model"] == "big-model"
    assert len(ranked["big"].received) == 2
    assert ranked["small"].received == []
    if fault.retry_after is not None:
        assert waited >= fault.retry_after  # Retry-After honoured (it is under retry_after_cap_s)
    elif fault.status == 429:  # no Retry-After: the default rate-limit floor, 0.4 s, by the fake's clock
        first, second = ranked["big"].received
        assert second.at - first.at >= DispatchConfig().rate_limit_backoff_min_s


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_slow_first_token_on_the_primary_goes_to_the_fallback_without_a_second_wait(
    ranked: dict[str, Any], stream: bool
) -> None:
    ranked["big"].script(SlowFirstToken(seconds=5.0), SlowFirstToken(seconds=5.0))
    started = time.monotonic()
    resp = ask_ranked(ranked, stream=stream)
    elapsed = time.monotonic() - started
    assert resp.headers["x-tiergate-backend"] == "small"
    if stream:
        text, _, done = stream_text(resp)
        assert done
        assert text
    else:  # asked of the primary as a stream too, so left after the same first-token budget
        assert resp.json()["choices"][0]["message"]["content"]
        assert resp.json()["model"] == "small-model"
        assert ranked["big"].received[0].body["stream"] is True
    assert len(ranked["big"].received) == 1  # silent: left once, never retried within the request
    assert elapsed <= TIMEOUTS["first_token_timeout_s"] + SLACK_S


# -- time budgets that scale with the prompt ---------------------------------------------------------------

BUDGET = {"first_token_timeout_s": 0.5, "first_token_per_1k_input_s": 4.0, "breaker_failures": 1000}
BUDGET_SLACK_S = 5.0  # the acceptance bound: 2 x the first-token budget + 5 s
ANSWER_BUDGET = {"answer_per_1k_output_s": 5.0}  # Claude asked whole: + 5 s per 1,000 max_tokens (200: 1 s)


@pytest.fixture(scope="module")
def budget_world() -> Iterator[dict[str, Any]]:
    """Two open replicas ``a`` and ``b`` and a Claude, each with a first-token budget of 0.5 s + 4 s per 1,000 input
    tokens (Claude asked whole: + 5 s per 1,000 max_tokens), and the default request deadline and attempt timeout
    (300 s): only the budgets can explain a quick answer. A failing open tier does not go to Claude
    (``open_to_closed: false``); a failing Claude goes to the open tier."""
    fakes: dict[str, Any] = {"a": FakeOpenAI(stream_chunks=4), "b": FakeOpenAI(stream_chunks=4)}
    fakes["claude"] = FakeAnthropic()
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve_app(fake)) for name, fake in fakes.items()}
        backends: list[dict[str, Any]] = [
            {"name": n, "tier": "open", "kind": "openai", "base_url": urls[n] + "/v1", "model": "m", **BUDGET}
            for n in ("a", "b")
        ]
        backends.append(
            {"name": "claude", "tier": "closed", "kind": "anthropic", "base_url": urls["claude"], **BUDGET}
            | {"api_key_env": CLAUDE_KEY_ENV, "model": "claude-sonnet-4-5", **ANSWER_BUDGET}
        )
        policy = {"failover": {"open_to_closed": False}}
        config = parse_config({"backends": backends, "router": {"kind": "open"}, "policy": policy})
        url = stack.enter_context(serve_gateway(config))
        yield {"url": url, **fakes}


@pytest.fixture
def bw(budget_world: dict[str, Any]) -> Iterator[dict[str, Any]]:
    def clean() -> None:
        for name in ("a", "b", "claude"):
            budget_world[name].reset()
            budget_world[name].first_token_s = 0.0

    clean()
    yield budget_world
    clean()


def _stream_in(url: str, dialect: str, model: str, text: str = "Tell me something.") -> httpx.Response:
    messages = [{"role": "user", "content": text}]
    if dialect == "openai":
        return httpx.post(url + OA, json={"model": model, "stream": True, "messages": messages}, timeout=60)
    body = {"model": model, "max_tokens": 200, "stream": True, "messages": messages}
    return httpx.post(url + AN, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=60)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("silence", ["no answer at all", "headers, then no first token"])
def test_two_silent_replicas_are_a_clean_504_within_twice_the_first_token_budget(
    bw: dict[str, Any], dialect: str, silence: str
) -> None:
    for name in ("a", "b"):
        bw[name].script(Hang(seconds=30) if silence == "no answer at all" else SlowFirstToken(seconds=30))
    started = time.monotonic()
    resp = _stream_in(bw["url"], dialect, "open", "hi")
    elapsed = time.monotonic() - started
    assert resp.status_code == 504
    if dialect == "openai":
        assert resp.json()["error"]["type"] == "timeout"
        assert "no first token" in resp.json()["error"]["message"]
    else:
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["type"] == "timeout_error"
    # Each silent replica was waited for once (never twice), so the caller's wait is about two budgets; the
    # acceptance bound (2 x budget + 5 s) holds with the default 300 s deadline left far behind.
    assert (len(bw["a"].received), len(bw["b"].received)) == (1, 1)
    budget = BUDGET["first_token_timeout_s"] + BUDGET["first_token_per_1k_input_s"] * 0.005  # "hi": a few tokens
    assert elapsed <= 2 * budget + BUDGET_SLACK_S
    assert bw["claude"].received == []


def _whole_in(url: str, dialect: str, model: str, text: str = "Tell me something.") -> httpx.Response:
    """A non-streaming request (the answer comes whole to the caller)."""
    messages = [{"role": "user", "content": text}]
    if dialect == "openai":
        return httpx.post(url + OA, json={"model": model, "messages": messages}, timeout=60)
    body = {"model": model, "max_tokens": 200, "messages": messages}
    return httpx.post(url + AN, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=60)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("silence", ["no answer at all", "headers, then no first token"])
def test_two_silent_replicas_on_a_non_streaming_request_are_a_clean_504_within_twice_the_first_token_budget(
    bw: dict[str, Any], dialect: str, silence: str
) -> None:
    """A whole answer has no first token of its own: the replicas are asked for a stream and the answer gathered
    (``complete_by_stream``), so the first-token budget leaves each as for a stream, not the 300 s attempt timeout."""
    for name in ("a", "b"):
        bw[name].script(Hang(seconds=30) if silence == "no answer at all" else SlowFirstToken(seconds=30))
    started = time.monotonic()
    resp = _whole_in(bw["url"], dialect, "open", "hi")
    elapsed = time.monotonic() - started
    assert resp.status_code == 504
    if dialect == "openai":
        assert resp.json()["error"]["type"] == "timeout"
        assert "no first token" in resp.json()["error"]["message"]
    else:
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["type"] == "timeout_error"
        assert "no first token" in resp.json()["error"]["message"]
    asked = [(r.body["stream"], r.body["stream_options"]) for name in ("a", "b") for r in bw[name].received]
    assert asked == [(True, {"include_usage": True})] * 2  # each replica once, asked for a stream
    budget = BUDGET["first_token_timeout_s"] + BUDGET["first_token_per_1k_input_s"] * 0.005  # "hi": a few tokens
    assert elapsed <= 2 * budget + BUDGET_SLACK_S
    assert bw["claude"].received == []


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_slow_first_token_on_a_non_streaming_request_goes_to_the_other_replica(
    bw: dict[str, Any], dialect: str
) -> None:
    """``a`` would answer in full 20 s later (its first token that late): left after its first-token budget, once;
    ``b`` answers the whole answer."""
    bw["a"].first_token_s = 20.0
    started = time.monotonic()
    resp = _whole_in(bw["url"], dialect, "open")
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "b"
    assert resp.headers["x-tiergate-route"].endswith("failover:a-down")
    text = resp.json()["choices"][0]["message"]["content"] if dialect == "openai" else resp.json()["content"][0]["text"]
    assert text.startswith("Hello from fake LLM")
    assert (len(bw["a"].received), len(bw["b"].received)) == (1, 1)  # silent: not asked twice
    assert elapsed <= BUDGET["first_token_timeout_s"] + BUDGET_SLACK_S  # far less than the 20 s it would have taken


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_slow_claude_on_a_non_streaming_request_goes_to_the_open_tier(bw: dict[str, Any], dialect: str) -> None:
    """Claude 20 s late. An OpenAI caller's request is translated: asked for a stream, left after the first-token
    budget. An Anthropic caller's goes to Claude as its own body, asked whole (its message comes back as Claude sent
    it): left after the whole-answer budget, 0.5 s + 5 s per 1,000 of its 200 max_tokens. Both are answered by the
    open tier, Claude asked once."""
    bw["claude"].first_token_s = 20.0
    started = time.monotonic()
    resp = _whole_in(bw["url"], dialect, "closed")
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "a"
    assert resp.headers["x-tiergate-route"].endswith("failover:closed-down")
    assert [bool(r.body.get("stream")) for r in bw["claude"].received] == [dialect == "openai"]
    prompt = BUDGET["first_token_timeout_s"] + BUDGET["first_token_per_1k_input_s"] * 0.01  # a few input tokens
    answer_budget = prompt + ANSWER_BUDGET["answer_per_1k_output_s"] * 200 / 1000
    assert elapsed <= answer_budget + BUDGET_SLACK_S


def test_a_long_prompt_gets_a_longer_first_token_budget(bw: dict[str, Any]) -> None:
    """``a`` takes 2 s to its first token: over the budget of a short prompt (0.5 s), left for ``b``; within that of
    a prompt of about 1,500 tokens (0.5 s + 1.5 x 4 s), waited for."""
    bw["a"].first_token_s = 2.0
    short = _stream_in(bw["url"], "openai", "open", "Say hello.")
    long = _stream_in(bw["url"], "openai", "open", "Summarise these words please. " * 200)  # about 1,500 tokens
    assert short.status_code == long.status_code == 200
    assert short.headers["x-tiergate-backend"] == "b"  # the short prompt's budget ran out: left at once for b
    assert long.headers["x-tiergate-backend"] == "a"  # the long prompt's did not
    assert stream_text(short)[2]
    assert stream_text(long)[2]
    assert len(bw["a"].received) == 2
    assert len(bw["b"].received) == 1


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_slow_first_token_on_claude_goes_to_the_open_tier(bw: dict[str, Any], dialect: str) -> None:
    """Claude (the fake in slow-first-token mode: message_start at once, the first text 20 s later, the issue's
    case) is left when its first-token budget runs out; the open tier streams the answer (``closed_to_open``)."""
    bw["claude"].first_token_s = 20.0
    started = time.monotonic()
    resp = _stream_in(bw["url"], dialect, "closed")
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "a"
    assert resp.headers["x-tiergate-route"].endswith("failover:closed-down")
    if dialect == "openai":
        assert stream_text(resp)[2]
    else:
        names = [name for name, _ in anthropic_events(resp)]
        assert names[-1] == "message_stop"
        assert "error" not in names
    assert len(bw["claude"].received) == 1  # silent: not asked twice
    assert elapsed <= BUDGET["first_token_timeout_s"] + BUDGET_SLACK_S  # far less than the 20 s it would have taken


# -- recovery: a passing health check closes the circuit ---------------------------------------------------

RECOVERY_S = 0.1  # dispatch.recovery_interval_s


@contextlib.contextmanager
def recovery_world() -> Iterator[dict[str, Any]]:
    """``primary`` (priority 10, on a fixed port so it can go down and come back) over ``fallback``; a circuit opens
    after 2 failures and cools down for 10 minutes, so only a health check can give the primary its traffic back
    within a test. Every backend is checked each minute, one that is ailing every ``RECOVERY_S``."""
    primary, fallback = FakeOpenAI(models=["big"]), FakeOpenAI(models=["small"])
    port = free_port()
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(contextlib.ExitStack())
        up.enter_context(serve_app(primary, port=port))
        fallback_url = stack.enter_context(serve_app(fallback))
        breaker = {"breaker_failures": 2, "breaker_cooldown_s": 600}
        backends: list[dict[str, Any]] = [
            {"name": "primary", "tier": "open", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
            | {"model": "big", "priority": 10, **breaker},
            {"name": "fallback", "tier": "open", "kind": "openai", "base_url": fallback_url + "/v1", "model": "small"},
        ]
        dispatch = {"health_interval_s": 60, "recovery_interval_s": RECOVERY_S, "backoff_base_s": 0.01}
        config = parse_config({"backends": backends, "router": {"kind": "open"}, "dispatch": dispatch})
        url = stack.enter_context(serve_gateway(config))
        yield {"url": url, "port": port, "up": up, "primary": primary, "fallback": fallback}


def _primary_state(url: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(url + "/readyz").json()["backends"]["primary"]
    return state


def test_a_recovered_primary_gets_its_traffic_back_when_its_health_check_passes() -> None:
    with recovery_world() as rw:
        url = rw["url"]
        rw["up"].close()  # the primary goes down: connections refused
        down = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
        assert down.headers["x-tiergate-backend"] == "fallback"
        assert _primary_state(url)["circuit"] == "open"  # two refused tries on it (its priority), then open
        wait_for(lambda: _primary_state(url)["healthy"] is False, "the recovery checks to see the primary down")
        rw["up"].enter_context(serve_app(rw["primary"], port=rw["port"]))  # it recovers, on the same address
        wait_for(lambda: _primary_state(url)["circuit"] == "closed", "the passing check to close the circuit")
        back = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
        ready = _primary_state(url)
    # Closed by the health check, not by the breaker's cooldown (10 minutes): the next request is the primary's.
    assert back.status_code == 200
    assert back.headers["x-tiergate-backend"] == "primary"
    assert back.json()["model"] == "big"
    assert ready["healthy"] is True


def test_a_health_check_that_passed_all_along_does_not_close_the_circuit() -> None:
    """Chat requests fail (500) while the probed endpoint (``GET /models``) answers: the check saw no outage, so
    its passing is no news; the circuit stays open (the breaker's cooldown and half-open probe decide)."""
    with recovery_world() as rw:
        url = rw["url"]
        rw["primary"].flap(["fail"])
        first = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
        assert first.headers["x-tiergate-backend"] == "fallback"
        assert _primary_state(url)["circuit"] == "open"
        time.sleep(10 * RECOVERY_S)  # ten recovery checks, every one of them passing
        state = _primary_state(url)
        again = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
    assert state["healthy"] is True
    assert state["circuit"] == "open"
    assert again.headers["x-tiergate-backend"] == "fallback"
    assert len(rw["primary"].received) == 2  # the two failed tries of the first request, none since


# -- every attempt in the ledger and the log -----------------------------------------------------------------


def _tries(rows: list[AttemptRow]) -> list[tuple[str, str, str, int | None]]:
    return [(r.backend, r.purpose, r.outcome, r.upstream_status) for r in rows]


def test_a_failover_shows_both_attempts_in_the_ledger_and_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tiergate.requests")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    primary, secondary = FakeOpenAI(), FakeOpenAI()
    with serve_app(primary) as p_url, serve_app(secondary) as s_url:
        backends = [
            {"name": n, "tier": "open", "kind": "openai", "base_url": u + "/v1", "model": "m"}
            for n, u in (("primary", p_url), ("secondary", s_url))
        ]
        config = parse_config({"backends": backends, "router": {"kind": "open"}, "ledger": {"url": ledger}})
        with serve_gateway(config) as url:
            primary.script(Fault(503, message="upstream overloaded"))
            failed_over = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
            direct = httpx.post(url + OA, json={"model": "open", "messages": [{"role": "user", "content": "hi"}]})
            rid, direct_rid = failed_over.headers["x-request-id"], direct.headers["x-request-id"]
            tries, direct_tries = wait_attempts(ledger, rid), wait_attempts(ledger, direct_rid)
    assert failed_over.headers["x-tiergate-backend"] == "secondary"
    assert _tries(tries) == [("primary", "first", "failed", 503), ("secondary", "failover", "ok", None)]
    assert "upstream overloaded" in tries[0].reason  # why it was abandoned
    assert tries[1].output_tokens > 0
    assert tries[0].started_ms <= tries[1].started_ms
    assert [t.cost_usd for t in tries] == [0.0, 0.0]  # a failed exchange is not billed
    assert _tries(direct_tries) == [("primary", "first", "ok", None)]  # every request has its path
    lines = [r.getMessage() for r in caplog.records if r.name == "tiergate.requests" and rid in r.getMessage()]
    assert len(lines) == 1
    assert "primary failed" in lines[0]
    assert "upstream overloaded" in lines[0]
    assert "secondary ok" in lines[0]
    assert not [r for r in caplog.records if r.name == "tiergate.requests" and direct_rid in r.getMessage()]


def test_a_refused_prefill_is_in_the_ledger_and_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's blind spot: the fallback's prefill 400 was in no log line and no ledger row."""
    caplog.set_level(logging.INFO, logger="tiergate.requests")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    claude = FakeAnthropic(reply_text=ANSWER, prefill="reject")
    with cut_and_fallback(claude, ledger=ledger, model="claude-3-7-sonnet-latest") as (url, _):
        resp = stream_open(url)
        rid = resp.headers["x-request-id"]
        tries = wait_attempts(ledger, rid)
    assert stream_text(resp)[0] == ANSWER
    assert _tries(tries) == [
        ("primary", "first", "cut", None),
        ("fallback", "continue", "prefill_rejected", 400),
        ("fallback", "restart", "ok", None),
    ]
    assert "prefill" in tries[1].reason
    assert tries[0].output_tokens == 4  # the four text chunks the caller got before the cut
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tiergate.requests" and rid in r.getMessage()]
    assert "primary cut" in line
    assert "continue: fallback prefill_rejected" in line
    assert "restart: fallback ok" in line


# -- hedging (opt-in) ----------------------------------------------------------------------------------------

HEDGE_BUDGET_S = 2.0
HEDGE_AFTER = 0.25  # the partner starts 0.5 s into a 2 s first-token budget


@pytest.fixture(scope="module")
def hedge_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Replicas ``a`` (priced, so what a lost race cost shows) and ``b``; streams hedged after a quarter of the
    first-token budget; a ledger on file."""
    ledger = f"sqlite:///{tmp_path_factory.mktemp('hedge') / 'ledger.db'}"
    fakes = {"a": FakeOpenAI(stream_chunks=4), "b": FakeOpenAI(stream_chunks=4)}
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve_app(fake)) for name, fake in fakes.items()}
        budget = {"first_token_timeout_s": HEDGE_BUDGET_S, "first_token_per_1k_input_s": 0.0}
        backends: list[dict[str, Any]] = [
            {"name": n, "tier": "open", "kind": "openai", "base_url": urls[n] + "/v1", "model": "m", **budget}
            for n in ("a", "b")
        ]
        backends[0]["price"] = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
        config = parse_config(
            {
                "backends": backends,
                "router": {"kind": "open"},
                "dispatch": {"hedge_after": HEDGE_AFTER},
                "ledger": {"url": ledger},
            }
        )
        url = stack.enter_context(serve_gateway(config))
        yield {"url": url, "ledger": ledger, **fakes}


@pytest.fixture
def hw(hedge_world: dict[str, Any]) -> Iterator[dict[str, Any]]:
    def clean() -> None:
        for name in ("a", "b"):
            hedge_world[name].reset()
            hedge_world[name].first_token_s = 0.0

    clean()
    yield hedge_world
    clean()


def _idle(url: str) -> dict[str, Any]:
    """``/readyz``'s backends once none has a request in flight (a cancelled side frees its slot)."""

    def backends() -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(url + "/readyz").json()["backends"]
        return state

    wait_for(lambda: all(b["in_flight"] == 0 for b in backends().values()), "every slot to be free")
    return backends()


def test_a_hedge_answers_when_the_first_backend_is_slow_and_the_loser_is_accounted(hw: dict[str, Any]) -> None:
    hw["a"].first_token_s = 3.0  # slower than its 2 s budget; the hedge starts at 0.5 s and answers first
    resp = _stream_in(hw["url"], "openai", "open")
    text, _, done = stream_text(resp)
    tries = wait_attempts(hw["ledger"], resp.headers["x-request-id"])
    state = _idle(hw["url"])
    assert done
    assert text
    assert resp.headers["x-tiergate-backend"] == "b"
    assert resp.headers["x-tiergate-route"].endswith(";hedge:b")
    assert _tries(tries) == [("a", "first", "lost", None), ("b", "hedge", "ok", None)]
    assert tries[0].reason == "b answered first"
    assert tries[1].started_ms - tries[0].started_ms >= HEDGE_AFTER * HEDGE_BUDGET_S * 0.9  # started after the delay
    # The loser's cost is in the ledger: its prompt, at a's price (1000 USD per million tokens); the winner's is
    # in the request's row.
    assert tries[0].cost_usd == pytest.approx(tries[0].input_tokens * 1000 / 1e6)
    assert tries[0].cost_usd > 0
    assert tries[1].cost_usd == 0.0
    assert len(hw["a"].received) == 1  # a was asked, then cancelled ...
    assert state["a"]["circuit"] == "closed"  # ... with no verdict against it: slower is no fault


def test_a_hedge_that_loses_to_the_first_backend_is_cancelled(hw: dict[str, Any]) -> None:
    hw["a"].first_token_s = 1.0  # after the hedge started (0.5 s), before its budget (2 s)
    hw["b"].first_token_s = 30.0
    resp = _stream_in(hw["url"], "anthropic", "open")
    events = anthropic_events(resp)
    tries = wait_attempts(hw["ledger"], resp.headers["x-request-id"])
    _idle(hw["url"])
    assert resp.headers["x-tiergate-backend"] == "a"
    assert "hedge" not in resp.headers["x-tiergate-route"]
    assert [name for name, _ in events][-1] == "message_stop"
    assert _tries(tries) == [("a", "first", "ok", None), ("b", "hedge", "lost", None)]
    assert tries[1].reason == "a answered first"
    assert tries[1].cost_usd == 0.0  # b has no price: an open backend without cost or price costs nothing
    assert len(hw["b"].received) == 1


def test_no_hedge_when_the_first_backend_answers_in_time(hw: dict[str, Any]) -> None:
    resp = _stream_in(hw["url"], "openai", "open")
    tries = wait_attempts(hw["ledger"], resp.headers["x-request-id"])
    assert resp.headers["x-tiergate-backend"] == "a"
    assert _tries(tries) == [("a", "first", "ok", None)]
    assert hw["b"].received == []
