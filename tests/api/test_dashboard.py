"""``/dashboard`` in a real headless Chromium: after traffic, the page shows the ledger's figures and keeps
them live. Also the JSON endpoint on its own, and its key check."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.config import parse_config

CHROMIUM = os.environ.get("TIERGATE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def post(base: str, model: str, **kw: Any) -> httpx.Response:
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "Tell me a fact."}]}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=30, **kw)


@pytest.fixture(scope="module")
def gateway(
    fake_claude: tuple[FakeAnthropic, str],
    fake_openai: tuple[FakeOpenAI, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'ledger.db'}"
    backends = backend_configs(fake_claude[1], fake_openai[1])
    # A cheap GPU, so the open tier's amortised cost stays under Claude's however slow the test machine is.
    backends[0]["cost"] = {"gpu_hourly_usd": 0.036, "tokens_per_second": 1000}
    config = parse_config({"backends": backends, "router": {"kind": "rules"}, "ledger": {"url": url}})
    with serve_gateway(config) as base:
        for model in ("open", "open", "open", "closed", "closed"):
            assert post(base, model).status_code == 200
        assert post(base, "missing").status_code == 404
        yield base


def figures(base: str, **params: str) -> dict[str, Any]:
    resp = httpx.get(base + "/dashboard/data.json", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    data: dict[str, Any] = resp.json()
    return data


def test_data_json(gateway: str) -> None:
    data = figures(gateway)
    assert (data["requests"], data["served"]) == (6, 5)
    assert data["statuses"] == {"ok": 5, "error": 1, "refused": 0, "cancelled": 0}
    tiers = {t["tier"]: t for t in data["tiers"]}
    assert (tiers["open"]["requests"], tiers["closed"]["requests"]) == (3, 2)
    assert tiers["open"]["p50_ms"] > 0
    assert data["saving_usd"] == pytest.approx(data["all_closed_usd"] - data["cost_usd"])
    assert data["saving_pct"] > 0
    assert (data["sovereign"], data["guarded"], data["failovers"]) == (0, 0, 0)
    assert [r["label"] for r in data["reasons"]] == ["explicit:open", "explicit:closed"]
    backends = {b["backend"]: b for b in data["backends"]}
    assert 0 < backends["vllm"]["utilisation"] <= 1  # measured on the open backend's GPU
    assert backends["vllm"]["marginal_usd"] == 0.0  # idle capacity: serving cost nothing more
    assert backends["claude"]["utilisation"] is None
    assert backends["claude"]["marginal_usd"] == pytest.approx(backends["claude"]["cost_usd"])
    assert data["marginal_usd"] == pytest.approx(backends["claude"]["cost_usd"])


def test_data_json_window(gateway: str) -> None:
    assert figures(gateway, since="all")["requests"] >= 6
    bad = httpx.get(gateway + "/dashboard/data.json", params={"since": "soon"})
    assert bad.status_code == 400
    assert "use a duration such as 7d" in bad.json()["error"]


def test_the_page_and_its_script_are_served(gateway: str) -> None:
    page = httpx.get(gateway + "/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/dashboard/dashboard.js">' in page.text
    script = httpx.get(gateway + "/dashboard/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/dashboard/data.json" in script.text


def test_a_gateway_with_keys_wants_one_for_the_figures(
    fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    backends = backend_configs(fake_claude[1], fake_openai[1])
    keys = [{"name": "ops", "key": "sk-ops"}]
    config = parse_config({"backends": backends, "router": {"kind": "rules"}, "keys": keys})
    with serve_gateway(config) as base:
        assert httpx.get(base + "/dashboard").status_code == 200  # the page holds no data
        denied = httpx.get(base + "/dashboard/data.json")
        allowed = httpx.get(base + "/dashboard/data.json", headers={"authorization": "Bearer sk-ops"})
    assert denied.status_code == 401
    assert "missing API key" in denied.json()["error"]
    assert allowed.status_code == 200


def test_chromium_shows_the_figures_live(gateway: str) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}; apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    expected = figures(gateway)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(gateway + "/dashboard")
            expect(page.locator("#requests")).to_have_text(str(expected["requests"]))
            value = page.locator("#cost").get_attribute("data-value")
            assert value is not None
            assert float(value) == pytest.approx(expected["cost_usd"])
            saving = page.locator("#saving-pct").get_attribute("data-value")
            assert saving is not None
            assert float(saving) == pytest.approx(expected["saving_pct"])
            expect(page.locator("#saving-pct")).to_have_text(f"{expected['saving_pct']:.1f}%")
            expect(page.locator("#failovers")).to_have_text("0")
            expect(page.locator("#sovereign")).to_have_text("0")
            expect(page.locator("#guarded")).to_have_text("0")
            expect(page.locator("#errors")).to_have_text("1")
            expect(page.locator('#tiers tr[data-key="open"] td').nth(1)).to_have_text("3")
            expect(page.locator('#tiers tr[data-key="closed"] td').nth(1)).to_have_text("2")
            expect(page.locator('#tiers tr[data-key="open"] td').nth(2)).to_have_text("60.0%")
            expect(page.locator('#reasons tr[data-key="explicit:open"] td').nth(1)).to_have_text("3")
            expect(page.locator("#mix-chart rect")).to_have_count(2)
            marginal = page.locator("#marginal").get_attribute("data-value")
            assert marginal is not None
            assert float(marginal) == pytest.approx(expected["marginal_usd"])
            vllm = next(b for b in expected["backends"] if b["backend"] == "vllm")
            utilisation = f"{100 * vllm['utilisation']:.1f}%"
            expect(page.locator('#backends tr[data-key="vllm"] td').nth(6)).to_have_text(utilisation)
            expect(page.locator('#backends tr[data-key="claude"] td').nth(6)).to_have_text("-")
            # Live: one more request shows up on a later poll, without a reload.
            assert post(gateway, "closed").status_code == 200
            expect(page.locator("#requests")).to_have_text(str(expected["requests"] + 1), timeout=6000)
            expect(page.locator('#tiers tr[data-key="closed"] td').nth(1)).to_have_text("3")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
