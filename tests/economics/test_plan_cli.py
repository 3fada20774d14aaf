"""``tiergate plan``: human output, ``--json`` shape, ``--html`` report and one-line errors."""

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
from tiergate.cli.plan import register

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workload.yaml"


def invoke(*args: str) -> Result:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        """Keeps ``plan`` a named sub-command, as in the real ``tiergate`` app."""

    return CliRunner().invoke(app, ["plan", *args])


def test_human_output_shows_costs_burden_and_recommendation() -> None:
    result = invoke(str(EXAMPLE))
    assert result.exit_code == 0, result.output
    for text in ("Monthly cost", "$41,952", "$12,261", "$29,042", "58,451", "Operational burden", "On-call"):
        assert text in result.output
    assert "Recommendation: hybrid" in result.output
    assert "730 hours" in result.output
    assert "30.4 days" in result.output


def test_json_shape() -> None:
    result = invoke(str(EXAMPLE), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # Hand-computed in tests/economics/test_tco.py: 41,952.00 / 12,260.73 / 29,041.53 per month.
    assert data["monthly_usd"] == {"closed": 41952.0, "open": 12260.73, "hybrid": 29041.53}
    assert set(data["break_even_requests_per_day"]) == {"open", "hybrid"}
    assert data["break_even_requests_per_day"]["open"] == pytest.approx(58451.25)
    assert data["recommendation"] in {"closed", "open", "hybrid"}
    assert data["recommendation"] == "hybrid"
    assert data["reasons"]
    assert all(isinstance(r, str) for r in data["reasons"])
    assert data["operations"]["engineers_fte"] == 0.5
    assert data["assumptions"]["hours_per_month"] == 730
    assert data["assumptions"]["days_per_month"] == 30.4


def test_json_break_even_can_be_null(tmp_path: Path) -> None:
    # $10/h replicas carrying 8,640 requests/day of $0.01 requests (see test_tco.py): never pays.
    path = tmp_path / "w.yaml"
    path.write_text(
        "requests_per_day: 10000\ninput_tokens: 0\noutput_tokens: 1000\nopen_share: 1.0\n"
        "closed: {input_per_mtok: 0, output_per_mtok: 10}\n"
        "open: {gpu_hourly_usd: 10, tokens_per_second: 100, min_replicas: 1, target_utilisation: 1.0}\n"
        "operations: {engineers_fte: 0, fixed_monthly_usd: 2000}\n",
        encoding="utf-8",
    )
    data = json.loads(invoke(str(path), "--json").stdout)
    assert data["break_even_requests_per_day"] == {"open": None, "hybrid": None}
    assert data["recommendation"] == "closed"


def test_html_report_embeds_the_chart(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = invoke(str(EXAMPLE), "--html", str(report))
    assert result.exit_code == 0, result.output
    page = report.read_text(encoding="utf-8")
    match = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match is not None
    assert base64.b64decode(match.group(1)).startswith(b"\x89PNG")
    assert "Operational burden" in page
    assert "Recommendation: hybrid" in page


def test_html_with_json(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = invoke(str(EXAMPLE), "--json", "--html", str(report))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["recommendation"] == "hybrid"
    assert report.is_file()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def example_with(old: str, new: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "cannot read the workload file", id="missing-file"),
        pytest.param("requests_per_day: [1, 2\n", "not valid YAML at line", id="bad-yaml"),
        pytest.param("- just\n- a list\n", "the top level must be a mapping", id="not-a-mapping"),
        pytest.param(
            example_with("target_utilisation: 0.6", "target_utilisation: 1.6"),
            "open.target_utilisation: Input should be less than or equal to 1",
            id="out-of-range",
        ),
        pytest.param(
            example_with("engineers_fte:", "engineer_fte:"),
            "operations.engineer_fte: unknown field; remove it or check its spelling",
            id="misspelt-key",
        ),
        pytest.param(
            example_with("model: claude-sonnet-4-5", "model: gpt-9"),
            "closed.model: no price for 'gpt-9'",
            id="unknown-model",
        ),
    ],
)
def test_errors_exit_nonzero_with_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "absent.yaml" if content is None else write(tmp_path, content)
    result = invoke(str(path), "--json")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert result.stdout == ""


def test_unwritable_report_is_one_line(tmp_path: Path) -> None:
    result = invoke(str(EXAMPLE), "--html", str(tmp_path / "missing-dir" / "report.html"))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: ")
    assert "cannot write the report" in result.stderr


# --- open_share measured: from the ledger, from a router evaluation ----------------------------------


async def _seed_ledger(url: str, tiers_and_routes: list[tuple[str | None, str, str]], age: timedelta) -> None:
    ledger = Ledger(url)
    await ledger.start()
    for n, (tier, route, status) in enumerate(tiers_and_routes):
        backend = {"open": "vllm", "closed": "claude"}.get(tier or "")
        ledger.record(
            LedgerRow(f"r{n}", "k", "openai", "auto", tier, backend, route, status, ts=datetime.now(UTC) - age)  # type: ignore[arg-type]
        )
    await ledger.close()


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('plan') / 'ledger.db'}"
    recent = [
        ("open", "router:0.1<0.41", "ok"),
        ("open", "router:0.2<0.41", "ok"),
        ("closed", "router:0.3<0.41;failover:vllm-down", "ok"),  # the router chose open
        ("closed", "router:0.9>0.41", "ok"),
        (None, "", "error"),
    ]
    asyncio.run(_seed_ledger(url, recent, timedelta(hours=1)))
    asyncio.run(_seed_ledger(url, [("closed", "router:0.9>0.41", "ok")] * 4, timedelta(days=40)))
    return url


def test_open_share_from_the_ledger(ledger_db: str) -> None:
    result = invoke(str(EXAMPLE), "--json", "--from-ledger", "--db", ledger_db)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    share = data["assumptions"]["open_share"]
    assert (share["source"], share["open_share"], share["sample"]) == ("ledger", 0.75, 4)
    assert "3 of 4 successful requests went to the open tier" in share["basis"]
    # Hand-computed in test_share.py: open_share 0.75 -> hybrid 10,488.00 + 12,260.73.
    assert data["monthly_usd"]["hybrid"] == 22748.73


def test_open_share_from_the_ledger_over_a_window(ledger_db: str) -> None:
    data = json.loads(invoke(str(EXAMPLE), "--json", "--from-ledger", "--db", ledger_db, "--since", "all").stdout)
    assert data["assumptions"]["open_share"]["open_share"] == 3 / 8  # the four old closed requests count too


def test_open_share_from_the_ledger_of_a_config_file(ledger_db: str, tmp_path: Path) -> None:
    config = tmp_path / "tiergate.yaml"
    config.write_text(f"ledger: {{url: '{ledger_db}'}}\n", encoding="utf-8")
    result = invoke(str(EXAMPLE), "--from-ledger", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "Open share: 75.0% (measured in the ledger since" in result.output


def test_open_share_from_a_router_evaluation(tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(f'{{"id": "{n}", "score": {s}}}\n' for n, s in enumerate([0.1, 0.2, 0.5, 0.9])))
    data = json.loads(invoke(str(EXAMPLE), "--json", "--from-eval", str(preds), "--threshold", "0.4").stdout)
    share = data["assumptions"]["open_share"]
    assert (share["source"], share["open_share"], share["sample"]) == ("router-eval", 0.5, 4)
    # open_share 0.5: 0.5 x 41,952 = 20,976.00 on Claude + 2 replicas (347.2 tok/s) 12,260.73.
    assert data["monthly_usd"]["hybrid"] == 33236.73


def test_router_evaluation_at_the_shipped_threshold(tmp_path: Path) -> None:
    from tiergate.routing.learned import LearnedModel

    threshold = LearnedModel.default().threshold
    preds = tmp_path / "preds.jsonl"
    scores = [threshold - 0.01, threshold, threshold + 0.01]
    preds.write_text("".join(f'{{"id": "{n}", "score": {s}}}\n' for n, s in enumerate(scores)))
    data = json.loads(invoke(str(EXAMPLE), "--json", "--from-eval", str(preds)).stdout)
    assert data["assumptions"]["open_share"]["open_share"] == pytest.approx(1 / 3)
    assert f"threshold {threshold:.4f}" in data["assumptions"]["open_share"]["basis"]


def test_the_workload_share_by_default() -> None:
    data = json.loads(invoke(str(EXAMPLE), "--json").stdout)
    assert data["assumptions"]["open_share"] == {
        "source": "workload",
        "open_share": 0.6,
        "sample": None,
        "basis": "given in the workload file",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-ledger", "--from-eval", "p.jsonl"], "give --from-ledger or --from-eval, not both"),
        (["--from-ledger", "--db", "sqlite:///x.db", "--config", "c.yaml"], "give --config or --db, not both"),
        (["--db", "sqlite:///x.db"], "--config and --db name the ledger for --from-ledger; add it"),
        (["--threshold", "0.5"], "--threshold applies to --from-eval; add it"),
        (["--from-ledger", "--db", "sqlite:///{tmp}/none.db"], "no ledger at {tmp}/none.db"),
        (["--from-ledger", "--db", "{ledger}", "--since", "1m"], "no successful requests in the ledger since"),
        (["--from-ledger", "--db", "{ledger}", "--since", "soon"], "--since 'soon': use a duration such as 7d"),
        (["--from-eval", "{tmp}/absent.jsonl"], "cannot read the predictions"),
    ],
)
def test_measured_share_errors_are_one_line(ledger_db: str, tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke(str(EXAMPLE), *[a.format(tmp=tmp_path, ledger=ledger_db) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in lines[0]
