"""Request limits (``limits:``): checked on the body before the parsing work that grows with it, each a clean 4xx
in the caller's envelope that names the limit, and none a mark against a backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.config import parse_config
from tiergate.errors import ConfigError

OA, AN, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
LIMITS = {"max_json_depth": 8, "max_json_items": 1000, "max_messages": 4, "max_text_chars": 500}


@pytest.fixture(scope="module")
def gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    config = parse_config(
        {"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}, "limits": LIMITS}
    )
    with serve_gateway(config) as url:
        yield url


@pytest.fixture(scope="module")
def default_gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


def body(path: str, model: str = "vllm", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if path == AN:
        out["max_tokens"] = 8
    return {**out, **fields}


def post(base: str, path: str, content: bytes | dict[str, Any]) -> httpx.Response:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    return httpx.post(base + path, content=data, headers=HEADERS, timeout=30)


def error_of(resp: httpx.Response, path: str, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    if path == OA:
        err: dict[str, Any] = resp.json()["error"]
        assert err["type"] == "invalid_request_error"
        return err
    assert resp.json()["type"] == "error"
    err = resp.json()["error"]
    assert err["type"] == ("request_too_large" if status == 413 else "invalid_request_error")
    return err


def chain(depth: int) -> Any:
    """``depth`` objects, each in the one before: ``{"x": {"x": ... "leaf"}}``."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize("path", [OA, AN, COUNT])
def test_json_nested_50000_deep_is_a_400_not_a_500(default_gateway: str, path: str) -> None:
    """The issue's case: 500 before (a plain-text one on count_tokens); now a 400 at the default limit."""
    deep = b"[" * 50_000 + b"]" * 50_000
    content = json.dumps(body(path)).encode().replace(b'"hi"', deep)
    err = error_of(post(default_gateway, path, content), path, 400)
    assert err["message"] == "request body nests arrays and objects deeper than 64 levels (limits.max_json_depth)"


@pytest.mark.parametrize("path", [OA, AN])
def test_depth_at_the_limit_passes_and_one_more_is_refused(gateway: str, path: str) -> None:
    """Eight levels at most: the body, ``tools``, the tool (and OpenAI's ``function``), then the schema's objects.
    Brackets inside strings are text, not nesting."""
    text = "[[[[{{{{ text, not nesting"
    schema = 5 if path == AN else 4  # objects of the schema that make eight levels in all

    def tool(depth: int) -> dict[str, Any]:
        if path == AN:
            return {"name": "f", "description": text, "input_schema": chain(depth)}
        return {"type": "function", "function": {"name": "f", "description": text, "parameters": chain(depth)}}

    resp = post(gateway, path, body(path, tools=[tool(schema)]))
    assert resp.status_code == 200, resp.text
    err = error_of(post(gateway, path, body(path, tools=[tool(schema + 1)])), path, 400)
    assert err["message"] == "request body nests arrays and objects deeper than 8 levels (limits.max_json_depth)"


@pytest.mark.parametrize("path", [OA, AN, COUNT])
def test_too_many_json_values_is_a_413(gateway: str, path: str) -> None:
    content = body(path, metadata={"tags": list(range(2000))})
    err = error_of(post(gateway, path, content), path, 413)
    assert "over this gateway's limit of 1000 (limits.max_json_items)" in err["message"]


def test_strings_full_of_commas_and_brackets_are_not_values(gateway: str) -> None:
    text = '[{"a": 1}, ' * 200 + 'and \\" quotes \\\\'
    resp = post(gateway, AN, body(AN, messages=[{"role": "user", "content": text[:500]}]))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", [OA, AN, COUNT])
def test_too_many_messages_is_a_413_naming_messages(gateway: str, path: str) -> None:
    turns = [{"role": role, "content": "hi"} for role in ("user", "assistant") * 3][:5]
    err = error_of(post(gateway, path, body(path, messages=turns)), path, 413)
    assert err["message"] == "messages: 5 messages is over this gateway's limit of 4 (limits.max_messages)"
    if path == OA:
        assert err["param"] == "messages"


@pytest.mark.parametrize("path", [OA, AN, COUNT])
def test_a_text_over_the_limit_is_a_413_naming_the_field(gateway: str, path: str) -> None:
    resp = post(gateway, path, body(path, messages=[{"role": "user", "content": "x" * 501}]))
    err = error_of(resp, path, 413)
    assert err["message"].startswith("messages.0.content: 501 characters is over this gateway's limit of 500")
    ok = post(gateway, path, body(path, messages=[{"role": "user", "content": "x" * 500}]))
    assert ok.status_code == 200, ok.text


def test_limits_never_count_against_a_backend(gateway: str) -> None:
    deep = json.dumps(body(OA)).encode().replace(b'"hi"', b"[" * 100 + b"]" * 100)
    for _ in range(4):
        for content in (deep, body(OA, messages=[{"role": "user", "content": "x" * 600}])):
            assert post(gateway, OA, content).status_code in (400, 413)
    ready = httpx.get(gateway + "/readyz", timeout=10).json()
    assert ready["ready"] is True
    assert {b["circuit"] for b in ready["backends"].values()} == {"closed"}
    assert post(gateway, OA, body(OA)).status_code == 200


def test_a_wrong_limits_section_is_one_line_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^config: limits\.max_json_depth: Input should be less than or equal"):
        parse_config({"limits": {"max_json_depth": 100_000}})
    with pytest.raises(ConfigError, match=r"^config: limits\.max_depth: unknown field"):
        parse_config({"limits": {"max_depth": 10}})
