"""``BatchRouter``: routing and accounting as plain calls, as a distributed engine's worker uses them; the
open half is served here by a real OpenAI-compatible loopback server (the fake), as vLLM would in the engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.batch.conftest import Upstreams, chat, params, write_config
from tiergate.accounting.ledger import Ledger
from tiergate.batch import BatchRouter
from tiergate.config import load_config


def test_route_serve_account_record(tmp_path: Path, upstreams: Upstreams) -> None:
    config = load_config(
        write_config(tmp_path, upstreams, policy={"sovereignty": {"pii": ["EMAIL_ADDRESS"], "action": "redact"}})
    )
    router = BatchRouter(config, run="tgb-engine-1")
    open_item = router.route(json.dumps({"custom_id": "o1", "body": chat("Say hello.", max_tokens=16)}))
    closed_item = router.route(
        {"custom_id": "c1", "params": params("Write to ann@example.com and prove it.", model="closed")}
    )
    flag = {"tiergate_sovereign": "true"}
    secret = router.route({"custom_id": "s1", "body": chat("Prove it.", model="closed", metadata=flag)})
    broken = router.route(b"{nope", index=3)
    assert (open_item["way"], open_item["tier"], open_item["backend"], open_item["dialect"]) == (
        "live",
        "open",
        "vllm",
        "openai",
    )
    assert open_item["request"] == {
        "model": "fake-llama-8b",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": False,
        "max_tokens": 16,
    }
    assert (closed_item["way"], closed_item["backend"]) == ("message-batch", "claude")
    assert closed_item["request"]["messages"][0]["content"][0]["text"] == "Write to <EMAIL_ADDRESS_1> and prove it."
    assert (secret["way"], secret["tier"], secret["sovereign"]) == ("live", "open", True)
    assert (broken["way"], broken["request"], broken["custom_id"]) == ("failed", None, "line-4")
    assert "not valid JSON" in broken["error"]["message"]

    # the engine serves the open item itself (here: the fake OpenAI-compatible server, as vLLM would)
    answer = httpx.post(f"{upstreams.vllm_url}/v1/chat/completions", json=open_item["request"]).json()
    usage = {"input_tokens": answer["usage"]["prompt_tokens"], "output_tokens": answer["usage"]["completion_tokens"]}
    rows = [
        router.account(open_item, usage, elapsed_s=0.2),
        router.account(closed_item, {"input_tokens": 1000, "output_tokens": 500}, message_batch=True),
        router.account(broken, None, status="error", http_status=400),
    ]
    assert [r["request_id"] for r in rows] == ["tgb-engine-1-o1", "tgb-engine-1-c1", "tgb-engine-1-line-4"]
    assert rows[1]["cost_usd"] == pytest.approx(0.0105 / 2)
    assert router.record(rows) == 3
    assert router.record(rows) == 0  # a task the engine ran twice is not counted twice
    router.close()

    async def read() -> list[tuple[str, str | None, str | None, int]]:
        ledger = Ledger(config.ledger.url)
        await ledger.start(writer=False)
        try:
            return [(r.request_id, r.tier, r.batch, r.output_tokens) for r in await ledger.rows()]
        finally:
            await ledger.close()

    assert asyncio.run(read()) == [
        ("tgb-engine-1-o1", "open", "tgb-engine-1", usage["output_tokens"]),
        ("tgb-engine-1-c1", "closed", "tgb-engine-1", 500),
        ("tgb-engine-1-line-4", None, "tgb-engine-1", 0),
    ]
