"""Shared fixtures: real servers on loopback (fake upstreams, the embedded model, the gateway itself)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.servers import serve_app
from tiergate.api import create_app
from tiergate.config import Config, LedgerConfig, parse_config

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CLAUDE_KEY_ENV = "TIERGATE_TEST_CLAUDE_KEY"


@pytest.fixture(scope="session")
def fake_claude() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic(api_key="sk-ant-test")
    with serve_app(fake) as url:
        yield fake, url


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(models=["fake-llama-8b"])
    with serve_app(fake) as url:
        yield fake, url


def backend_configs(fake_claude_url: str, fake_openai_url: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "vllm",
            "tier": "open",
            "kind": "openai",
            "base_url": fake_openai_url + "/v1",
            "model": "fake-llama-8b",
        },
        {
            "name": "claude",
            "tier": "closed",
            "kind": "anthropic",
            "base_url": fake_claude_url,
            "model": "claude-sonnet-4-5",
            "api_key_env": CLAUDE_KEY_ENV,
        },
    ]


def serve_gateway(config: Config) -> Any:
    os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
    if "ledger" not in config.model_fields_set:  # never write ./tiergate.db from a test
        config = config.model_copy(update={"ledger": LedgerConfig(url="sqlite:///:memory:")})
    return serve_app(create_app(config))


@pytest.fixture(scope="session")
def fast_gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """A gateway over the two fake upstreams only (no model to load): for edge and error tests."""
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


@pytest.fixture(scope="session")
def full_gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    """The embedded SmolLM2 model, the fake OpenAI-compatible server and the fake Claude behind one gateway."""
    backends = [{"name": "local", "tier": "open", "kind": "embedded", "n_threads": 2}]
    backends += backend_configs(fake_claude[1], fake_openai[1])
    config = parse_config({"backends": backends, "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url
