"""The bad-input matrix: each row gets the caller's dialect's envelope, the right status and a clear message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault, Hang, MalformedStream, script_marker
from tiergate.config import parse_config

OA = "/v1/chat/completions"
AN = "/v1/messages"
AN_HEADERS = {"anthropic-version": "2023-06-01"}


def post(base: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **(AN_HEADERS if path == AN else {}), **kw.pop("headers", {})}
    return httpx.post(base + path, content=content, headers=headers, timeout=30, **kw)


def openai_error(resp: httpx.Response, status: int, *, contains: str, err_type: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert contains in err["message"], err["message"]
    if err_type is not None:
        assert err["type"] == err_type
    assert resp.headers["x-request-id"]
    return dict(err)


def anthropic_error(resp: httpx.Response, status: int, *, err_type: str, contains: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == err_type
    assert contains in body["error"]["message"], body["error"]["message"]


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- malformed and missing --------------------------------------------------------------------------


def test_malformed_json_openai(fast_gateway: str) -> None:
    openai_error(post(fast_gateway, OA, b'{"model": "auto", "messages": ['), 400, contains="not valid JSON")


def test_malformed_json_anthropic(fast_gateway: str) -> None:
    resp = post(fast_gateway, AN, b"{nope")
    anthropic_error(resp, 400, err_type="invalid_request_error", contains="not valid JSON")


def test_body_not_an_object(fast_gateway: str) -> None:
    openai_error(post(fast_gateway, OA, [1, 2]), 400, contains="must be a JSON object")


def test_missing_messages(fast_gateway: str) -> None:
    err = openai_error(post(fast_gateway, OA, {"model": "auto"}), 400, contains="messages: required field is missing")
    assert err["param"] == "messages"


def test_empty_messages_openai(fast_gateway: str) -> None:
    openai_error(post(fast_gateway, OA, {"model": "auto", "messages": []}), 400, contains="at least one message")


def test_empty_messages_anthropic(fast_gateway: str) -> None:
    resp = post(fast_gateway, AN, {"model": "auto", "max_tokens": 5, "messages": []})
    anthropic_error(resp, 400, err_type="invalid_request_error", contains="at least one message")


def test_only_system_message(fast_gateway: str) -> None:
    body = {"model": "auto", "messages": [{"role": "system", "content": "be nice"}]}
    openai_error(post(fast_gateway, OA, body), 400, contains="at least one user message")


def test_missing_max_tokens_anthropic(fast_gateway: str) -> None:
    resp = post(fast_gateway, AN, {"model": "auto", "messages": user()})
    anthropic_error(resp, 400, err_type="invalid_request_error", contains="max_tokens: required field is missing")


# --- roles and order --------------------------------------------------------------------------------


def test_unknown_role_openai(fast_gateway: str) -> None:
    body = {"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}
    openai_error(post(fast_gateway, OA, body), 400, contains="messages.0.role")


def test_unknown_role_anthropic(fast_gateway: str) -> None:
    resp = post(fast_gateway, AN, {"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})
    anthropic_error(resp, 400, err_type="invalid_request_error", contains="messages.0.role")


def test_tool_result_without_tool_call_openai(fast_gateway: str) -> None:
    body = {"model": "auto", "messages": [*user(), {"role": "tool", "tool_call_id": "call_1", "content": "42"}]}
    openai_error(post(fast_gateway, OA, body), 400, contains="must answer a tool call")


def test_first_message_from_assistant_anthropic(fast_gateway: str) -> None:
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "assistant", "content": "hello"}]}
    anthropic_error(post(fast_gateway, AN, body), 400, err_type="invalid_request_error", contains="first message")


def test_tool_result_for_unknown_call_anthropic(fast_gateway: str) -> None:
    result = {"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [result]}]}
    anthropic_error(post(fast_gateway, AN, body), 400, err_type="invalid_request_error", contains="toolu_x")


# --- types and values -------------------------------------------------------------------------------


def test_wrong_type_messages(fast_gateway: str) -> None:
    openai_error(post(fast_gateway, OA, {"model": "auto", "messages": "hello"}), 400, contains="messages")


def test_wrong_type_temperature(fast_gateway: str) -> None:
    body = {"model": "auto", "messages": user(), "temperature": "hot"}
    err = openai_error(post(fast_gateway, OA, body), 400, contains="temperature")
    assert err["param"] == "temperature"


def test_wrong_type_content_block_anthropic(fast_gateway: str) -> None:
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]}
    anthropic_error(post(fast_gateway, AN, body), 400, err_type="invalid_request_error", contains="messages.0.content")


def test_negative_max_tokens(fast_gateway: str) -> None:
    body = {"model": "auto", "messages": user(), "max_tokens": -5}
    openai_error(post(fast_gateway, OA, body), 400, contains="max_tokens")


def test_absurd_max_tokens(fast_gateway: str) -> None:
    body = {"model": "auto", "max_tokens": 10**9, "messages": user()}
    anthropic_error(post(fast_gateway, AN, body), 400, err_type="invalid_request_error", contains="larger than")


def test_tool_choice_without_tools(fast_gateway: str) -> None:
    body = {"model": "auto", "messages": user(), "tool_choice": "required"}
    openai_error(post(fast_gateway, OA, body), 400, contains="requires tools")


# --- model, size, method, auth ----------------------------------------------------------------------


def test_unknown_model_openai(fast_gateway: str) -> None:
    err = openai_error(post(fast_gateway, OA, {"model": "gpt-17", "messages": user()}), 404, contains="gpt-17")
    assert err["code"] == "model_not_found"


def test_unknown_model_anthropic(fast_gateway: str) -> None:
    resp = post(fast_gateway, AN, {"model": "mistral-9", "max_tokens": 5, "messages": user()})
    anthropic_error(resp, 404, err_type="not_found_error", contains="mistral-9")


def test_method_not_allowed(fast_gateway: str) -> None:
    resp = httpx.get(fast_gateway + OA)
    openai_error(resp, 405, contains="GET", err_type="invalid_request_error")
    resp = httpx.delete(fast_gateway + AN)
    anthropic_error(resp, 405, err_type="invalid_request_error", contains="DELETE")


def test_unknown_path(fast_gateway: str) -> None:
    openai_error(httpx.post(fast_gateway + "/v1/completions", json={}), 404, contains="/v1/completions")


@pytest.fixture(scope="module")
def strict_gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """Keys configured, a small body limit and a short upstream timeout."""
    backends = backend_configs(fake_claude[1], fake_openai[1])
    backends[1]["timeout_s"] = 1.0
    for b in backends:  # each failure here is asserted on its own: no retries, no circuit opening
        b["breaker_failures"] = 1000
    config = parse_config(
        {
            "server": {"max_body_bytes": 4096},
            "backends": backends,
            "keys": [{"name": "team-a", "key": "tg-secret-a"}],
            "dispatch": {"attempts": 1},
            "policy": {"failover": {"closed_to_open": False, "open_to_closed": False}},
        }
    )
    with serve_gateway(config) as url:
        yield url


def test_body_over_limit(strict_gateway: str) -> None:
    body = {"model": "auto", "messages": user("x" * 10_000)}
    resp = post(strict_gateway, OA, body, headers={"authorization": "Bearer tg-secret-a"})
    openai_error(resp, 413, contains="limit of 4096 bytes")
    resp = post(strict_gateway, AN, {**body, "max_tokens": 5}, headers={"x-api-key": "tg-secret-a"})
    anthropic_error(resp, 413, err_type="request_too_large", contains="4096")


def test_missing_key(strict_gateway: str) -> None:
    resp = post(strict_gateway, OA, {"model": "auto", "messages": user()})
    openai_error(resp, 401, contains="missing API key", err_type="authentication_error")


def test_wrong_key(strict_gateway: str) -> None:
    resp = post(
        strict_gateway, AN, {"model": "auto", "max_tokens": 5, "messages": user()}, headers={"x-api-key": "nope"}
    )
    anthropic_error(resp, 401, err_type="authentication_error", contains="invalid API key")


def test_right_key_passes(strict_gateway: str) -> None:
    resp = post(
        strict_gateway, OA, {"model": "vllm", "messages": user()}, headers={"authorization": "Bearer tg-secret-a"}
    )
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-backend"] == "vllm"


# --- upstream failures ------------------------------------------------------------------------------

KEY = {"authorization": "Bearer tg-secret-a"}


def test_upstream_overloaded_openai_dialect(strict_gateway: str) -> None:
    body = {"model": "claude", "messages": user("hello " + script_marker(Fault(529)))}
    err = openai_error(post(strict_gateway, OA, body, headers=KEY), 503, contains="backend 'claude'")
    assert err["type"] == "service_unavailable"
    assert "529" in err["message"]


def test_upstream_overloaded_anthropic_dialect(strict_gateway: str) -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": user("hello " + script_marker(Fault(529)))}
    resp = post(strict_gateway, AN, body, headers=KEY)
    anthropic_error(resp, 503, err_type="overloaded_error", contains="backend 'claude'")


def test_upstream_timeout(strict_gateway: str) -> None:
    body = {"model": "claude", "messages": user("hello " + script_marker(Hang(seconds=5)))}
    err = openai_error(
        post(strict_gateway, OA, body, headers=KEY), 504, contains="no answer within 1.0s", err_type="timeout"
    )
    assert err["message"].startswith("backend 'claude': "), err["message"]


def test_upstream_malformed_reply(strict_gateway: str) -> None:
    body = {"model": "vllm", "max_tokens": 5, "messages": user("hello " + script_marker(MalformedStream()))}
    anthropic_error(post(strict_gateway, AN, body, headers=KEY), 502, err_type="api_error", contains="backend 'vllm'")


def test_upstream_rejects_request(strict_gateway: str) -> None:
    body = {"model": "vllm", "messages": user("hello " + script_marker(Fault(422, message="bad sampling params")))}
    openai_error(post(strict_gateway, OA, body, headers=KEY), 400, contains="bad sampling params")


def test_upstream_connection_refused(fake_claude: tuple[FakeAnthropic, str]) -> None:
    from tests.support.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = parse_config({"backends": [{"name": "gone", "tier": "open", "kind": "openai", "base_url": dead + "/v1"}]})
    with serve_gateway(config) as url:
        err = openai_error(post(url, OA, {"model": "auto", "messages": user()}), 503, contains="cannot connect")
        assert err["type"] == "service_unavailable"
        assert err["message"].startswith("backend 'gone': "), err["message"]
