"""A gateway of the dialect tests' own, over the shared fake upstreams: fresh circuit breakers, whatever
failures other modules scripted on the session's gateways."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.config import parse_config


@pytest.fixture(scope="package")
def gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url
