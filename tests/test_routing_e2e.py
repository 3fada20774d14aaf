"""The learned router in the gateway: the shared encoder runs in the app, the reason is in the header."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.config import parse_config


@pytest.fixture(scope="module")
def learned_gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    backends = backend_configs(fake_claude[1], fake_openai[1])
    backends[0]["context_window"] = 2048
    config = parse_config({"backends": backends, "router": {"kind": "learned"}})
    with serve_gateway(config) as url:
        yield url


def ask(url: str, text: str, **headers: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_routine_tasks_go_open_by_rule(learned_gateway: str) -> None:
    resp = ask(learned_gateway, "Translate 'good morning' into French.")
    assert resp.headers["x-tiergate-route"] == "rule:routine:translation"
    assert resp.headers["x-tiergate-tier"] == "open"


def test_auto_is_routed_by_the_learned_score(learned_gateway: str) -> None:
    resp = ask(learned_gateway, "Why did the Roman Republic become an empire? Weigh three explanations.")
    assert resp.status_code == 200
    route = resp.headers["x-tiergate-route"]
    match = re.fullmatch(r"router:(\d\.\d\d)(<|>=)(\d\.\d\d)", route)
    assert match, route
    expected = "closed" if match.group(2) == ">=" else "open"
    assert resp.headers["x-tiergate-tier"] == expected


def test_a_prompt_far_from_the_training_data_gets_the_stated_fallback(learned_gateway: str) -> None:
    """Out of distribution: the rules router decides at the target strong share, and the route says why."""
    far = ask(learned_gateway, "In Rust, how do I share a HashMap between threads safely? Show Arc and Mutex.")
    assert far.status_code == 200
    match = re.fullmatch(
        r"ood:(\d\.\d\d)>(\d\.\d\d)->rules:(\d\.\d\d)(>|<=)(\d\.\d\d)", far.headers["x-tiergate-route"]
    )
    assert match, far.headers["x-tiergate-route"]
    assert float(match.group(1)) > float(match.group(2))
    assert far.headers["x-tiergate-tier"] == ("closed" if match.group(4) == ">" else "open")
    script = ask(learned_gateway, "日本の四季について短い文章を書いてください。")
    assert script.headers["x-tiergate-route"].startswith("ood:script->rules:")
    near = ask(learned_gateway, "Which of the following is a prime number?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:")
    assert near.headers["x-tiergate-route"].startswith("router:")


def test_prompt_longer_than_the_open_window_goes_closed(learned_gateway: str) -> None:
    resp = ask(learned_gateway, "word " * 3000)
    assert resp.headers["x-tiergate-route"] == "rule:context>2048"
    assert resp.headers["x-tiergate-tier"] == "closed"


def test_tier_header_overrides_the_router(learned_gateway: str) -> None:
    resp = ask(learned_gateway, "Prove that there are infinitely many primes.", **{"x-tiergate-tier": "open"})
    assert resp.headers["x-tiergate-route"] == "header:open"
    assert resp.headers["x-tiergate-tier"] == "open"


def test_serving_process_imports_no_torch_and_no_training_code(fake_openai: tuple[FakeOpenAI, str]) -> None:
    """Start-up as ``tiergate serve`` does (the CLI imported, the learned router and the guard loaded) and one
    routed request, then look for torch, the training code and its dependencies (the ``[train]`` extra) and
    matplotlib (reports only)."""
    code = (
        "import sys, httpx\n"
        "import tiergate.cli\n"
        "from tiergate.api import create_app\n"
        "from tiergate.config import parse_config\n"
        "from tests.support.servers import serve_app\n"
        "b = {'kind': 'openai', 'base_url': '%s/v1', 'model': 'fake-llama-8b'}\n"
        "cfg = parse_config({'backends': [{'name': 'o', 'tier': 'open', **b}, {'name': 'c', 'tier': 'closed', **b}],"
        " 'router': {'kind': 'learned'}, 'policy': {'guard': {'enabled': True}},"
        " 'ledger': {'url': 'sqlite:///:memory:'}})\n"
        "with serve_app(create_app(cfg)) as url:\n"
        "    r = httpx.post(url + '/v1/chat/completions', json={'model': 'auto', 'messages': [{'role': 'user',"
        " 'content': 'hi'}]})\n"
        "    assert r.status_code == 200, r.text\n"
        "    assert r.headers['x-tiergate-route'].startswith(('router:', 'ood:'))\n"
        "    assert 'tiergate.guard.model' in sys.modules\n"
        "heavy = ('torch', 'sklearn', 'matplotlib', 'tiergate.train')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('tiergate.train')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code % fake_openai[1]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
