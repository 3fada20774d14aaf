"""The router's learning loop end to end, over HTTP: a gateway on simulated tiers (fake OpenAI-compatible server
and fake Claude) whose weak tier fails prompts with code, the fake Claude also judging; shadow pairs recorded and
judged in both orders, trained on with ``tiergate router train --from-ledger``, reloaded without a restart and
rolled back; sovereign prompts never shadowed out of the perimeter; a shadow that hangs or fails never touches
the caller's answer; budgets and feedback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from tests.conftest import CLAUDE_KEY_ENV, backend_configs
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault, Hang
from tests.fakes.judge import SimulatedTiers
from tests.support.servers import serve_app
from tiergate.accounting.database import connect
from tiergate.api import create_app
from tiergate.cli.router import router_app
from tiergate.config import Config, parse_config
from tiergate.learning.store import Outcome, Sample, Store
from tiergate.routing.learned import LearnedModel

CODE = [f"Why does this fail?\n```python\nitems = {{}}\nfor w in words_{i}:\n    items[w] += 1\n```" for i in range(12)]
PLAIN = [f"Name {i + 2} rivers of Europe and the seas they flow into." for i in range(12)]

runner = CliRunner(env={"COLUMNS": "200"})


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def _read(url: str) -> tuple[list[Sample], list[Outcome]]:
    engine = connect(url)
    try:
        store = Store(engine)
        return await store.samples(), await store.outcomes()
    finally:
        await engine.dispose()


def read_store(url: str) -> tuple[list[Sample], list[Outcome]]:
    return asyncio.run(_read(url))


class Fakes:
    def __init__(self, tiers: SimulatedTiers) -> None:
        self.tiers = tiers
        self.open = FakeOpenAI(models=["fake-llama-8b"])
        self.claude = FakeAnthropic(api_key="sk-ant-test")
        self.open.responder = tiers.responder("open")
        self.claude.responder = tiers.responder("closed")


@pytest.fixture
def fakes() -> Iterator[tuple[Fakes, str, str]]:
    f = Fakes(SimulatedTiers())
    with serve_app(f.open) as open_url, serve_app(f.claude) as claude_url:
        yield f, open_url, claude_url


def gateway_config(open_url: str, claude_url: str, tmp: Path, **router: Any) -> Config:
    os.environ.setdefault(CLAUDE_KEY_ENV, "sk-ant-test")
    folder = tmp / "router"
    if not folder.exists():
        LearnedModel.default().save(folder)
    settings: dict[str, Any] = {
        "kind": "learned",
        "artifact": str(folder),
        "reload_interval_s": 0.1,
        "shadow": {"share": 1.0, "max_in_flight": 64},
        **router,
    }
    data: dict[str, Any] = {
        "backends": backend_configs(claude_url, open_url),
        "router": settings,
        "ledger": {"url": f"sqlite:///{tmp / 'ledger.db'}"},
    }
    return parse_config(data)


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def ask(api: openai.OpenAI, text: str, **headers: str) -> tuple[str, dict[str, str]]:
    raw = api.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=16, extra_headers=headers or None
    )
    answer = raw.parse().choices[0].message.content or ""
    return answer, dict(raw.headers)


def judged(db: str, count: int) -> list[Sample]:
    def enough() -> list[Sample]:
        samples = read_store(db)[0]
        return samples if len(samples) >= count else []

    got: list[Sample] = wait_until(enough, what=f"{count} recorded shadow pairs")
    return got


def test_pairs_are_recorded_judged_trained_and_reloaded(fakes: tuple[Fakes, str, str], tmp_path: Path) -> None:
    f, open_url, claude_url = fakes
    config = gateway_config(open_url, claude_url, tmp_path)
    db = config.ledger.url
    with serve_app(create_app(config)) as url:
        api = client(url)
        served: dict[str, tuple[str, str, str]] = {}
        for text in [t for pair in zip(CODE, PLAIN, strict=True) for t in pair]:
            answer, headers = ask(api, text)
            assert answer.startswith(f"[quality:{'good' if f.tiers.good(headers['x-tiergate-tier'], text) else 'bad'}]")
            served[headers["x-request-id"]] = (text, headers["x-tiergate-tier"], headers["x-tiergate-route"])
        samples = judged(db, len(served))
        samples, outcomes = read_store(db)
        assert {s.request_id for s in samples} == set(served)
        by_request: dict[str, dict[str, Outcome]] = {}
        for o in outcomes:
            by_request.setdefault(o.request_id, {})[o.tier] = o
        for s in samples:
            text, tier, route = served[s.request_id]
            assert s.status == "judged"
            assert (s.served_tier, s.route) == (tier, route)
            assert s.shadow_tier == ("closed" if tier == "open" else "open")
            assert s.vector.shape == (384,)
            assert s.sample_prob == 1.0
            assert s.shadow_cost_usd > 0 or s.shadow_tier == "open"
            assert s.judge_cost_usd > 0  # the closed tier judged, twice
            pair = by_request[s.request_id]
            gain = pair["closed"].score - pair["open"].score
            assert gain == f.tiers.gain(text), (text, pair)
            assert pair["open"].source == pair["closed"].source == "judge"
            assert pair["open"].judge == "claude@rubric-v1"
            # Both orders: the better answer won as A and as B.
            expected = {1.0: "ab=B;ba=A", -1.0: "ab=A;ba=B", 0.0: "ab=C;ba=C"}[gain]
            assert pair["open"].detail == expected
        assert f.tiers.judged == 2 * len(served)

        shipped = LearnedModel.default().meta["weights_sha256"]
        status = httpx.get(url + "/admin/router").json()
        assert (status["current"]["weights_sha256"], status["reloads"]) == (shipped, 0)
        result = runner.invoke(
            router_app, ["train", "--from-ledger", "--db", db, "--out", config.router.artifact or ""]
        )
        assert result.exit_code == 0, result.output
        trained = LearnedModel.load(config.router.artifact or "")
        assert trained.meta["data"]["source"] == "ledger"
        assert trained.meta["data"]["ledger"]["rows"] == len(served)
        assert trained.meta["prior"]["weights_sha256"] == shipped
        # The gateway notices the new files and swaps the router in, no restart.
        status = wait_until(
            lambda: (s := httpx.get(url + "/admin/router").json())["reloads"] == 1 and s, what="the reload"
        )
        assert status["current"]["weights_sha256"] == trained.meta["weights_sha256"]
        assert status["previous"]["weights_sha256"] == shipped
        assert ask(api, PLAIN[0])[1]["x-tiergate-route"]  # it serves
        back = httpx.post(url + "/admin/router/rollback").json()
        assert back["current"]["weights_sha256"] == shipped
        assert back["previous"]["weights_sha256"] == trained.meta["weights_sha256"]
        again = httpx.post(url + "/admin/router/reload").json()
        assert again["current"]["weights_sha256"] == trained.meta["weights_sha256"]

    plot = tmp_path / "cost-quality.png"
    result = runner.invoke(
        router_app,
        ["eval", "--from-ledger", "--db", db, "--artifact", config.router.artifact or "", "--plot", str(plot)],
    )
    assert result.exit_code == 0, result.output
    for text in ("this router", "shipped router", "rules router", "prompt length", "APGR", "s@95%"):
        assert text in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "calibrated"
    result = runner.invoke(
        router_app, ["calibrate", "--from-ledger", "--db", db, "--strong-share", "0.5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    calibrated = LearnedModel.load(out)
    assert calibrated.meta["calibration"]["set"] == "ledger"
    assert calibrated.meta["calibration"]["strong_share"] == pytest.approx(0.5, abs=0.1)


def test_a_broken_artifact_leaves_the_router_in_service(fakes: tuple[Fakes, str, str], tmp_path: Path) -> None:
    _f, open_url, claude_url = fakes
    config = gateway_config(open_url, claude_url, tmp_path, shadow={"share": 0.0})
    with serve_app(create_app(config)) as url:
        folder = Path(config.router.artifact or "")
        (folder / "learned.json").write_text("{not json")
        status = wait_until(lambda: (s := httpx.get(url + "/admin/router").json())["last_error"] and s, what="error")
        assert "not a readable artifact" in status["last_error"]
        assert status["reloads"] == 0
        assert ask(client(url), PLAIN[1])[1]["x-tiergate-route"]
        refused = httpx.post(url + "/admin/router/rollback")
        assert refused.status_code == 409
        assert "no previous router" in refused.json()["error"]["message"]


def test_sovereign_prompts_are_never_shadowed_out_of_the_perimeter(tmp_path: Path) -> None:
    """Two closed backends, one inside the perimeter: a sovereign prompt's shadow and judge stay on that one."""
    tiers = SimulatedTiers()
    f = Fakes(tiers)
    inside = FakeAnthropic(api_key="sk-ant-test")
    inside.responder = tiers.responder("closed")
    with serve_app(f.open) as open_url, serve_app(f.claude) as claude_url, serve_app(inside) as inside_url:
        # Every decision keeps the answer on the open tier, so every shadow goes to the closed tier.
        config = gateway_config(open_url, claude_url, tmp_path, threshold=0.99, ood={"fallback": "open"})
        extra = {**backend_configs(inside_url, open_url)[1], "name": "claude-dc", "perimeter": "internal"}
        config = parse_config(
            {**config.model_dump(mode="json"), "backends": [*config.model_dump(mode="json")["backends"], extra]}
        )
        with serve_app(create_app(config)) as url:
            api = client(url)
            secret = "Zanzibar-7731"
            _answer, headers = ask(api, f"Summarise the file for case {secret}.", **{"x-tiergate-sovereign": "true"})
            assert headers["x-tiergate-tier"] == "open"
            assert headers["x-tiergate-route"].startswith("policy:sovereign")
            _plain_answer, plain_headers = ask(api, "Name three rivers of Europe.")
            samples = judged(config.ledger.url, 2)
        by_id = {s.request_id: s for s in samples}
        assert by_id[headers["x-request-id"]].shadow_backend == "claude-dc"
        assert by_id[headers["x-request-id"]].status == "judged"
        outside = [r for r in f.claude.received if secret in r.raw.decode()]
        assert outside == [], "a sovereign prompt reached a backend outside the perimeter"
        assert sum(secret in r.raw.decode() for r in inside.received) == 3  # the shadow and the judge, twice
        assert by_id[plain_headers["x-request-id"]].status == "judged"


def test_a_shadow_that_hangs_or_fails_never_touches_the_callers_answer(
    fakes: tuple[Fakes, str, str], tmp_path: Path
) -> None:
    f, open_url, claude_url = fakes
    config = gateway_config(open_url, claude_url, tmp_path, threshold=0.99, ood={"fallback": "open"})
    with serve_app(create_app(config)) as url:
        api = client(url)
        f.claude.script(Hang())
        answer, headers = ask(api, PLAIN[2])
        # The caller has its whole answer while the shadow is still held by the closed tier.
        assert answer == "[quality:good] the open tier's answer"
        wait_until(lambda: f.claude.received, what="the shadow request")
        assert read_store(config.ledger.url)[0] == []
        f.claude.release()
        judged(config.ledger.url, 1)

        f.claude.reset()
        f.claude.script(*[Fault(500)] * 4)
        answer, headers = ask(api, PLAIN[3])
        assert answer == "[quality:good] the open tier's answer"
        assert headers["x-tiergate-tier"] == "open"
        samples = wait_until(
            lambda: [s for s in read_store(config.ledger.url)[0] if s.request_id == headers["x-request-id"]],
            what="the failed pair",
        )
        assert samples[0].status == "shadow-failed"
        f.claude.reset()
        # A judge that always prefers the first answer: the two orders cancel it.
        f.tiers.position_bias = True
        _, headers = ask(api, CODE[0])
        pair = wait_until(
            lambda: [o for o in read_store(config.ledger.url)[1] if o.request_id == headers["x-request-id"]],
            what="the biased judge's outcomes",
        )
        assert {(o.tier, o.score, o.detail) for o in pair} == {("open", 0.5, "ab=A;ba=A"), ("closed", 0.5, "ab=A;ba=A")}
        # Streams are shadowed too, once the caller has every byte.
        f.tiers.position_bias = False
        stream = api.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": CODE[1]}], max_tokens=16, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "[quality:bad] the open tier's answer"
        wait_until(
            lambda: any(
                o.detail == "ab=B;ba=A" and o.tier == "closed" and o.score == 1.0
                for o in read_store(config.ledger.url)[1]
            ),
            what="the streamed request's pair",
        )


def test_budgets_apply_and_applications_add_their_own_outcomes(fakes: tuple[Fakes, str, str], tmp_path: Path) -> None:
    _f, open_url, claude_url = fakes
    config = gateway_config(open_url, claude_url, tmp_path, threshold=0.99, ood={"fallback": "open"})
    keys = [
        {"name": "rich", "key": "k-rich", "budget_usd_per_month": 100.0, "admin": True},
        {"name": "poor", "key": "k-poor", "budget_usd_per_month": 0.001},
    ]
    config = parse_config({**config.model_dump(mode="json"), "keys": keys})
    app = create_app(config)
    with serve_app(app) as url:
        state = app.state.tiergate
        _, rich = ask(client(url, "k-rich"), PLAIN[4])
        _, poor = ask(client(url, "k-poor"), PLAIN[5])
        samples = judged(config.ledger.url, 1)
        assert [s.request_id for s in samples] == [rich["x-request-id"]]
        spent = samples[0].shadow_cost_usd + samples[0].judge_cost_usd
        assert spent > 0
        assert state.budgets.book.spent("rich") == pytest.approx(float(rich["x-tiergate-cost-usd"]) + spent, rel=1e-6)
        status = httpx.get(url + "/admin/router", headers={"authorization": "Bearer k-rich"}).json()
        assert status["shadow"]["counts"]["skipped:budget"] == 1
        assert httpx.get(url + "/admin/router", headers={"authorization": "Bearer k-poor"}).status_code == 403

        def feedback(key: str, body: dict[str, Any]) -> httpx.Response:
            return httpx.post(url + "/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"})

        ok = feedback("k-poor", {"request_id": poor["x-request-id"], "score": 0.25})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"request_id": poor["x-request-id"], "tier": "open", "score": 0.25, "recorded": True}
        other = feedback("k-rich", {"request_id": poor["x-request-id"], "score": 1})
        assert other.status_code == 404
        assert "no request" in other.json()["error"]["message"]  # another key's request is not found
        assert feedback("k-poor", {"request_id": "nope", "score": 1}).status_code == 404
        bad = feedback("k-poor", {"request_id": poor["x-request-id"], "score": 7})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "score"
        assert feedback("k-poor", {"request_id": poor["x-request-id"], "score": 1, "tier": "gpu"}).status_code == 400
        assert (
            httpx.post(url + "/v1/feedback", content=b"{", headers={"authorization": "Bearer k-poor"}).status_code
            == 400
        )
        assert httpx.post(url + "/v1/feedback", json={}).status_code == 401
    outcomes = read_store(config.ledger.url)[1]
    mine = [o for o in outcomes if o.source == "feedback"]
    assert [(o.request_id, o.tier, o.score, o.key_name, o.judge) for o in mine] == [
        (poor["x-request-id"], "open", 0.25, "poor", "poor")
    ]


def test_the_threshold_moves_with_idle_capacity_and_back(fakes: tuple[Fakes, str, str], tmp_path: Path) -> None:
    f, open_url, claude_url = fakes
    config = gateway_config(
        open_url, claude_url, tmp_path, shadow={"share": 0.0}, capacity={"enabled": True, "quality_floor": 0.9}
    )
    backends = config.model_dump(mode="json")["backends"]
    backends[0]["max_concurrency"] = 2
    config = parse_config({**config.model_dump(mode="json"), "backends": backends})
    near = "Which of the following is a prime number?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
    strong = "Why does this Python raise KeyError?\n\nd = {}\nfor w in words:\n    d[w] += 1"
    base = LearnedModel.default().threshold
    with serve_app(create_app(config)) as url:
        api = client(url)
        route = ask(api, near)[1]["x-tiergate-route"]
        assert f";capacity:{base:.2f}->" in route, route
        assert route.endswith("@open=0.00"), route
        view = httpx.get(url + "/dashboard/data.json").json()["router"]["capacity"]
        assert view["enabled"]
        assert view["threshold"] > view["base_threshold"] == pytest.approx(base)
        assert "capacity" in ask(api, strong)[1]["x-tiergate-route"]
        # Fill the open tier's two slots with requests the fake holds: the threshold is back at the base.
        f.open.script(Hang(), Hang())

        def hold() -> None:
            body = {"model": "open", "messages": [{"role": "user", "content": "wait"}], "max_tokens": 4}
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url + "/v1/chat/completions", json=body, timeout=30)

        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: f.open.stats.get("hang", 0) >= 2, what="the open tier to fill up")
            view = httpx.get(url + "/dashboard/data.json").json()["router"]["capacity"]
            assert view["open_occupancy"] == 1.0
            assert view["threshold"] == pytest.approx(base)
            _, busy = ask(api, strong)  # decided at the base threshold: closed, and no capacity move
            assert busy["x-tiergate-tier"] == "closed"
            assert busy["x-tiergate-route"].startswith("router:")
            assert "capacity" not in busy["x-tiergate-route"]
        finally:
            f.open.release()
            for t in threads:
                t.join(timeout=30)
