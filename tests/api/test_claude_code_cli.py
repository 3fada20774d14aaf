"""The real Claude Code CLI pointed at the gateway (``ANTHROPIC_BASE_URL``), Claude being the recording fake.

Runs where the CLI is installed: ``TIERGATE_TEST_CLAUDE_CODE`` names its binary, else ``claude`` on ``PATH``
(``npm install --prefix /tmp/cc @anthropic-ai/claude-code`` puts it at ``/tmp/cc/node_modules/.bin/claude``;
checked with 2.1.328). The CLI talks to nothing but the gateway (``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tests.support.servers import serve_app
from tiergate.config import parse_config

CLI = os.environ.get("TIERGATE_TEST_CLAUDE_CODE") or shutil.which("claude")
pytestmark = pytest.mark.skipif(
    CLI is None,
    reason="no Claude Code CLI (npm install @anthropic-ai/claude-code, or TIERGATE_TEST_CLAUDE_CODE=BINARY)",
)


def run(gateway: str, prompt: str, cwd: Path, *args: str) -> dict[str, Any]:
    assert CLI is not None
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd / "home"),
        "ANTHROPIC_BASE_URL": gateway,
        "ANTHROPIC_API_KEY": "sk-ant-the-users-own-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "TERM": "dumb",
    }
    (cwd / "home").mkdir(exist_ok=True)
    done = subprocess.run(
        [CLI, "-p", prompt, "--output-format", "json", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[str, FakeAnthropic]]:
    claude, vllm = FakeAnthropic(api_key="sk-ant-test"), FakeOpenAI(models=["fake-llama-8b"])
    with serve_app(claude) as c_url, serve_app(vllm) as v_url:
        config = parse_config({"backends": backend_configs(c_url, v_url), "router": {"kind": "rules"}})
        with serve_gateway(config) as url:
            yield url, claude


def test_claude_code_answers_through_the_gateway(world: tuple[str, FakeAnthropic], tmp_path: Path) -> None:
    url, claude = world
    before = len(claude.received)
    out = run(url, "Say hello", tmp_path)
    assert out["is_error"] is False
    assert out["result"].startswith("Hello from fake Claude.")
    sent = [r for r in claude.received[before:] if r.path == "/v1/messages"]
    assert sent
    body = sent[-1].body
    assert body["model"].startswith("claude-")  # the CLI's own model, served as named
    assert body["stream"] is True
    assert any("cache_control" in block for block in body["system"])  # what the CLI pays less for arrived
    assert "claude-code-20250219" in sent[-1].headers["anthropic-beta"]
    assert "sk-ant-the-users-own-key" not in json.dumps(sent[-1].headers)


def test_a_tool_round_trip(world: tuple[str, FakeAnthropic], tmp_path: Path) -> None:
    url, claude = world
    (tmp_path / "hello.txt").write_text("The secret word is pineapple.\n")
    claude.script(
        Reply(tool_use=[{"name": "Read", "input": {"file_path": str(tmp_path / "hello.txt")}}]),
        Reply(text="The word is pineapple."),
    )
    before = len(claude.received)
    out = run(url, "What is the secret word in hello.txt?", tmp_path, "--allowedTools", "Read")
    assert (out["result"], out["num_turns"]) == ("The word is pineapple.", 2)
    second = [r for r in claude.received[before:] if r.path == "/v1/messages"][-1].body
    assert [m["role"] for m in second["messages"]][-2:] == ["assistant", "user"]
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result"
    assert "pineapple" in json.dumps(result["content"])


def test_without_claude_the_open_tier_serves_claude_code(tmp_path: Path) -> None:
    vllm = FakeOpenAI(models=["fake-llama-8b"], reply_text="An open-weight hello.")
    with serve_app(vllm) as v_url:
        open_only = [b for b in backend_configs("http://unused", v_url) if b["tier"] == "open"]
        with serve_gateway(parse_config({"backends": open_only, "router": {"kind": "rules"}})) as url:
            out = run(url, "Say hello", tmp_path)
    assert out["result"] == "An open-weight hello."
    assert [r.path for r in vllm.received].count("/v1/chat/completions") >= 1
