"""Graph rewrites that onnxruntime's own fusions miss on the exported MiniLM, used by :mod:`.prepare`.

The model was exported through PyTorch's ``scaled_dot_product_attention``: each layer's attention is about
twenty small nodes (reshapes, transposes, a scale on the queries and another on the keys, the mask added,
softmax, two float products, shape arithmetic), and the GELU is spelled out as ``x * 0.5 * (1 + erf(x / √2))``.
onnxruntime's attention fusion does not recognise this form, so every node ran on its own. The rewrites put
in their place the contrib kernels that compute the same thing in one pass:

- :func:`fuse_attention`: ``MultiHeadAttention`` over the three projections (query, key, value: each still
  its own ``MatMul`` + bias, so quantisation treats them as before), with the product of the two scales and
  the attention mask as a key-padding mask;
- :func:`fuse_gelu`: ``Gelu`` (the exact, erf form).

Both check the structure they replace and raise :class:`FusionError` on anything else; the nodes left
without a consumer are dropped. On this model the output moves by less than 1e-6 (float arithmetic order).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MS_DOMAIN = "com.microsoft"


class FusionError(ValueError):
    """The graph does not have the structure a rewrite expects."""


class _Graph:
    """Producer / consumer indexes over an ``onnx.GraphProto``."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}  # TensorProtos: only scalars are read
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def node(self, name: str, op_type: str) -> Any:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            found = "a graph input or initializer" if node is None else node.op_type
            raise FusionError(f"expected {op_type} to produce {name!r}, found {found}")
        return node

    def only_consumer(self, name: str, op_type: str) -> Any:
        consumers = self.consumers.get(name, [])
        if len(consumers) != 1 or consumers[0].op_type != op_type:
            raise FusionError(f"expected {name!r} to feed one {op_type}, found {[c.op_type for c in consumers]}")
        return consumers[0]

    def scalar(self, name: str) -> float | None:
        from onnx import numpy_helper

        tensor = self.initializers.get(name)
        if tensor is None or math.prod(tensor.dims) != 1:
            return None
        return float(numpy_helper.to_array(tensor).reshape(()))

    def projection(self, name: str) -> tuple[str, float]:
        """Walk back from a query, key or value operand to the ``Add`` of its projection's bias.

        Returns that projection's output and the product of the scalar scales met on the way (the exporter
        scales queries and keys each by ``head_size ** -0.25``); only ``Mul`` by a scalar, ``Transpose`` and
        ``Reshape`` may lie between.
        """
        scale = 1.0
        while True:
            node = self.producer.get(name)
            if node is None:
                raise FusionError(f"{name!r} does not come from a projection")
            if node.op_type == "Add" and any(self.initializers.get(i) is not None for i in node.input):
                return name, scale
            if node.op_type == "Mul":
                factors = [self.scalar(i) for i in node.input]
                if factors[1] is not None:
                    scale, name = scale * factors[1], node.input[0]
                elif factors[0] is not None:
                    scale, name = scale * factors[0], node.input[1]
                else:
                    raise FusionError(f"{node.name}: a Mul without a scalar factor between projection and scores")
            elif node.op_type in ("Transpose", "Reshape"):
                name = node.input[0]
            else:
                raise FusionError(f"{node.name}: unexpected {node.op_type} between projection and scores")


def fuse_attention(model: Any, num_heads: int, mask_input: str = "attention_mask") -> int:
    """Replace each self-attention block by ``MultiHeadAttention``; returns how many were replaced.

    A block is recognised from its ``Softmax``: ``Softmax(Add(MatMul(q, k), mask))``, then ``MatMul`` with the
    values, ``Transpose`` and ``Reshape`` back to ``(batch, tokens, hidden)``: that ``Reshape``'s output is
    what the fused node produces.
    """
    from onnx import TensorProto, helper

    graph = _Graph(model.graph)
    mask = f"{mask_input}_int32"
    fused: dict[str, Any] = {}  # output name -> MultiHeadAttention node
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        masked = graph.node(softmax.input[0], "Add")
        scores = graph.node(masked.input[0], "MatMul")
        query, query_scale = graph.projection(scores.input[0])
        key, key_scale = graph.projection(scores.input[1])
        weighted = graph.only_consumer(softmax.output[0], "MatMul")
        if weighted.input[0] != softmax.output[0]:
            raise FusionError(f"{weighted.name}: the attention weights are not its first operand")
        value, value_scale = graph.projection(weighted.input[1])
        if value_scale != 1.0:
            raise FusionError(f"{weighted.name}: the values are scaled")
        transposed = graph.only_consumer(weighted.output[0], "Transpose")
        merged = graph.only_consumer(transposed.output[0], "Reshape")
        fused[merged.output[0]] = helper.make_node(
            "MultiHeadAttention",
            [query, key, value, "", mask],
            [merged.output[0]],
            name=f"tiergate_attention_{len(fused)}",
            domain=MS_DOMAIN,
            num_heads=num_heads,
            scale=query_scale * key_scale,
        )
    if not fused:
        return 0
    cast = helper.make_node("Cast", [mask_input], [mask], name="tiergate_mask_int32", to=TensorProto.INT32)
    kept = [n for n in model.graph.node if not set(n.output) & fused.keys()]
    _replace_nodes(model, [cast, *kept, *fused.values()])
    return len(fused)


def fuse_gelu(model: Any) -> int:
    """Replace ``x * (0.5 * (1 + erf(x / c)))`` (either ``Mul`` order) by ``Gelu(x)``; returns how many."""
    from onnx import helper

    graph = _Graph(model.graph)
    dropped: set[str] = set()  # by first output name
    fused: list[Any] = []
    for erf in [n for n in model.graph.node if n.op_type == "Erf"]:
        divide = graph.node(erf.input[0], "Div")
        x = divide.input[0]
        one_plus = graph.only_consumer(erf.output[0], "Add")
        half = graph.only_consumer(one_plus.output[0], "Mul")
        product = graph.only_consumer(half.output[0], "Mul")
        constants = (
            graph.scalar(divide.input[1]),
            graph.scalar(next(i for i in one_plus.input if i != erf.output[0])),
            graph.scalar(next(i for i in half.input if i != one_plus.output[0])),
        )
        divisor, one, factor = constants
        exact = divisor is not None and abs(divisor - math.sqrt(2)) < 1e-6 and (one, factor) == (1.0, 0.5)
        if not exact or x not in product.input:
            raise FusionError(f"{erf.name}: not an exact GELU (constants {constants})")
        dropped.update(n.output[0] for n in (divide, erf, one_plus, half, product))
        name = f"tiergate_gelu_{len(fused)}"
        fused.append(helper.make_node("Gelu", [x], [product.output[0]], name=name, domain=MS_DOMAIN))
    if fused:
        _replace_nodes(model, [*(n for n in model.graph.node if n.output[0] not in dropped), *fused])
    return len(fused)


def _replace_nodes(model: Any, nodes: Iterable[Any]) -> None:
    """Set the graph's nodes to those of ``nodes`` the outputs need, in topological order; drop dead weights."""
    from onnx import helper

    producer = {name: node for node in nodes for name in node.output}
    order: list[Any] = []
    placed: set[str] = set()  # by first output name

    def place(name: str) -> None:
        # Iterative depth-first walk (the graph is a few hundred nodes deep along its spine).
        stack: list[tuple[Any, bool]] = [(producer[name], False)] if name in producer else []
        while stack:
            node, expanded = stack.pop()
            if node.output[0] in placed:
                continue
            if expanded:
                placed.add(node.output[0])
                order.append(node)
                continue
            stack.append((node, True))
            inputs = [producer[i] for i in reversed(node.input) if i in producer]
            stack.extend((p, False) for p in inputs if p.output[0] not in placed)

    for output in model.graph.output:
        place(output.name)
    graph = model.graph
    del graph.node[:]
    graph.node.extend(order)
    used = {name for node in order for name in node.input}
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
