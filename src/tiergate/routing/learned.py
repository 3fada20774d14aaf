"""The learned router: a small head on the prompt's embedding and a few cheap features, served with numpy.

The head was trained by :mod:`tiergate.train.router.train` on routing outcomes (which prompts the strong model
answers better than the weak one) and ships as two files of package data, ``artifacts/learned.json``
(version, training data hashes, seed, threshold calibration, recorded held-out metrics) and
``artifacts/learned.npz`` (weights)::

    router = LearnedRouter.from_config(RouterConfig(kind="learned", strong_share=0.3))
    signals = Signals(embedding=await encoder.embed(routing_text(request)))
    decide(router, request, signals)

The shipped files are rebuilt, from the routing data and seed 0, by ``tiergate router train mmlu.jsonl
gsm8k.jsonl --out src/tiergate/routing/artifacts --seed 0``.

The threshold comes, in this order, from ``config.threshold``, from ``config.strong_share`` (the quantile of
the artifact's calibration-set scores) or from the artifact's own calibration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from tiergate.artifacts import read_folder, read_shipped
from tiergate.config import RouterConfig
from tiergate.errors import ConfigError
from tiergate.routing.base import Signals
from tiergate.routing.features import FEATURE_NAMES, request_features
from tiergate.types import ChatRequest

Scores: TypeAlias = npt.NDArray[np.float64]
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

FORMAT = "tiergate-learned-router"
FORMAT_VERSION = 1
META_FILE = "learned.json"
WEIGHTS_FILE = "learned.npz"


def design(embeddings: FloatArray, features: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    """The head's input: the embedding and the standardised features, side by side."""
    feats = (np.asarray(features, dtype=np.float32) - mean) / std
    return np.concatenate([np.asarray(embeddings, dtype=np.float32), feats], axis=1)


@dataclass(frozen=True, slots=True)
class LearnedModel:
    """The artifact: metadata and the head's weights.

    The head is ``layers`` weight/bias pairs (``w0``, ``b0``, ...; ReLU between them, a sigmoid on the
    last) over :func:`design` of the embedding and the features (``feature_mean``, ``feature_std``).
    """

    meta: dict[str, Any]
    arrays: dict[str, npt.NDArray[np.float32]]

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        """Load ``learned.json`` and ``learned.npz`` from a folder (or from the path of either file)."""
        meta, arrays = read_folder(path, META_FILE, WEIGHTS_FILE, what="router.artifact", train="tiergate router train")
        return cls.from_parts(meta, arrays, where=str(path))

    @classmethod
    def default(cls) -> LearnedModel:
        """The artifact shipped with tiergate."""
        meta, arrays = read_shipped("tiergate.routing", META_FILE, WEIGHTS_FILE)
        return cls.from_parts(meta, arrays, where="the shipped artifact")

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: dict[str, Any], *, where: str = "artifact") -> LearnedModel:
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} artifact")
        if list(meta.get("features", [])) != list(FEATURE_NAMES):
            raise ConfigError(f"{where}: trained on other features; retrain it with this tiergate version")
        layers = int(meta.get("head", {}).get("layers", 0))
        needed = {"feature_mean", "feature_std", "calibration_quantiles"} | {
            f"{p}{i}" for i in range(layers) for p in ("w", "b")
        }
        missing = sorted(needed - set(arrays))
        if layers < 1 or missing or "threshold" not in meta.get("calibration", {}):
            raise ConfigError(f"{where}: incomplete artifact (missing {', '.join(missing) or 'head or calibration'})")
        return cls(meta=meta, arrays={k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})

    def save(self, folder: str | Path) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=False) + "\n", "utf-8")
        arrays: dict[str, Any] = dict(self.arrays)
        np.savez_compressed(out / WEIGHTS_FILE, **arrays)
        return out

    @property
    def threshold(self) -> float:
        return float(self.meta["calibration"]["threshold"])

    def predict(self, embeddings: FloatArray, features: FloatArray) -> Scores:
        """Scores in [0, 1] for ``(n, 384)`` embeddings and ``(n, len(FEATURE_NAMES))`` features."""
        a = self.arrays
        h = design(embeddings, features, a["feature_mean"], a["feature_std"])
        layers = int(self.meta["head"]["layers"])
        for i in range(layers):
            h = h @ a[f"w{i}"] + a[f"b{i}"]
            if i < layers - 1:
                h = np.maximum(h, 0.0)
        z = h[:, 0].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def threshold_for_share(self, strong_share: float) -> float:
        """The threshold that sends ``strong_share`` of the calibration set's prompts to strong."""
        quantiles = self.arrays["calibration_quantiles"].astype(np.float64)
        levels = np.linspace(0.0, 1.0, quantiles.size)
        return float(np.interp(1.0 - strong_share, levels, quantiles))


class LearnedRouter:
    """Implements :class:`~tiergate.routing.base.Router`; reads ``signals.embedding``."""

    kind = "learned"
    needs_embedding = True

    def __init__(self, model: LearnedModel, threshold: float | None = None) -> None:
        self.model = model
        self.threshold = model.threshold if threshold is None else threshold

    @classmethod
    def from_config(cls, config: RouterConfig) -> LearnedRouter:
        model = LearnedModel.load(config.artifact) if config.artifact else LearnedModel.default()
        if config.threshold is not None:
            return cls(model, config.threshold)
        if config.strong_share is not None:
            return cls(model, model.threshold_for_share(config.strong_share))
        return cls(model)

    @classmethod
    def default(cls) -> LearnedRouter:
        return cls(LearnedModel.default())

    def score(self, request: ChatRequest, signals: Signals) -> float:
        if signals.embedding is None:
            raise ValueError("the learned router needs signals.embedding (run the encoder first)")
        features = request_features(request)[None, :]
        return float(self.model.predict(signals.embedding.reshape(1, -1), features)[0])
