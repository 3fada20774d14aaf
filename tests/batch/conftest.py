"""Batch runs against real loopback fakes: an OpenAI-compatible open backend and Claude with Message Batches."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.conftest import CLAUDE_KEY_ENV, backend_configs
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.databases import fresh_postgres_database, postgres_base_url
from tests.support.servers import serve_app
from tiergate.cli import build_app


@dataclass
class Upstreams:
    claude: FakeAnthropic
    vllm: FakeOpenAI
    claude_url: str
    vllm_url: str

    def batch_bodies(self) -> list[dict[str, Any]]:
        """Every request of every Message Batch created, as the fake received it."""
        return [
            r
            for rec in self.claude.received
            if rec.method == "POST" and rec.path == "/v1/messages/batches"
            for r in rec.body["requests"]
        ]


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    os.environ[CLAUDE_KEY_ENV] = "sk-ant-test"
    claude, vllm = FakeAnthropic(api_key="sk-ant-test"), FakeOpenAI(models=["fake-llama-8b"])
    with serve_app(claude) as claude_url, serve_app(vllm) as vllm_url:
        yield Upstreams(claude, vllm, claude_url, vllm_url)


@pytest.fixture(params=["sqlite", "postgres"])
async def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The ledger of a run, on SQLite and on PostgreSQL (``$TIERGATE_TEST_POSTGRES_URL``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    async with fresh_postgres_database(postgres_base_url()) as url:
        yield url


def write_config(tmp_path: Path, up: Upstreams, **sections: Any) -> Path:
    config = {
        "backends": backend_configs(up.claude_url, up.vllm_url),
        "router": {"kind": "rules"},
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        **sections,
    }
    path = tmp_path / "tiergate.yaml"
    path.write_text(json.dumps(config))
    return path


def write_items(path: Path, items: list[Any]) -> Path:
    """One line per item (a string is written as it is: a line that is not JSON, or a blank one)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


def chat(text: str, model: str = "auto", **body: Any) -> dict[str, Any]:
    """An OpenAI Chat Completions body."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **body}


def params(text: str, model: str = "auto", **body: Any) -> dict[str, Any]:
    """An Anthropic Messages body."""
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **body}


def run_batch_cli(inp: Path, out: Path, config: Path, *args: str) -> Result:
    argv = ["batch", str(inp), "--out", str(out), "--config", str(config), "--poll-interval", "0", "--quiet", *args]
    return CliRunner().invoke(build_app(), argv)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
