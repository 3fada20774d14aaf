"""Preparing the int8 MiniLM file: built once into the cache folder, NaN guards gone, products in int8."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from tiergate.signals import prepare
from tiergate.signals.encoder import Encoder, default_model_path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare.prepare(default_model_path(), tmp_path_factory.mktemp("cache"))


def test_the_prepared_graph_runs_int8_products_without_nan_guards(prepared: Path) -> None:
    graph = onnx.load(str(prepared)).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["IsNaN"] == 0
    assert ops["MatMulInteger"] == 36  # 6 layers x (Q, K, V, output, two feed-forward) with constant weights
    assert ops["MatMul"] == 12  # the attention products of two activations stay in float
    weights = {init.name for init in graph.initializer}
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def test_it_is_built_once_and_named_by_its_inputs(prepared: Path) -> None:
    stamp = prepared.stat().st_mtime_ns
    again = prepare.prepare(default_model_path(), prepared.parent)
    assert again == prepared
    assert again.stat().st_mtime_ns == stamp
    assert prepared.name == prepare.prepared_name(default_model_path())
    assert [p.name for p in prepared.parent.iterdir()] == [prepared.name]  # no temporary files left behind


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIERGATE_CACHE_DIR", str(tmp_path / "explicit"))
    assert prepare.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TIERGATE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert prepare.cache_dir() == tmp_path / "xdg" / "tiergate"


def test_the_nan_guards_were_dead_code(prepared: Path, tmp_path: Path) -> None:
    """Dropping the guards changes no output: the float model with and without them agrees exactly."""
    folded, unguarded = tmp_path / "folded.onnx", tmp_path / "unguarded.onnx"
    prepare._fold(default_model_path(), folded)
    assert prepare._drop_nan_guards(folded, unguarded) == 6
    texts = ["a short one", "def f(x):\n    return x * 2", "word " * 300]
    with_guards = Encoder.load(folded, warmup=False)
    without = Encoder.load(unguarded, warmup=False)
    try:
        np.testing.assert_array_equal(with_guards.encode(texts), without.encode(texts))
    finally:
        with_guards.close()
        without.close()
