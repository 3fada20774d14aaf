"""The safety guard in front of the open-weight tier: a small head on the prompt's embedding, served with numpy.

The head was trained by :mod:`tiergate.train.guard.train` on public harmful-request and jailbreak sets against
benign prompts and the contrast set of risky-looking but safe prompts, and ships as two files of package data,
``artifacts/guard.json`` (version, data hashes, seed, threshold, recorded held-out metrics) and
``artifacts/guard.npz`` (weights). In the gateway::

    guard = Guard.from_config(config.policy.guard)                # the shipped artifact, or config's threshold
    verdict = await guard.check(request, encoder)                 # embeds texts_to_check(request)'s windows
    if verdict.flagged: ...                                       # verdict.category: an MLCommons hazard

or, with embeddings at hand, ``guard.score(embeddings, text)`` for one text (the encoder's pooled states of
``guard.windows(text)``, :meth:`~tiergate.signals.encoder.Encoder.encode_layers`) and ``guard.flagged(score)``.
A request's score is the highest of its texts' (:func:`~tiergate.guard.windows.texts_to_check`) windows'
scores, in [0, 1]; higher means more likely harmful.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from tiergate.artifacts import read_folder, read_shipped
from tiergate.config import GuardConfig
from tiergate.errors import ConfigError
from tiergate.guard.categories import CATEGORIES, UNSPECIFIED
from tiergate.guard.features import FEATURE_NAMES, batch_features
from tiergate.guard.knn import KNN_FEATURES, knn_features, split_bank
from tiergate.guard.windows import DOCUMENT_WINDOWS, Windower, documents_to_check, paragraphs, texts_to_check
from tiergate.offload import off_loop
from tiergate.signals.encoder import DIM, POOLED_LAYERS
from tiergate.types import ChatRequest

Scores: TypeAlias = npt.NDArray[np.float64]
Vectors: TypeAlias = npt.NDArray[np.float32]

FORMAT = "tiergate-guard"
FORMAT_VERSION = 2
#: Arrays not stored as float32: the nearest-neighbour bank (float16, to keep the artifact small) and its labels.
_STORED: dict[str, Any] = {"bank": np.float16, "bank_labels": np.int8}
#: Windows whose pooled states :meth:`Guard.check` keeps (6 KiB each: 12 MiB at most).
RECENT_WINDOWS = 2048
META_FILE = "guard.json"
WEIGHTS_FILE = "guard.npz"


def pooled_layers(meta: Mapping[str, Any]) -> list[int]:
    """The encoder layers whose pooled states an artifact's head reads besides the sentence vector."""
    return [int(k) for k in meta.get("encoder", {}).get("pooled_layers", [])]


def state_rows(layers: Sequence[int]) -> list[int]:
    """The rows of the encoder's pooled states (``Encoder.encode_layers``) a head on ``layers`` reads: the
    sentence vector, then those layers."""
    return [0, *(1 + POOLED_LAYERS.index(k) for k in layers)]


class Embedder(Protocol):
    """What :meth:`Guard.check` needs of :class:`~tiergate.signals.encoder.Encoder`."""

    async def embed_layers(self, text: str) -> Vectors:
        """The pooled states of ``text``, ``(1 + len(POOLED_LAYERS), 384)``."""
        ...

    def token_count(self, text: str) -> int | None:
        """The tokens of ``text`` if the encoder read it whole lately (spares tokenizing it again), else None."""
        ...


@dataclass(frozen=True, slots=True)
class GuardResult:
    """The guard's answer for one request: its score, whether it is flagged, and the texts that were read."""

    score: float
    flagged: bool
    threshold: float
    texts: int
    windows: int
    #: The hazard category of the highest-scoring window (:mod:`tiergate.guard.categories`), when flagged.
    category: str | None = None


class Guard:
    """A guard artifact (metadata and weights) and the threshold it flags at.

    The head is a weighted mean of members' probabilities (``meta["head"]["members"]``); member ``j`` is
    ``layers`` weight/bias pairs (``m{j}_w0``, ``m{j}_b0``, ...; ReLU between them, a sigmoid on the last)
    over the window's pooled encoder states it reads (the sentence vector, then the layers
    ``meta["encoder"]["pooled_layers"]``, 384 values each) and its standardised features (``feature_mean``,
    ``feature_std``): the cheap text features and, when ``meta["head"]["knn"]`` is set, the nearest-neighbour
    features of the sentence vector read from the ``bank`` of training windows' vectors and their
    ``bank_labels``.
    """

    def __init__(self, meta: dict[str, Any], arrays: Mapping[str, Any], threshold: float | None = None) -> None:
        self.meta = meta
        self.arrays = {k: np.asarray(v, dtype=_STORED.get(k, np.float32)) for k, v in arrays.items()}
        self.threshold = float(meta["calibration"]["threshold"]) if threshold is None else float(threshold)
        self.windower = Windower(max_windows=int(meta.get("windows", {}).get("max_windows", 2)))
        self.document_windower = Windower(max_windows=max(DOCUMENT_WINDOWS, self.windower.max_windows))
        #: Pooled states of recently scored windows: a conversation's earlier turns and tool results come back
        #: with each of its requests, and are not encoded again.
        self._recent: OrderedDict[str, Vectors] = OrderedDict()
        self.dim = int(meta.get("encoder", {}).get("dim", DIM))
        #: Rows of the encoder's pooled states given to :meth:`predict` (``Encoder.encode_layers``) and the
        #: ones the head reads: the sentence vector and the artifact's ``pooled_layers``.
        self.rows = 1 + len(POOLED_LAYERS)
        self._read = state_rows(pooled_layers(meta))
        self._knn = meta.get("head", {}).get("knn")
        has_bank = "bank" in self.arrays and "bank_labels" in self.arrays
        self._split = split_bank(self.arrays["bank"], self.arrays["bank_labels"]) if has_bank else None
        #: The category head: names of its classes, and its weights over the pooled states (``None``: no head).
        self.category_names: list[str] = list(meta.get("categories", {}).get("names", []))
        self._categories = (
            (self.arrays["category_w"], self.arrays["category_b"])
            if self.category_names and "category_w" in self.arrays and "category_b" in self.arrays
            else None
        )
        members = meta.get("head", {}).get("members", [])
        self._members = [  # (weight, [(w0, b0), (w1, b1), ...]) of each member, read once
            (
                float(m["weight"]),
                [(self.arrays[f"m{j}_w{i}"], self.arrays[f"m{j}_b{i}"]) for i in range(int(m["layers"]))],
            )
            for j, m in enumerate(members)
        ]

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: Mapping[str, Any], *, where: str = "artifact") -> Guard:
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} artifact")
        if list(meta.get("features", [])) != list(FEATURE_NAMES):
            raise ConfigError(f"{where}: trained on other features; retrain it with this tiergate version")
        if not set(pooled_layers(meta)) <= set(POOLED_LAYERS):
            raise ConfigError(f"{where}: trained on other encoder layers; retrain it with this tiergate version")
        members = meta.get("head", {}).get("members", [])
        knn = meta.get("head", {}).get("knn")
        if knn is not None and list(knn.get("features", [])) != list(KNN_FEATURES):
            raise ConfigError(f"{where}: trained on other features; retrain it with this tiergate version")
        needed = (
            {"feature_mean", "feature_std"}
            | ({"bank", "bank_labels"} if knn is not None else set())
            | {
                f"m{j}_{p}{i}"
                for j, m in enumerate(members)
                for i in range(int(m.get("layers", 0)))
                for p in ("w", "b")
            }
        )
        names = list(meta.get("categories", {}).get("names", []))
        if not set(names) <= set(CATEGORIES):
            raise ConfigError(f"{where}: unknown categories {sorted(set(names) - set(CATEGORIES))}")
        needed |= {"category_w", "category_b"} if names else set()
        missing = sorted(needed - set(arrays))
        if not members or missing or "threshold" not in meta.get("calibration", {}):
            raise ConfigError(f"{where}: incomplete artifact (missing {', '.join(missing) or 'head or calibration'})")
        return cls(meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> Guard:
        """Load ``guard.json`` and ``guard.npz`` from a folder (or from the path of either file)."""
        meta, arrays = read_folder(path, META_FILE, WEIGHTS_FILE, what="guard artifact", train="tiergate guard train")
        return cls.from_parts(meta, arrays, where=str(path))

    @classmethod
    def default(cls) -> Guard:
        """The artifact shipped with tiergate."""
        meta, arrays = read_shipped("tiergate.guard", META_FILE, WEIGHTS_FILE)
        return cls.from_parts(meta, arrays, where="the shipped guard")

    @classmethod
    def from_config(cls, config: GuardConfig) -> Guard:
        """The guard of ``config.artifact`` (else the shipped one), flagging at ``config.threshold`` when set."""
        guard = cls.load(config.artifact) if config.artifact else cls.default()
        if config.threshold is not None:
            guard.threshold = float(config.threshold)
        return guard

    def save(self, folder: str | Path) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n", "utf-8")
        np.savez_compressed(out / WEIGHTS_FILE, **dict(self.arrays))  # type: ignore[arg-type]
        return out

    def predict(self, embeddings: npt.NDArray[Any], windows: Sequence[str]) -> Scores:
        """Scores in [0, 1] of windows: their pooled states, ``(n, 1 + len(POOLED_LAYERS), 384)``, and the ``n``
        window texts."""
        a = self.arrays
        states = np.asarray(embeddings, dtype=np.float32).reshape(len(windows), self.rows, self.dim)
        feats = batch_features(windows)
        if self._knn is not None:
            vectors = np.ascontiguousarray(states[:, 0])
            near = knn_features(vectors, a["bank"], a["bank_labels"], int(self._knn["k"]), split=self._split)
            feats = np.hstack([feats, near])
        read = states[:, self._read].reshape(len(windows), -1)
        x = np.concatenate([read, (feats - a["feature_mean"]) / a["feature_std"]], axis=1)
        total = np.zeros(len(windows))
        for weight, layers in self._members:
            h = x
            for i, (w, b) in enumerate(layers):
                h = h @ w + b
                if i < len(layers) - 1:
                    h = np.maximum(h, 0.0)
            z = np.clip(h[:, 0].astype(np.float64), -50.0, 50.0)
            total += weight / (1.0 + np.exp(-z))
        return total / sum(weight for weight, _ in self._members)

    def category(self, states: npt.NDArray[Any]) -> str:
        """The hazard category of one window, from its pooled states ``(1 + len(POOLED_LAYERS), 384)``."""
        if self._categories is None:
            return UNSPECIFIED
        w, b = self._categories
        x = np.asarray(states, dtype=np.float32).reshape(self.rows, self.dim)[state_rows(POOLED_LAYERS)].reshape(-1)
        return self.category_names[int(np.argmax(x @ w + b))]

    def windows(self, text: str) -> list[str]:
        """The windows of ``text`` to embed and score (the text itself when it fits the encoder)."""
        return self.windower.split(text)

    def score(self, embeddings: npt.NDArray[Any], text: str) -> float:
        """The score of one text: the pooled states of its :meth:`windows`, shape ``(k, rows, 384)``
        (``(rows, 384)`` if one; ``rows`` = 1 + len(POOLED_LAYERS))."""
        windows = self.windows(text)
        states = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.rows, self.dim)
        if states.shape[0] != len(windows):
            raise ValueError(f"{len(windows)} window embeddings are needed for this text, got {states.shape[0]}")
        return float(self.predict(states, windows).max())

    def _windows(self, texts: Sequence[str], docs: Sequence[str], encoder: Embedder) -> list[str]:
        windows = [w for text in texts for w in self.windower.split(text, encoder.token_count(text))]
        for doc in docs:
            windows += self.document_windower.split(doc, encoder.token_count(doc))
            windows += paragraphs(doc)
        return windows

    def flagged(self, score: float) -> bool:
        return bool(score >= self.threshold)

    async def check(
        self, request: ChatRequest, encoder: Embedder, known: Mapping[str, Vectors] | None = None
    ) -> GuardResult:
        """Score a request: every window of :func:`texts_to_check` and of :func:`documents_to_check` (tool
        results, in up to :data:`DOCUMENT_WINDOWS` windows and their :func:`paragraphs`), embedded together; the
        highest score wins.

        ``known`` maps texts already embedded (the router's text) to their pooled states (``embed_layers``), to
        skip encoding them again; windows scored lately are not encoded again either.
        """
        texts = texts_to_check(request)
        docs = documents_to_check(request)
        size = sum(map(len, texts)) + sum(map(len, docs))  # long texts are tokenized to cut them: off the loop
        windows = await off_loop(size, self._windows, texts, docs, encoder)
        known = known or {}
        todo = [w for w in dict.fromkeys(windows) if w not in known and w not in self._recent]
        vectors = dict(zip(todo, await asyncio.gather(*(encoder.embed_layers(w) for w in todo)), strict=True))
        matrix = np.stack(
            [known[w] if w in known else vectors[w] if w in vectors else self._recent[w] for w in windows]
        )
        for w in dict.fromkeys(windows):
            if w not in known:
                self._recent[w] = vectors[w] if w in vectors else self._recent[w]
                self._recent.move_to_end(w)
        while len(self._recent) > RECENT_WINDOWS:
            self._recent.popitem(last=False)
        scores = await off_loop(size, self.predict, matrix, windows)
        top = int(np.argmax(scores))
        score = float(scores[top])
        flagged = self.flagged(score)
        category = self.category(matrix[top]) if flagged else None
        return GuardResult(score, flagged, self.threshold, len(texts) + len(docs), len(windows), category)
