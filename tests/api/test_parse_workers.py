"""Bodies over ``limits.parse_worker_bytes`` are decoded and validated in a worker process (``limits.parse_workers``),
and give what the in-process path gives: the same request, the same 4xx in the caller's envelope."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.api.admin import count_request
from tiergate.api.intake import parse
from tiergate.config import LimitsConfig, parse_config
from tiergate.dialects import anthropic, openai
from tiergate.errors import InvalidRequest, PayloadTooLarge, RequestError, UpstreamError
from tiergate.offload import INLINE_LIMIT, Parsers

OA, AN, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
THRESHOLD = 100_000  # bodies over it go to the worker process in the "process" gateway
LIMITS: dict[str, Any] = {"parse_worker_bytes": THRESHOLD, "max_text_chars": 150_000}
LONG = "lorem ipsum " * 11_000  # 132,000 characters: over the threshold, under max_text_chars


def body(path: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "vllm", "messages": [{"role": "user", "content": "Summarise: " + LONG}]}
    if path == AN:
        out["max_tokens"] = 8
    return {**out, **fields}


def conversation(turns: int) -> dict[str, Any]:
    """An Anthropic body with tool calls and results: many small objects to parse and send back."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Read the files."}]
    for i in range(turns):
        call = {"type": "tool_use", "id": f"toolu_{i}", "name": "read", "input": {"path": f"src/f{i}.py"}}
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "Reading."}, call]})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "def f(x):\n    return x\n" * 20}
        messages.append({"role": "user", "content": [result]})
    tools = [{"name": "read", "description": "Read a file.", "input_schema": {"type": "object"}}]
    return {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": messages, "tools": tools, "system": "Be brief."}


@pytest.fixture(scope="module")
def gateways(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[dict[str, str]]:
    """The same gateway twice: large bodies parsed in a worker process, and with no workers (in a thread)."""
    backends = backend_configs(fake_claude[1], fake_openai[1])
    no_workers: dict[str, Any] = {**LIMITS, "parse_workers": 0}
    process = parse_config({"backends": backends, "router": {"kind": "rules"}, "limits": LIMITS})
    thread = parse_config({"backends": backends, "router": {"kind": "rules"}, "limits": no_workers})
    with serve_gateway(process) as p_url, serve_gateway(thread) as t_url:
        yield {"process": p_url, "thread": t_url}


def post(base: str, path: str, content: dict[str, Any] | bytes) -> httpx.Response:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    assert len(data) > THRESHOLD
    return httpx.post(base + path, content=data, headers=HEADERS, timeout=60)


def parsed(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", timeout=10).text
    return {w: float(n) for w, n in re.findall(r'^tiergate_bodies_parsed_total\{where="(\w+)"\} (\S+)$', text, re.M)}


def same_answers(gateways: dict[str, str], path: str, content: dict[str, Any] | bytes) -> httpx.Response:
    """``content`` sent to both gateways: the one with workers parsed it in its worker, and both answered alike."""
    before = parsed(gateways["process"]).get("process", 0.0)
    in_process, in_thread = post(gateways["process"], path, content), post(gateways["thread"], path, content)
    assert parsed(gateways["process"]).get("process", 0.0) == before + 1
    assert parsed(gateways["thread"]).get("process", 0.0) == 0.0
    assert (in_process.status_code, in_process.headers["content-type"]) == (
        in_thread.status_code,
        in_thread.headers["content-type"],
    )
    if in_process.status_code >= 400:
        assert in_process.json() == in_thread.json()
    return in_process


@pytest.mark.parametrize("path", [OA, AN])
def test_a_large_chat_is_answered_the_same_when_parsed_in_the_worker(gateways: dict[str, str], path: str) -> None:
    resp = same_answers(gateways, path, body(path))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tiergate-backend"] == "vllm"


def test_a_large_count_tokens_body_gives_the_same_count(gateways: dict[str, str]) -> None:
    before = parsed(gateways["process"]).get("process", 0.0)
    counts = [post(gateways[g], COUNT, conversation(150)) for g in ("process", "thread")]
    assert parsed(gateways["process"]).get("process", 0.0) == before + 1
    assert [r.status_code for r in counts] == [200, 200], counts[0].text
    assert counts[0].json() == counts[1].json()
    assert counts[0].json()["input_tokens"] > 10_000


def _bad_bodies(path: str) -> list[tuple[str, bytes, int, str]]:
    """(case, body, status, what the message names) of large bodies that are the caller's fault."""
    good = json.dumps(body(path)).encode()
    surrogate = good.replace(b"Summarise: ", b"Summarise: \\ud800", 1)
    return [
        ("lone surrogate", surrogate, 400, "messages.0.content: holds a lone surrogate"),
        ("NaN", good.replace(b'{"model"', b'{"temperature": NaN, "model"', 1), 400, "NaN is not a JSON number"),
        ("not JSON", good[:-2], 400, "request body is not valid JSON at line 1"),
        ("text too long", good.replace(LONG.encode(), (LONG * 2).encode()), 413, "limits.max_text_chars"),
        ("wrong type", json.dumps(body(path, messages=LONG)).encode(), 400, "messages"),
        ("bad role", json.dumps(body(path, messages=[{"role": "bot", "content": LONG}])).encode(), 400, "role"),
    ]


@pytest.mark.parametrize("path", [OA, AN, COUNT])
def test_large_bad_bodies_get_the_same_4xx_from_the_worker(gateways: dict[str, str], path: str) -> None:
    for case, content, status, names in _bad_bodies(AN if path == COUNT else path):
        resp = same_answers(gateways, path, content)
        assert resp.status_code == status, (case, resp.text)
        payload = resp.json()
        err = payload["error"]
        assert names in err["message"], (case, err)
        assert "Error" not in err["message"], case
        assert "Traceback" not in err["message"], case
        assert (payload.get("type") == "error") is (path != OA), case  # the Anthropic envelope


# ----------------------------------------------------------------------------------- Parsers, without a server


def pid() -> int:
    return os.getpid()


def die_in_a_worker(parent: int) -> str:
    """Kills the process it runs in unless that is ``parent`` (a worker lost to the OOM killer, say)."""
    if os.getpid() != parent:
        os._exit(1)
    return "parsed in the parent"


async def test_only_bodies_over_the_threshold_go_to_the_worker_process() -> None:
    seen: list[str] = []
    parsers = Parsers(workers=1, process_bytes=2 * INLINE_LIMIT, where=seen.append)
    try:
        assert await parsers.run(INLINE_LIMIT, pid) == os.getpid()
        assert await parsers.run(2 * INLINE_LIMIT, pid) == os.getpid()
        worker = await parsers.run(2 * INLINE_LIMIT + 1, pid)
        assert worker != os.getpid()
        assert await parsers.run(10**7, pid) == worker  # the same worker, kept
    finally:
        await parsers.close()
    assert seen == ["inline", "thread", "process", "process"]
    assert await parsers.run(10**7, pid) == os.getpid()  # closed: in a thread


async def test_with_no_workers_large_bodies_are_parsed_in_a_thread() -> None:
    seen: list[str] = []
    parsers = Parsers(workers=0, process_bytes=0, where=seen.append)
    assert await parsers.run(10**7, pid) == os.getpid()
    assert seen == ["thread"]


async def test_a_worker_that_dies_costs_no_request() -> None:
    seen: list[str] = []
    parsers = Parsers(workers=1, process_bytes=0, where=seen.append)
    try:
        assert await parsers.run(10**7, die_in_a_worker, os.getpid()) == "parsed in the parent"
        assert await parsers.run(10**7, pid) != os.getpid()  # a new worker
    finally:
        await parsers.close()
    assert seen == ["process", "thread", "process"]


async def test_the_worker_gives_the_same_request_and_the_same_errors_as_the_loop() -> None:
    limits = LimitsConfig(max_text_chars=150_000)
    headers = Headers(raw=[(b"anthropic-version", b"2023-06-01"), (b"anthropic-beta", b"a"), (b"anthropic-beta", b"b")])
    parsers = Parsers(workers=1, process_bytes=0)
    cases: list[tuple[Any, ...]] = [
        (parse, anthropic.parse_request, json.dumps(conversation(100)).encode(), headers, limits, 4096),
        (parse, openai.parse_request, json.dumps(body(OA, stream=True)).encode(), headers, limits, 4096),
        (count_request, json.dumps(conversation(100)).encode(), headers, limits),
    ]
    for path in (OA, AN):
        fn = openai.parse_request if path == OA else anthropic.parse_request
        cases += [(parse, fn, bad, headers, limits, 4096) for _, bad, _, _ in _bad_bodies(path)]
    try:
        for fn, *args in cases:
            here: Any
            try:
                here = fn(*args)
            except RequestError as exc:
                here = exc
            try:
                there = await parsers.run(10**7, fn, *args)
            except RequestError as exc:
                there = exc
            if isinstance(here, RequestError):
                assert type(there) is type(here)
                assert (there.status, there.kind, there.message, there.param) == (
                    here.status,
                    here.kind,
                    here.message,
                    here.param,
                )
            else:
                assert there == here
                assert there.native is None or there.native.body == here.native.body
    finally:
        await parsers.close()


def test_every_error_pickles_with_what_it_carries() -> None:
    import pickle

    errors: list[Exception] = [
        InvalidRequest("messages.0: bad", param="messages.0"),
        PayloadTooLarge("too big"),
        UpstreamError("refused", backend="claude", upstream_status=529, retry_after=2.0, code="overloaded_error"),
    ]
    for exc in errors:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc)
        assert str(back) == str(exc)
        assert back.__dict__ == exc.__dict__
