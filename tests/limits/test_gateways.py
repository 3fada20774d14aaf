"""Two gateways sharing limits in Redis, through HTTP: one rate limit and one budget for both, 429s with
Retry-After in both dialects, and key revocations and limit changes (``tiergate keys``) on both within a second."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.redis import redis_base_url, unique_prefix
from tiergate.cli import build_app
from tiergate.config import parse_config

OPENAI = {"authorization": "Bearer sk-team"}
ANTHROPIC = {"x-api-key": "sk-team", "anthropic-version": "2023-06-01"}
KEYS = [
    {"name": "team", "key": "sk-team", "requests_per_minute": 4},
    {"name": "spender", "key": "sk-spender", "budget_usd_per_month": 0.001},
]


def body(model: str = "open", max_tokens: int = 16) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def setup(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str], tmp_path: Path
) -> dict[str, Any]:
    return {
        "backends": backend_configs(fake_claude[1], fake_openai[1]),
        "router": {"kind": "rules"},
        "keys": KEYS,
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "redis": {"url": redis_base_url(), "prefix": unique_prefix()},
    }


@contextlib.contextmanager
def two_gateways(setup: dict[str, Any]) -> Iterator[tuple[str, str]]:
    with serve_gateway(parse_config(setup)) as a, serve_gateway(parse_config(setup)) as b:
        yield a, b


def keys_command(setup: dict[str, Any], tmp_path: Path, *args: str) -> str:
    config = tmp_path / "tiergate.yaml"
    config.write_text(json.dumps(setup))  # JSON is YAML
    result = CliRunner().invoke(build_app(), ["keys", *args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def wait_for(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_one_rate_limit_for_both_gateways_in_both_dialects(setup: dict[str, Any]) -> None:
    with two_gateways(setup) as (a, b):
        served = [httpx.post(f"{url}/v1/chat/completions", json=body(), headers=OPENAI) for url in (a, b, a, b)]
        openai = httpx.post(f"{a}/v1/chat/completions", json=body(), headers=OPENAI)
        anthropic = httpx.post(f"{b}/v1/messages", json=body(), headers=ANTHROPIC)
        ready = httpx.get(f"{a}/readyz").json()
    assert [r.status_code for r in served] == [200] * 4
    assert openai.status_code == anthropic.status_code == 429
    assert openai.json()["error"]["type"] == "rate_limit_exceeded"
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    for resp in (openai, anthropic):
        assert "over its limit of 4 requests per minute" in resp.json()["error"]["message"]
        assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert ready["limits"]["store"] == "redis"
    assert ready["limits"]["state"] == "up"


def test_one_budget_for_both_gateways(setup: dict[str, Any]) -> None:
    auth = {"authorization": "Bearer sk-spender"}
    with two_gateways(setup) as (a, b):
        # Claude at $15/M output: 16 tokens reserve about $0.00025, so four fit in $0.001 and the fifth does not.
        replies = [httpx.post(f"{url}/v1/chat/completions", json=body("closed"), headers=auth) for url in (a, b) * 4]
    codes = [r.status_code for r in replies]
    assert 1 <= codes.count(200) < len(codes)
    assert codes == sorted(codes)  # once refused, refused on either gateway
    refused = replies[codes.index(429)]
    assert "monthly budget" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) > 60  # nothing held in flight: until the budget resets


def test_revocation_and_limit_changes_reach_both_gateways_within_a_second(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    with two_gateways(setup) as (a, b):

        def codes() -> list[int]:
            return [httpx.post(f"{u}/v1/chat/completions", json=body(), headers=OPENAI).status_code for u in (a, b)]

        def versions() -> list[int]:
            return [httpx.get(f"{u}/readyz").json()["limits"]["keys_version"] for u in (a, b)]

        assert codes() == [200, 200]
        assert "version 1" in keys_command(setup, tmp_path, "revoke", "team")
        # Each gateway reads the version every redis.refresh_s (0.25 s): it has moved on both well within a
        # second on a quiet machine; the wait allows for a loaded one, the applied version is what is checked.
        wait_for(lambda: versions() == [1, 1], "both gateways at version 1")
        revoked = [httpx.post(f"{u}/v1/messages", json=body(), headers=ANTHROPIC) for u in (a, b)]
        assert [r.status_code for r in revoked] == [401, 401]
        assert revoked[0].json()["error"] == {
            "type": "authentication_error",
            "message": "this API key has been revoked",
        }
        assert httpx.get(f"{a}/readyz").json()["limits"]["revoked"] == ["team"]

        keys_command(setup, tmp_path, "restore", "team")
        keys_command(setup, tmp_path, "set", "team", "--requests-per-minute", "none", "--budget-usd-per-month", "0")
        wait_for(lambda: versions() == [3, 3], "both gateways at version 3")
        closed = [httpx.post(f"{u}/v1/chat/completions", json=body("closed"), headers=OPENAI) for u in (a, b)]
        assert [r.status_code for r in closed] == [429, 429]
        assert "of its $0.00 monthly budget" in closed[0].json()["error"]["message"]
        shown = json.loads(keys_command(setup, tmp_path, "show", "--json"))
        assert shown[0]["override"] == {"requests_per_minute": None, "budget_usd_per_month": 0.0}
        assert shown[0]["limits"] == "$0/month (reject)"

        keys_command(setup, tmp_path, "clear", "team")
        wait_for(lambda: versions() == [4, 4], "both gateways at version 4")
        assert codes() == [200, 200]


def test_keys_commands_say_what_is_wrong(setup: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "tiergate.yaml"
    config.write_text(json.dumps(setup))
    app = build_app()
    unknown = CliRunner().invoke(app, ["keys", "revoke", "nobody", "--config", str(config)])
    assert unknown.exit_code == 2
    assert "no key named 'nobody' in the configuration (keys: team, spender)" in unknown.output
    bad = CliRunner().invoke(app, ["keys", "set", "team", "--requests-per-minute", "lots", "--config", str(config)])
    assert bad.exit_code == 2
    assert "--requests-per-minute: 'lots' is not a number" in bad.output
    config.write_text(json.dumps({k: v for k, v in setup.items() if k != "redis"}))
    without = CliRunner().invoke(app, ["keys", "show", "--config", str(config)])
    assert without.exit_code == 2
    assert "set redis.url in tiergate.yaml or TIERGATE_REDIS_URL" in without.output
