"""Even a bug inside the gateway answers in the caller's envelope, with a ledger row, never a traceback."""

from __future__ import annotations

import httpx

from tests.conftest import backend_configs
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.support.servers import serve_app
from tiergate.api import create_app
from tiergate.config import parse_config
from tiergate.pipeline.gateway import Caller
from tiergate.types import ChatRequest


def test_a_bug_is_a_clean_500_in_both_dialects(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    config = parse_config(
        {"backends": backend_configs(fake_claude[1], fake_openai[1]), "ledger": {"url": "sqlite:///:memory:"}}
    )
    app = create_app(config)

    async def broken(request: ChatRequest, caller: Caller, *args: object) -> None:
        raise KeyError("a bug")

    app.state.tiergate.gateway.plan = broken
    with serve_app(app) as url:
        oa = httpx.post(
            url + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}]}
        )
        an = httpx.post(
            url + "/v1/messages",
            json={"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={"anthropic-version": "2023-06-01"},
        )
        metrics = httpx.get(url + "/metrics").text
    assert oa.status_code == 500
    assert oa.json()["error"]["message"].startswith("internal error in the gateway (request id ")
    assert an.status_code == 500
    assert an.json()["type"] == "error"
    assert an.json()["error"]["type"] == "api_error"
    assert "Traceback" not in oa.text + an.text
    assert 'status="500"' in metrics


def test_a_bug_outside_the_chat_handlers_is_still_the_callers_envelope(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    """count_tokens has no net of its own: the app's last one answers in Anthropic's envelope, not plain text."""
    config = parse_config(
        {"backends": backend_configs(fake_claude[1], fake_openai[1]), "ledger": {"url": "sqlite:///:memory:"}}
    )
    app = create_app(config)

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    app.state.tiergate.gateway.policy.inspect = broken
    with serve_app(app) as url:
        resp = httpx.post(
            url + "/v1/messages/count_tokens",
            json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
            headers={"anthropic-version": "2023-06-01"},
        )
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "api_error"
    assert resp.json()["error"]["message"].startswith("internal error in the gateway (request id ")
    assert "KeyError" not in resp.text
