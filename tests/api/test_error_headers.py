"""Error answers say where the request went and what it cost, like any other answer, and agree with the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault
from tests.support.ledger import wait_rows
from tiergate.accounting.schema import LedgerRow
from tiergate.config import parse_config

TEAM = {"authorization": "Bearer sk-team"}
BROKE = {"authorization": "Bearer sk-broke"}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


@pytest.fixture(scope="module")
def gateway(
    fake_claude: tuple[FakeAnthropic, str],
    fake_openai: tuple[FakeOpenAI, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    backends = backend_configs(fake_claude[1], fake_openai[1])
    for b in backends:  # one failure each, asserted on its own: no retry, no circuit opening
        b["breaker_failures"] = 1000
    config = parse_config(
        {
            "backends": backends,
            "router": {"kind": "rules"},
            "dispatch": {"attempts": 1},
            "keys": [
                {"name": "team", "key": "sk-team"},
                {"name": "broke", "key": "sk-broke", "budget_usd_per_month": 0},
            ],
            "ledger": {"url": url},
        }
    )
    with serve_gateway(config) as base:
        yield base, url


def post(base: str, dialect: str, model: str, headers: dict[str, str]) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    extra = {}
    if dialect == "anthropic":
        body["max_tokens"] = 16
        extra = {"anthropic-version": "2023-06-01"}
    return httpx.post(base + PATHS[dialect], json=body, headers={**headers, **extra}, timeout=30)


def row_of(url: str, resp: httpx.Response) -> LedgerRow:
    rid = resp.headers["x-request-id"]
    return wait_rows(url, {rid})[rid]


def where(resp: httpx.Response) -> tuple[str | None, str | None, str | None, str | None]:
    h = resp.headers
    return (
        h.get("x-tiergate-tier"),
        h.get("x-tiergate-backend"),
        h.get("x-tiergate-route"),
        h.get("x-tiergate-cost-usd"),
    )


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_an_upstream_failure_names_its_tier_backend_and_route(
    gateway: tuple[str, str], fake_claude: tuple[FakeAnthropic, str], dialect: str
) -> None:
    base, url = gateway
    fake_claude[0].script(Fault(529))
    resp = post(base, dialect, "claude", TEAM)
    assert resp.status_code == 503, resp.text
    assert where(resp) == ("closed", "claude", "explicit:claude", "0.00000000")
    row = row_of(url, resp)
    assert (row.tier, row.backend, row.route) == ("closed", "claude", "explicit:claude")
    assert (row.status, row.http_status, row.cost_usd) == ("error", 503, 0.0)


def test_a_failover_that_fails_too_names_the_last_backend_tried(
    gateway: tuple[str, str], fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    base, url = gateway
    fake_claude[0].script(Fault(529))
    fake_openai[0].script(Fault(503))
    resp = post(base, "openai", "closed", TEAM)
    assert resp.status_code == 503, resp.text
    assert "backend 'vllm'" in resp.json()["error"]["message"]
    assert where(resp) == ("open", "vllm", "explicit:closed", "0.00000000")
    row = row_of(url, resp)
    assert (row.tier, row.backend, row.route, row.cost_usd) == ("open", "vllm", "explicit:closed", 0.0)
    assert (fake_claude[0].pending_steps, fake_openai[0].pending_steps) == (0, 0)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_refusal_over_budget_names_the_planned_tier_and_route(gateway: tuple[str, str], dialect: str) -> None:
    base, url = gateway
    resp = post(base, dialect, "closed", BROKE)
    assert resp.status_code == 429, resp.text
    assert where(resp) == ("closed", None, "explicit:closed", "0.00000000")  # no backend was tried
    row = row_of(url, resp)
    assert (row.tier, row.backend, row.route, row.status, row.cost_usd) == (
        "closed",
        None,
        "explicit:closed",
        "refused",
        0.0,
    )


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_bad_input_costs_nothing_and_went_nowhere(gateway: tuple[str, str], dialect: str) -> None:
    base, url = gateway
    resp = post(base, dialect, "no-such-model", TEAM)
    assert resp.status_code == 404, resp.text
    assert where(resp) == (None, None, None, "0.00000000")
    row = row_of(url, resp)
    assert (row.tier, row.backend, row.route, row.cost_usd) == (None, None, "", 0.0)


def test_a_path_that_does_not_exist_costs_nothing(gateway: tuple[str, str]) -> None:
    resp = httpx.post(gateway[0] + "/v1/completions", json={})
    assert resp.status_code == 404
    assert where(resp) == (None, None, None, "0.00000000")
