"""``tiergate report`` over a seeded ledger: terminal tables, ``--json``, ``--html`` charts and one-line errors."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from tiergate.accounting.ledger import Ledger
from tiergate.accounting.schema import LedgerRow
from tiergate.cli.report import register

NOW = datetime.now(UTC)


def make_row(n: int, tier: str | None, age: timedelta, **kw: object) -> LedgerRow:
    backend = {"open": "vllm", "closed": "claude"}.get(tier or "")
    fields: dict[str, object] = {"status": "ok" if tier else "error", "ts": NOW - age}
    fields.update(kw)
    return LedgerRow(f"r{n}", "team", "openai", "auto", tier, backend, "router:0.5", **fields)  # type: ignore[arg-type]


ROWS = [
    make_row(1, "open", timedelta(hours=1), cost_usd=0.001, counterfactual_usd=0.009, latency_ms=100, utilisation=0.25),
    make_row(2, "open", timedelta(hours=2), cost_usd=0.001, counterfactual_usd=0.009, latency_ms=300, utilisation=0.75),
    make_row(
        3,
        "closed",
        timedelta(hours=3),
        cost_usd=0.008,
        counterfactual_usd=0.008,
        marginal_usd=0.008,
        latency_ms=900,
        failovers=1,
    ),
    make_row(4, None, timedelta(hours=4), http_status=400),
    make_row(5, "closed", timedelta(days=10), cost_usd=5.0, counterfactual_usd=5.0, latency_ms=50),  # outside 7d
]


async def _seed(url: str) -> None:
    ledger = Ledger(url)
    await ledger.start()
    for row in ROWS:
        ledger.record(row)
    await ledger.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'ledger.db'}"
    asyncio.run(_seed(url))
    return url


def invoke(*args: str) -> Result:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        """Keeps ``report`` a named sub-command, as in the real ``tiergate`` app."""

    return CliRunner().invoke(app, ["report", *args])


def test_terminal_tables(db: str) -> None:
    result = invoke("--db", db)
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"Requests\s+│\s+4", out)
    assert re.search(r"Cost\s+│\s+\$0\.010000", out)
    assert re.search(r"Marginal cost \(idle GPUs free\)\s+│\s+\$0\.008000", out)
    assert re.search(r"All-closed would have cost\s+│\s+\$0\.026000", out)
    assert re.search(r"Saving\s+│\s+\$0\.016000 \(61\.5%\)", out)
    assert re.search(r"Failovers \(attempts\)\s+│\s+1 \(1\)", out)
    assert re.search(r"Sovereign\s+│\s+0", out)
    assert re.search(r"Guarded\s+│\s+0", out)
    assert re.search(r"open\s+│\s+2\s+│\s+66\.7%.*│\s+200 ms\s+│\s+290 ms", out)
    assert re.search(r"closed\s+│\s+1\s+│\s+33\.3%", out)
    assert re.search(r"router\s+│\s+3\s+│\s+100\.0%", out)
    # By backend: requests, cost, marginal and the mean utilisation measured on the open GPUs.
    assert re.search(r"vllm\s+│\s+open\s+│\s+2\s+│\s+\$0\.002000\s+│\s+\$0\.00\s+│\s+50\.0%", out)
    assert re.search(r"claude\s+│\s+closed\s+│\s+1\s+│\s+\$0\.008000\s+│\s+\$0\.008000\s+│\s+-", out)


def test_json(db: str) -> None:
    result = invoke("--db", db, "--json", "--since", "30d")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["requests"] == 5
    assert data["cost_usd"] == pytest.approx(5.010)
    assert data["statuses"] == {"ok": 4, "error": 1, "refused": 0, "cancelled": 0}
    assert [t["tier"] for t in data["tiers"]] == ["closed", "open"]


def test_since_all_and_hours(db: str) -> None:
    assert json.loads(invoke("--db", db, "--json", "--since", "all").stdout)["requests"] == 5
    assert json.loads(invoke("--db", db, "--json", "--since", "90m").stdout)["requests"] == 1


def test_html_embeds_four_charts(db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = invoke("--db", db, "--html", str(out))
    assert result.exit_code == 0, result.output
    assert f"Report written to {out}" in result.output
    page = out.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    for text in ("traffic by tier", "traffic by route reason", "cost against all-closed", "latency by tier"):
        assert f'alt="{text}"' in page
    assert "$0.016000 (61.5%)" in page
    assert "<td>router</td>" in page
    assert "<td>vllm</td><td>open</td><td>2</td><td>0</td><td>$0.002000</td><td>$0.00</td><td>50.0%</td>" in page


def test_ledger_from_the_config_file(db: str, tmp_path: Path) -> None:
    config = tmp_path / "tiergate.yaml"
    config.write_text(f"ledger: {{url: '{db}'}}\n")
    result = invoke("--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requests"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "sqlite:///{tmp}/none.db"], "error: no ledger at {tmp}/none.db: run 'tiergate serve' first"),
        (["--db", "mysql://x/y"], "error: ledger.url: unsupported database 'mysql'"),
        (["--db", "sqlite:///x.db", "--config", "c.yaml"], "error: give --config or --db, not both"),
        (["--db", "sqlite:///x.db", "--since", "yesterday"], "error: --since 'yesterday': use a duration such as 7d"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert result.output.strip().startswith(message.format(tmp=tmp_path))
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists()
