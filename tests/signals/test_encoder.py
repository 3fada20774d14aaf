"""The real encoder: all-MiniLM-L6-v2 int8 on onnxruntime, against float reference vectors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiergate.signals.encoder import DIM, POOLED_LAYERS, Encoder, default_model_path, load_tokenizer

REFERENCE = json.loads((Path(__file__).parent / "minilm_reference.json").read_text("utf-8"))

# Recorded once from the prepared int8 model (first 8 dimensions) and its cosine to the float reference.
INT8_FIRST8 = [
    [0.061261, 0.053573, 0.036065, 0.080099, 0.04012, -0.007131, 0.039155, 0.007249],
    [0.080245, 0.033585, -0.00163, -0.005532, 0.020759, -0.055447, 0.024957, 0.010684],
    [0.010832, -0.033905, 0.070253, 0.003996, -0.032531, 0.050276, 0.081086, 0.068643],
    [-0.011544, 0.069033, -0.003271, -0.022891, -0.04604, -0.022618, -0.082877, 0.028735],
    [-0.001653, -0.071304, 0.006932, -0.033897, -0.034413, -0.011397, 0.068374, 0.008693],
]
INT8_COSINE = [0.98988, 0.99557, 0.99512, 0.99282, 0.99656]


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


def test_the_same_run_pools_intermediate_layers(encoder: Encoder) -> None:
    """Row 0 is the sentence vector; then layers 2, 3, 4, each mean-pooled and unit length, and each its own."""
    texts = ["hello", "How do I kill a Python process that hangs?"]
    stacks = encoder.encode_layers(texts)
    assert stacks.shape == (2, 1 + len(POOLED_LAYERS), DIM)
    np.testing.assert_array_equal(stacks[:, 0], encoder.encode(texts))
    np.testing.assert_allclose(np.linalg.norm(stacks, axis=2), 1.0, atol=1e-5)
    for stack in stacks:
        cosines = stack @ stack.T
        assert (cosines[np.triu_indices(len(stack), 1)] < 0.99).all()  # four different layers


def test_a_model_file_not_prepared_here_gets_its_layer_outputs_at_load() -> None:
    """The shipped float-dequantising file has only last_hidden_state; its layers agree with the int8 ones."""
    texts = ["hello", "How do I kill a Python process that hangs?", "Summarise this contract in two lines."]
    raw = Encoder.load(default_model_path(), warmup=False)
    prepared = Encoder.load(warmup=False)
    try:
        cosines = (raw.encode_layers(texts) * prepared.encode_layers(texts)).sum(axis=2)
    finally:
        raw.close()
        prepared.close()
    assert (cosines >= 0.98).all(), cosines


async def test_embed_layers_gives_what_encode_layers_gives(encoder: Encoder) -> None:
    texts = [f"question {i}: what is {i} squared?" for i in range(8)]
    stacks = await asyncio.gather(*(encoder.embed_layers(t) for t in texts))
    np.testing.assert_array_equal(np.stack(stacks), encoder.encode_layers(texts))


def test_padding_does_not_change_a_vector(encoder: Encoder) -> None:
    texts = ["short", "a much longer prompt " * 12]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_long_inputs_are_truncated_at_256_tokens(encoder: Encoder) -> None:
    base = "token " * 300
    a, b = encoder.encode([base, base + "completely different words at the end " * 20])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_it_counts_the_tokens_of_texts_it_read_whole(encoder: Encoder) -> None:
    text, long = "Count the tokens of this unusual sentence, please.", "token " * 300
    assert encoder.token_count(text) is None  # never encoded
    encoder.encode([text, long])
    assert encoder.token_count(text) == len(load_tokenizer().encode(text, add_special_tokens=False).ids)
    assert encoder.token_count(long) is None  # truncated: its whole count was not read


def test_a_text_s_count_is_found_with_or_without_its_outer_whitespace(encoder: Encoder) -> None:
    """The router embeds the user's turn as it came; the guard looks it up stripped."""
    raw = "\n  Outer whitespace makes no WordPiece tokens at all.\t \u3000"
    encoder.encode([raw])
    stripped = raw.strip()
    assert encoder.token_count(stripped) == len(load_tokenizer().encode(stripped, add_special_tokens=False).ids)
    assert encoder.token_count(stripped) == len(load_tokenizer().encode(raw, add_special_tokens=False).ids)
    assert encoder.token_count(raw) == encoder.token_count(stripped)


def test_many_texts_keep_their_order(encoder: Encoder) -> None:
    texts = [f"prompt number {i} " * (1 + i % 7) for i in range(70)]  # lengths mixed
    batched = encoder.encode(texts)
    np.testing.assert_allclose(batched[[0, 33, 69]], encoder.encode([texts[0], texts[33], texts[69]]), atol=1e-5)


async def test_concurrent_embeds_share_worker_hops(encoder: Encoder) -> None:
    texts = [f"question {i}: what is {i} times {i + 1}?" for i in range(64)]
    before = encoder.batches
    vectors = await asyncio.gather(*(encoder.embed(t) for t in texts))
    hops = encoder.batches - before
    assert hops <= 4, f"64 concurrent embeds took {hops} trips to the worker thread"
    # Exactly the vectors each text gets alone: a decision never depends on who else was asking.
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_array_equal(np.stack(vectors), alone)


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
