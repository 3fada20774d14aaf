"""The commands that train or evaluate need the training code (``tiergate.train``, the ``[train]`` extra's
dependencies): where it cannot be imported they end with the line that installs it, exit 2, not a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiergate.cli import build_app
from tiergate.cli.failure import TRAIN_EXTRA

COMMANDS = [
    ["router", "train", "{data}", "--out", "{out}"],
    ["router", "eval", "{data}"],
    ["router", "calibrate", "{data}", "--strong-share", "0.3"],
    ["router", "score", "{data}", "--out", "{out}"],
    ["guard", "train", "{data}", "--out", "{out}"],
    ["guard", "eval", "{data}"],
    ["guard", "score", "{data}", "--out", "{out}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_without_the_training_code_the_command_says_how_to_install_it(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"id": "1", "prompt": "hi"}\n', "utf-8")
    # What a serving install missing a dependency of the training code sees: importing it fails.
    for name in ["tiergate.train", *(m for m in sys.modules if m.startswith("tiergate.train."))]:
        monkeypatch.setitem(sys.modules, name, None)
    args = [a.format(data=data, out=tmp_path / "out") for a in command]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: this command needs the training extra")
    assert lines[0].endswith(TRAIN_EXTRA)
    assert TRAIN_EXTRA == "pip install 'tiergate[train]'"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()
