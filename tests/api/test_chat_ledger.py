"""Every request leaves one ledger row with what it asked, where it went, what it used and cost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault, StallStream, script_marker
from tests.fakes.fake_anthropic import prompt_text
from tests.fakes.script import estimate_tokens
from tests.support.databases import fresh_postgres_database, postgres_base_url
from tests.support.ledger import rows_of, wait_rows
from tests.support.servers import serve_app
from tiergate.accounting.schema import LedgerRow
from tiergate.config import parse_config

SONNET_IN, SONNET_OUT = 3.0 / 1e6, 15.0 / 1e6
AN_HEADERS = {"anthropic-version": "2023-06-01"}


async def _no_usage(request: Request) -> Response:
    """An OpenAI-compatible server that reports no usage (some llama.cpp builds, some proxies)."""
    if (await request.json()).get("stream"):
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "bare"}
        deltas = [{"content": "hi"}, {"content": " there"}]
        events = [{**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")
    return JSONResponse(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "bare",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        }
    )


@pytest.fixture(scope="module")
def gateway(
    fake_claude: tuple[FakeAnthropic, str],
    fake_openai: tuple[FakeOpenAI, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    bare = Starlette(routes=[Route("/v1/chat/completions", _no_usage, methods=["POST"])])
    url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    with serve_app(bare) as bare_url:
        backends = backend_configs(fake_claude[1], fake_openai[1])
        backends.append({"name": "bare", "tier": "open", "kind": "openai", "base_url": bare_url + "/v1", "model": "m"})
        config = parse_config({"backends": backends, "router": {"kind": "rules"}, "ledger": {"url": url}})
        with serve_gateway(config) as base:
            yield base, url


def one_row(url: str, resp: httpx.Response) -> LedgerRow:
    rid = resp.headers["x-request-id"]
    return wait_rows(url, {rid})[rid]


def chat(base: str, model: str, text: str = "Hello there", **body: Any) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": text}], **body}
    return httpx.post(base + "/v1/chat/completions", json=payload, timeout=30)


def test_a_completion_on_the_open_tier(gateway: tuple[str, str]) -> None:
    base, url = gateway
    resp = chat(base, "open", max_tokens=20)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    row = one_row(url, resp)
    assert (row.key_name, row.dialect, row.model) == ("anonymous", "openai", "open")
    assert (row.tier, row.backend) == ("open", "vllm")
    assert (row.route, row.status, row.http_status) == ("explicit:open", "ok", 200)
    assert (row.input_tokens, row.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert row.cost_usd == pytest.approx(float(resp.headers["x-tiergate-cost-usd"]), abs=1e-8)
    assert row.counterfactual_usd == pytest.approx(row.input_tokens * SONNET_IN + row.output_tokens * SONNET_OUT)
    assert row.latency_ms > 0
    assert row.ttft_ms is None
    assert (row.failovers, row.estimated) == (0, False)


def test_a_stream_on_the_closed_tier_has_its_time_to_first_token(gateway: tuple[str, str]) -> None:
    base, url = gateway
    body = {"model": "closed", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", base + "/v1/messages", json=body, headers=AN_HEADERS, timeout=30) as resp:
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    delta = next(e for e in events if e["type"] == "message_delta")
    row = one_row(url, resp)
    assert (row.dialect, row.tier, row.backend, row.status) == ("anthropic", "closed", "claude", "ok")
    assert row.output_tokens == delta["usage"]["output_tokens"]
    assert row.input_tokens > 0
    assert row.cost_usd == pytest.approx(row.counterfactual_usd)  # Claude is the reference model
    assert row.ttft_ms is not None
    assert 0 < row.ttft_ms <= row.latency_ms


def test_a_failover_is_counted(gateway: tuple[str, str], fake_claude: tuple[FakeAnthropic, str]) -> None:
    base, url = gateway
    fake_claude[0].script(Fault(529), Fault(529))  # the retry on the same backend fails too
    resp = chat(base, "closed", max_tokens=20)
    assert resp.status_code == 200, resp.text
    row = one_row(url, resp)
    assert (row.tier, row.failovers) == ("open", 1)
    assert row.route == "explicit:closed;failover:closed-down"


def test_a_backend_without_usage_marks_the_row_estimated(gateway: tuple[str, str]) -> None:
    base, url = gateway
    resp = chat(base, "bare")
    assert resp.status_code == 200, resp.text
    row = one_row(url, resp)
    assert (row.backend, row.estimated) == ("bare", True)


@pytest.mark.parametrize(
    ("body", "status", "model"),
    [
        (b"{not json", 400, ""),
        (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "nope"),
    ],
)
def test_errors_get_a_row_too(gateway: tuple[str, str], body: bytes, status: int, model: str) -> None:
    base, url = gateway
    resp = httpx.post(base + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status
    row = one_row(url, resp)
    assert (row.status, row.http_status, row.model, row.tier, row.backend) == ("error", status, model, None, None)
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (0, 0, 0.0)


def test_the_key_name_is_recorded(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    config = parse_config(
        {
            "backends": backend_configs(fake_claude[1], fake_openai[1]),
            "router": {"kind": "rules"},
            "keys": [{"name": "hr-app", "key": "sk-hr"}],
            "ledger": {"url": url},
        }
    )
    with serve_gateway(config) as base:
        ok = httpx.post(
            base + "/v1/chat/completions",
            json={"model": "open", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer sk-hr"},
        )
        denied = httpx.post(base + "/v1/chat/completions", json={"model": "open", "messages": []})
    assert (ok.status_code, denied.status_code) == (200, 401)
    rows = wait_rows(url, {ok.headers["x-request-id"], denied.headers["x-request-id"]})
    assert rows[ok.headers["x-request-id"]].key_name == "hr-app"
    assert rows[denied.headers["x-request-id"]].key_name == ""


def test_a_client_that_hangs_up_mid_stream_leaves_a_cancelled_row(gateway: tuple[str, str]) -> None:
    base, url = gateway
    stall = script_marker(StallStream(after_events=3, seconds=5))
    body = {"model": "open", "stream": True, "messages": [{"role": "user", "content": f"Hi {stall}"}]}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30) as resp:
        rid = resp.headers["x-request-id"]
        next(resp.iter_lines())
    row = wait_rows(url, {rid}, timeout=6)[rid]
    assert (row.status, row.tier) == ("cancelled", "open")
    assert row.ttft_ms is not None


def test_a_client_that_hangs_up_mid_claude_stream_keeps_claudes_input_count(
    gateway: tuple[str, str], fake_claude: tuple[FakeAnthropic, str]
) -> None:
    base, url = gateway
    fake = fake_claude[0]
    before = len(fake.received)
    stall = script_marker(StallStream(after_events=5, seconds=5))  # message_start, block start, ping, 2 deltas
    text = f"Tell me a long story about the sea, please. {stall}"
    if len(text) % 4 == 0:  # a length the gateway's own four-characters estimate gets wrong
        text += "!"
    body = {"model": "closed", "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": text}]}
    with httpx.stream("POST", base + "/v1/messages", json=body, headers=AN_HEADERS, timeout=30) as resp:
        rid = resp.headers["x-request-id"]
        assert any(line == "event: content_block_delta" for line in resp.iter_lines())  # text arrived: hang up
    row = wait_rows(url, {rid}, timeout=8)[rid]
    sent = next(r for r in fake.received[before:] if r.path == "/v1/messages")
    claude_input = estimate_tokens(prompt_text(sent.body))  # what the fake's message_start reported
    assert claude_input != len(text) // 4
    assert (row.status, row.tier, row.backend) == ("cancelled", "closed", "claude")
    assert row.input_tokens == claude_input
    assert row.output_tokens > 0  # the deltas Claude streamed before the client left
    assert row.estimated  # the output is counted by the gateway
    assert row.cost_usd == pytest.approx(row.input_tokens * SONNET_IN + row.output_tokens * SONNET_OUT)
    # The upstream request was cancelled and its slot freed.
    assert httpx.get(base + "/readyz").json()["backends"]["claude"]["in_flight"] == 0


async def test_rows_land_in_postgresql(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    async with fresh_postgres_database(postgres_base_url()) as url:
        backends = backend_configs(fake_claude[1], fake_openai[1])
        config = parse_config({"backends": backends, "router": {"kind": "rules"}, "ledger": {"url": url}})
        with serve_gateway(config) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                body = {"model": "closed", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
                ok = await client.post("/v1/messages", headers=AN_HEADERS, json=body)
        rows = await rows_of(url)
    assert ok.status_code == 200
    assert [(r.request_id, r.dialect, r.tier, r.status) for r in rows] == [
        (ok.headers["x-request-id"], "anthropic", "closed", "ok")
    ]
    assert rows[0].cost_usd > 0


def test_open_costs_at_measured_utilisation_and_prices_from_config(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    backends = backend_configs(fake_claude[1], fake_openai[1])
    backends[0]["cost"] = {"gpu_hourly_usd": 3.6, "gpus": 2, "tokens_per_second": 1000}
    prices = {"claude-sonnet-4-5": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    config = parse_config({"backends": backends, "router": {"kind": "rules"}, "ledger": {"url": url}, "prices": prices})
    with serve_gateway(config) as base:
        opened, closed = chat(base, "open", max_tokens=20), chat(base, "closed", max_tokens=20)
    assert (opened.status_code, closed.status_code) == (200, 200)
    rows = wait_rows(url, {opened.headers["x-request-id"], closed.headers["x-request-id"]})
    open_row, closed_row = rows[opened.headers["x-request-id"]], rows[closed.headers["x-request-id"]]
    # The open backend: amortised GPU time at the utilisation measured, nothing at the margin (it was idle).
    assert open_row.utilisation is not None
    assert 0 < open_row.utilisation <= 1
    full = 3.6 * 2 / (3600 * 1000)  # USD per token at full utilisation
    assert open_row.cost_usd == pytest.approx(full * open_row.output_tokens / open_row.utilisation)
    assert float(opened.headers["x-tiergate-cost-usd"]) == pytest.approx(open_row.cost_usd, abs=1e-8)
    assert open_row.marginal_usd == 0.0
    # Claude, priced by the configuration's override of the table: $1 / $2 per million tokens.
    expected = (closed_row.input_tokens * 1.0 + closed_row.output_tokens * 2.0) / 1e6
    assert closed_row.cost_usd == pytest.approx(expected)
    assert float(closed.headers["x-tiergate-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    assert closed_row.marginal_usd == pytest.approx(expected)
    assert closed_row.utilisation is None
    # All-closed is priced by the same overridden table.
    assert open_row.counterfactual_usd == pytest.approx((open_row.input_tokens + open_row.output_tokens * 2.0) / 1e6)


def test_a_backend_without_usage_gets_an_estimate(gateway: tuple[str, str]) -> None:
    base, url = gateway
    resp = chat(base, "bare", text="x" * 40)
    row = one_row(url, resp)
    # Asked as a stream and gathered (complete_by_stream), estimated as a whole answer: four characters a token,
    # 40 characters in, the eight characters of "hi there" out.
    assert resp.json()["choices"][0]["message"]["content"] == "hi there"
    assert (row.input_tokens, row.output_tokens, row.estimated) == (10, 2, True)
    assert row.counterfactual_usd == pytest.approx(10 * SONNET_IN + 2 * SONNET_OUT)


def test_a_stream_without_usage_is_estimated(gateway: tuple[str, str]) -> None:
    base, url = gateway
    payload = {"model": "bare", "stream": True, "messages": [{"role": "user", "content": "y" * 40}]}
    with httpx.stream("POST", base + "/v1/chat/completions", json=payload, timeout=30) as resp:
        assert resp.status_code == 200
        list(resp.iter_lines())
    row = one_row(url, resp)
    # Four characters a prompt token; one token a streamed delta.
    assert (row.input_tokens, row.output_tokens, row.estimated, row.status) == (10, 2, True, "ok")
