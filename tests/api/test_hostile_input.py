"""Hostile input: each body a client can send that once became a 5xx, and what it gets now: a 400 in the caller's
envelope naming the field, and never a mark against a backend's health."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.config import parse_config

OA, AN, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """Both fakes at the default breaker settings (five failures open a circuit)."""
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


def body(path: str, model: str = "auto", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if path == AN:
        out["max_tokens"] = 8
    return {**out, **fields}


def raw(path: str, model: str, text_json: str) -> bytes:
    """A body whose user message is ``text_json``, written into the JSON as given (escapes and all)."""
    start = json.dumps(body(path, model)).encode()
    return start.replace(b'"hi"', text_json.encode("utf-8", "surrogatepass"))


def check_400(resp: httpx.Response, path: str, *, field: str | None, contains: str) -> None:
    assert resp.status_code == 400, resp.text
    assert "Traceback" not in resp.text
    if path == OA:
        err = resp.json()["error"]
        assert err["type"] == "invalid_request_error"
        assert err["param"] == field
    else:
        assert resp.json()["type"] == "error"
        err = resp.json()["error"]
        assert err["type"] == "invalid_request_error"
    message: str = err["message"]
    assert contains in message, message
    if field is not None:
        assert message.startswith(f"{field}: "), message
    assert "Error" not in message, message  # no exception class names
    assert "Exception" not in message, message


def post(base: str, path: str, content: bytes) -> httpx.Response:
    return httpx.post(base + path, content=content, headers=HEADERS, timeout=30)


# Each: (model, the user message's JSON text, the field named, what the message says)
TEXTS = {
    "escaped lone surrogate": ('"a \\ud800 b"', "messages.0.content", "lone surrogate (\\ud800"),
    "low surrogate alone": ('"\\udfff"', "messages.0.content", "lone surrogate (\\udfff"),
    "raw surrogate bytes": ('"a \ud800 b"', "messages.0.content", "lone surrogate (\\ud800"),
    "surrogate in a key": ('"hi", "\\ud83d": 1', "messages.0", "a key here holds a lone surrogate"),
}


@pytest.mark.parametrize("path", [OA, AN, COUNT])
@pytest.mark.parametrize("case", TEXTS)
@pytest.mark.parametrize("model", ["vllm", "claude"])
def test_lone_surrogates_are_a_400_naming_the_field(gateway: str, path: str, case: str, model: str) -> None:
    text, field, contains = TEXTS[case]
    check_400(post(gateway, path, raw(path, model, text)), path, field=field, contains=contains)


def test_a_valid_surrogate_pair_is_text(gateway: str) -> None:
    resp = post(gateway, AN, raw(AN, "claude", '"smile \\ud83d\\ude00"'))
    assert resp.status_code == 200, resp.text


NUMBERS = {
    "NaN": (b"NaN", None, "NaN is not a JSON number"),
    "Infinity": (b"-Infinity", None, "-Infinity is not a JSON number"),
    "overflowing float": (b"1e400", "temperature", "number out of range"),
    "5,000 digits": (b"9" * 5000, None, "a number has too many digits"),
}


@pytest.mark.parametrize("path", [OA, AN])
@pytest.mark.parametrize("case", NUMBERS)
def test_numbers_json_cannot_carry_are_a_400(gateway: str, path: str, case: str) -> None:
    number, field, contains = NUMBERS[case]
    content = json.dumps(body(path, temperature=0.5)).encode().replace(b"0.5", number)
    check_400(post(gateway, path, content), path, field=field, contains=contains)


PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
ANTHROPIC_IMAGES = {
    "base64 that does not decode": ({"type": "base64", "media_type": "image/png", "data": "!!!"}, "does not decode"),
    "no media_type": ({"type": "base64", "data": PNG_1PX}, "needs a 'media_type'"),
    "no type": ({"data": PNG_1PX}, "needs a 'type'"),
    "url not a string": ({"type": "url", "url": 7}, "needs its 'url'"),
}


@pytest.mark.parametrize("case", ANTHROPIC_IMAGES)
@pytest.mark.parametrize("path", [AN, COUNT])
def test_a_broken_anthropic_image_is_a_400(gateway: str, path: str, case: str) -> None:
    source, contains = ANTHROPIC_IMAGES[case]
    image = {"type": "image", "source": source}
    content = body(path, "claude", messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}])
    resp = post(gateway, path, json.dumps(content).encode())
    check_400(resp, path, field="messages.0.content.1.source", contains=contains)


OPENAI_IMAGES = {
    "data URL not base64": ("data:image/png,abc", "must be base64"),
    "base64 that does not decode": ("data:image/png;base64,@@@", "does not decode"),
    "not http": ("ftp://example.com/cat.png", "must be http(s)"),
}


@pytest.mark.parametrize("case", OPENAI_IMAGES)
def test_a_broken_openai_image_url_is_a_400(gateway: str, case: str) -> None:
    url, contains = OPENAI_IMAGES[case]
    part = {"type": "image_url", "image_url": {"url": url}}
    resp = post(gateway, OA, json.dumps(body(OA, "claude", messages=[{"role": "user", "content": [part]}])).encode())
    check_400(resp, OA, field="messages.0.content.0.image_url.url", contains=contains)


def test_a_good_image_still_goes_through(gateway: str) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}
    resp = post(gateway, AN, json.dumps(body(AN, "claude", messages=[{"role": "user", "content": [image]}])).encode())
    assert resp.status_code == 200, resp.text


def test_a_union_error_names_the_deepest_field(gateway: str) -> None:
    """``content`` may be a string or a list of blocks: a bad block is named, not 'should be a valid string'."""
    blocks = [{"type": "text", "text": "a"}, {"type": "text"}]
    resp = post(gateway, AN, json.dumps(body(AN, messages=[{"role": "user", "content": blocks}])).encode())
    check_400(resp, AN, field="messages.0.content.1.text", contains="required field is missing")


def test_bad_requests_never_count_against_a_backend(gateway: str) -> None:
    """Many bad requests in a row, to each backend by name: circuits stay closed, the gateway stays ready, and
    good requests are served by the very backends the bad ones named."""
    bad: list[tuple[str, bytes]] = []
    for model in ("vllm", "claude"):
        for path in (OA, AN, COUNT):
            bad += [(path, raw(path, model, text)) for text, _, _ in TEXTS.values()]
            bad += [(path, json.dumps(body(path, model)).encode().replace(b'"hi"', b'"hi", "x": NaN'))]
    for _ in range(3):
        for path, content in bad:
            assert post(gateway, path, content).status_code == 400
    ready = httpx.get(gateway + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    circuits = {name: b["circuit"] for name, b in ready.json()["backends"].items()}
    assert circuits == {"vllm": "closed", "claude": "closed"}
    assert {b["last_error"] for b in ready.json()["backends"].values()} == {None}
    for model in ("vllm", "claude"):
        good = post(gateway, OA, json.dumps(body(OA, model)).encode())
        assert good.status_code == 200, good.text
        assert good.headers["x-tiergate-backend"] == model
    metrics = httpx.get(gateway + "/metrics", timeout=10).text
    assert 'tiergate_backend_circuit_state{backend="claude",state="open",tier="closed"} 0.0' in metrics


def test_a_lone_surrogate_escaped_inside_tool_call_arguments_is_a_400(gateway: str) -> None:
    """The arguments are JSON text the gateway decodes for Claude: the surrogate would surface only then."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"q": "\ud800"})}}
    messages = [
        {"role": "user", "content": "Use f."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    for _ in range(6):  # more than breaker_failures
        resp = post(gateway, OA, json.dumps(body(OA, "claude", messages=messages)).encode())
        check_400(resp, OA, field="messages.1.tool_calls.0.function.arguments", contains="lone surrogate")
    ready = httpx.get(gateway + "/readyz", timeout=10).json()
    assert ready["backends"]["claude"]["circuit"] == "closed"
