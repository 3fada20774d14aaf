"""``tiergate router ...`` on a small sample of the real routing outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiergate.cli.router import router_app

DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "routing"


def _lines(path: Path, step: int, count: int) -> list[str]:
    lines = path.read_text("utf-8").split("\n")
    return [line for line in lines if line.strip()][::step][:count]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 MMLU prompts from across the subjects and 12 GSM8K problems."""
    path = tmp_path_factory.mktemp("data") / "sample.jsonl"
    rows = _lines(DATA / "mmlu.jsonl", 560, 16) + _lines(DATA / "gsm8k.jsonl", 60, 12)
    path.write_text("\n".join(rows) + "\n", "utf-8")
    return path


runner = CliRunner()


def test_train_writes_a_loadable_artifact(sample: Path, tmp_path: Path) -> None:
    result = runner.invoke(router_app, ["train", str(sample), "--out", str(tmp_path / "r"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.stdout
    meta = json.loads((tmp_path / "r" / "learned.json").read_text())
    assert meta["seed"] == 1
    assert meta["data"]["files"][0]["name"] == "sample.jsonl"
    assert (tmp_path / "r" / "learned.npz").stat().st_size < 3_000_000


def test_score_writes_one_prediction_per_prompt(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    result = runner.invoke(router_app, ["score", str(sample), "--out", str(out)])
    assert result.exit_code == 0, result.output
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [json.loads(line)["id"] for line in sample.read_text().splitlines()]
    assert [p["id"] for p in preds] == ids
    assert all(0.0 <= p["score"] <= 1.0 for p in preds)


def test_eval_reports_the_metrics_and_draws_the_curve(sample: Path, tmp_path: Path) -> None:
    plot = tmp_path / "curve.png"
    result = runner.invoke(router_app, ["eval", str(sample), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    for text in ("APGR", "CPT50", "mmlu", "gsm8k", "all", "threshold"):
        assert text in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_to_a_share_and_to_a_quality(sample: Path, tmp_path: Path) -> None:
    result = runner.invoke(router_app, ["calibrate", str(sample), "--strong-share", "0.25"])
    assert result.exit_code == 0, result.output
    assert "25.0%" in result.stdout
    assert "router: {kind: learned, threshold:" in result.stdout
    out = tmp_path / "recalibrated"
    result = runner.invoke(router_app, ["calibrate", str(sample), "--quality", "0.9", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "learned.json").read_text())["calibration"]["method"] == "quality"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "/nonexistent/file.jsonl"], "cannot read"),
        (["calibrate", "SAMPLE"], "exactly one of --strong-share or --quality"),
        (["score", "SAMPLE", "--out", "OUT", "--artifact", "/nonexistent"], "not found"),
    ],
)
def test_errors_exit_nonzero_with_one_line(sample: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(sample) if a == "SAMPLE" else str(tmp_path / "o.jsonl") if a == "OUT" else a for a in args]
    result = runner.invoke(router_app, args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_lines_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "hi", "outcomes": {"a": 1, "b": 0}}\n{"prompt": 3}\n')
    result = runner.invoke(router_app, ["eval", str(bad)])
    assert result.exit_code == 1
    assert "bad.jsonl:2" in result.stderr
