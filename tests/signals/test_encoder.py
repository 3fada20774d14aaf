"""The real encoder: all-MiniLM-L6-v2 int8 on onnxruntime, against float reference vectors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiergate.signals.encoder import DIM, Encoder

REFERENCE = json.loads((Path(__file__).parent / "minilm_reference.json").read_text("utf-8"))

# Recorded once from this int8 model (first 8 dimensions) and its cosine to the float reference.
INT8_FIRST8 = [
    [0.066787, 0.061189, 0.05091, 0.079021, 0.038368, 0.00396, 0.03958, -0.004975],
    [0.079541, 0.035954, -0.002391, -0.005738, 0.022958, -0.056697, 0.012667, 0.005438],
    [0.014336, -0.03253, 0.059384, 0.007014, -0.041551, 0.059043, 0.076239, 0.066589],
    [-0.011897, 0.076161, 0.001195, -0.027949, -0.053897, -0.034111, -0.094825, 0.021812],
    [0.004518, -0.068237, 0.007305, -0.031834, -0.031401, -0.009118, 0.068802, 0.005373],
]
INT8_COSINE = [0.99927, 0.99963, 0.99960, 0.99954, 0.99821]


@pytest.fixture(scope="module")
def encoder() -> Iterator[Encoder]:
    enc = Encoder.load(intra_op_num_threads=1)
    yield enc
    enc.close()


def test_vectors_match_the_float_reference(encoder: Encoder) -> None:
    vectors = encoder.encode(REFERENCE["sentences"])
    reference = np.asarray(REFERENCE["vectors"], dtype=np.float32)
    cosine = (vectors * reference).sum(axis=1)
    assert (cosine >= 0.98).all(), cosine
    np.testing.assert_allclose(cosine, INT8_COSINE, atol=1e-3)
    np.testing.assert_allclose(vectors[:, :8], INT8_FIRST8, atol=1e-3)


def test_shape_dtype_and_norm(encoder: Encoder) -> None:
    vectors = encoder.encode(["hello", "a somewhat longer sentence about routing"])
    assert vectors.shape == (2, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, DIM)


def test_padding_does_not_change_a_vector(encoder: Encoder) -> None:
    texts = ["short", "a much longer prompt " * 12]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_long_inputs_are_truncated_at_256_tokens(encoder: Encoder) -> None:
    base = "token " * 300
    a, b = encoder.encode([base, base + "completely different words at the end " * 20])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_many_texts_keep_their_order(encoder: Encoder) -> None:
    texts = [f"prompt number {i} " * (1 + i % 7) for i in range(70)]  # more than one chunk, lengths mixed
    batched = encoder.encode(texts)
    np.testing.assert_allclose(batched[[0, 33, 69]], encoder.encode([texts[0], texts[33], texts[69]]), atol=1e-5)


async def test_concurrent_embeds_share_onnx_calls(encoder: Encoder) -> None:
    texts = [f"question {i}: what is {i} times {i + 1}?" for i in range(64)]
    calls_before = encoder.calls
    vectors = await asyncio.gather(*(encoder.embed(t) for t in texts))
    runs = encoder.calls - calls_before
    assert runs <= 4, f"64 concurrent embeds took {runs} onnxruntime runs"
    np.testing.assert_allclose(np.stack(vectors), encoder.encode(texts), atol=1e-5)


async def test_a_lone_embed_waits_only_the_window(encoder: Encoder) -> None:
    vector = await asyncio.wait_for(encoder.embed("just one"), timeout=5)
    assert vector.shape == (DIM,)


async def test_a_cancelled_caller_does_not_break_the_worker(encoder: Encoder) -> None:
    task = asyncio.ensure_future(encoder.embed("cancelled"))
    await asyncio.sleep(0)
    task.cancel()
    vector = await encoder.embed("still served")
    assert vector.shape == (DIM,)


async def test_a_model_failure_reaches_the_callers() -> None:
    class Broken:
        def run(self, *args: Any) -> Any:
            raise RuntimeError("model failed")

    from tiergate.signals.encoder import load_tokenizer

    enc = Encoder(Broken(), load_tokenizer(), batch_window_ms=0)
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            await enc.embed("x")
        with pytest.raises(RuntimeError, match="model failed"):  # the worker is still there
            await enc.embed("y")
    finally:
        enc.close()
    with pytest.raises(RuntimeError, match="closed"):
        await enc.embed("z")
