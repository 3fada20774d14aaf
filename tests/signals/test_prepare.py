"""Preparing the int8 MiniLM file: built once into the cache folder, NaN guards gone, fused, products in int8."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from tiergate.signals import fusion, prepare
from tiergate.signals.encoder import default_model_path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare.prepare(default_model_path(), tmp_path_factory.mktemp("cache"))


def test_the_prepared_graph_runs_int8_products_without_nan_guards(prepared: Path) -> None:
    graph = onnx.load(str(prepared)).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["IsNaN"] == 0
    assert ops["MatMulInteger"] == 36  # 6 layers x (Q, K, V, output, two feed-forward) with constant weights
    assert ops["MultiHeadAttention"] == 6  # the attention products of two activations: in float, one node a layer
    assert ops["Gelu"] == 6
    assert ops["Softmax"] == ops["Erf"] == ops["Transpose"] == 0
    weights = {init.name for init in graph.initializer}
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    outputs = [o.name for o in graph.output]
    assert outputs == ["last_hidden_state", *(prepare.layer_output(k) for k in range(1, prepare.NUM_LAYERS))]


def test_layer_outputs_need_a_bert_shaped_graph(folded: Path) -> None:
    model = onnx.load(str(folded))
    norms = [node for node in model.graph.node if node.op_type == "LayerNormalization"]
    model.graph.node.remove(norms[3])
    with pytest.raises(prepare.PrepareError, match="13 LayerNormalization"):
        prepare.add_layer_outputs(model)


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


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("folded") / "folded.onnx"
    prepare._fold(default_model_path(), path)
    return path


def run_float(path: Path | onnx.ModelProto, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import onnxruntime

    source = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    (hidden,) = session.run(["last_hidden_state"], feeds)
    return np.asarray(hidden)


def test_the_rewrites_keep_the_float_model_s_outputs(folded: Path) -> None:
    """Guards dropped and attention and GELU fused: the same hidden states, padded batches included."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 25:] = 0  # padding: the fused attention must ignore these keys as the exporter's mask did
    mask[2, 3:] = 0
    model = onnx.load(str(folded))
    assert prepare._drop_nan_guards(model) == 6
    guards_only = run_float(model, ids, mask)
    np.testing.assert_array_equal(guards_only, run_float(folded, ids, mask))  # the guards were dead code
    assert fusion.fuse_attention(model, num_heads=prepare.NUM_HEADS) == 6
    assert fusion.fuse_gelu(model) == 6
    ops = Counter(node.op_type for node in model.graph.node)
    assert (ops["Softmax"], ops["Erf"], ops["Where"], ops["MultiHeadAttention"], ops["Gelu"]) == (0, 0, 0, 6, 6)
    fused = run_float(model, ids, mask)
    kept = mask.astype(bool)  # padded positions' states are never pooled
    np.testing.assert_allclose(fused[kept], guards_only[kept], atol=2e-5)


def test_a_rewrite_refuses_a_graph_it_does_not_know(folded: Path) -> None:
    model = onnx.load(str(folded))
    prepare._drop_nan_guards(model)
    erf = next(node for node in model.graph.node if node.op_type == "Erf")
    erf.op_type = "Tanh"  # now the Div feeds something else: no exact GELU here
    model.graph.node.append(onnx.helper.make_node("Erf", [erf.input[0]], ["lonely"]))
    with pytest.raises(fusion.FusionError, match="Add"):
        fusion.fuse_gelu(model)
