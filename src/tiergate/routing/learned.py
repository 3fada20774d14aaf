"""The learned router: a small head on the prompt's embedding and a few cheap features, served with numpy.

The head was trained by :mod:`tiergate.train.router.train` on routing outcomes (which prompts the strong model
answers better than the weak one) and ships as two files of package data, ``artifacts/learned.json``
(version, training data hashes, seed, threshold calibration, recorded held-out metrics) and
``artifacts/learned.npz`` (weights, and what the router needs to know where it is out of its depth)::

    router = LearnedRouter.from_config(RouterConfig(kind="learned", strong_share=0.3))
    signals = Signals(embedding=await encoder.embed(routing_text(request)))
    decide(router, request, signals)

The shipped files are rebuilt, from the routing data and seed 0, by the command in ``docs/benchmarks-routing.md``.

The threshold comes, in this order, from ``config.threshold``, from ``config.strong_share`` (the quantile of
the artifact's calibration-set scores) or from the artifact's own calibration.

**Out of distribution.** A prompt whose vector is far from everything the head was trained on gets no learned
score: d = 1 - the mean cosine similarity to its ``k`` nearest vectors in the artifact's reference sample of the
training vectors; above the artifact's threshold (the 0.99 quantile of the training rows' distance to the
sample's vectors of other task groups, ``router.ood.threshold`` to override) the decision falls back to
``router.ood.fallback``: the rules router, at the same target strong share (its score is read as a percentile
of the calibration set's rules scores), or a fixed tier. A prompt mostly in a non-Latin script
(``non_ascii_ratio`` over ``router.ood.non_ascii_ratio``) falls back too: the encoder is English-only, and its
distance there means little. The route says so: ``ood:0.81>0.72->rules:0.93>=0.52``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from tiergate.artifacts import read_folder, read_shipped
from tiergate.config import OodConfig, RouterConfig
from tiergate.errors import ConfigError
from tiergate.routing.base import RouteDecision, Signals
from tiergate.routing.features import FEATURE_NAMES, request_features
from tiergate.routing.simple import rules_score
from tiergate.types import ChatRequest, Tier

Scores: TypeAlias = npt.NDArray[np.float64]
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

FORMAT = "tiergate-learned-router"
FORMAT_VERSION = 1
META_FILE = "learned.json"
WEIGHTS_FILE = "learned.npz"
#: The head's output is ``sigmoid(GAIN_SCALE x predicted gain)``.
GAIN_SCALE = 4.0
_NON_ASCII = FEATURE_NAMES.index("non_ascii_ratio")


def design(embeddings: FloatArray, features: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    """The head's input: the embedding and the standardised features, side by side."""
    feats = (np.asarray(features, dtype=np.float32) - mean) / std
    return np.concatenate([np.asarray(embeddings, dtype=np.float32), feats], axis=1)


def knn_distance(queries: FloatArray, reference: FloatArray, k: int) -> npt.NDArray[np.float64]:
    """1 - the mean cosine similarity of each (unit) query to its ``k`` nearest (unit) reference vectors."""
    sims = np.asarray(queries, dtype=np.float32) @ np.asarray(reference, dtype=np.float32).T
    k = min(k, sims.shape[1])
    top = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k :]
    return np.asarray(1.0 - top.mean(axis=1), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LearnedModel:
    """The artifact: metadata and the head's weights.

    The head is ``layers`` weight/bias pairs (``w0``, ``b0``, ...; ReLU between them, a sigmoid on the
    last) over :func:`design` of the embedding and the features (``feature_mean``, ``feature_std``).
    Optional parts: ``ood_reference`` (unit training vectors, float16) with ``meta["ood"]`` (``k``,
    ``threshold``); ``rules_quantiles`` (the rules router's scores on the calibration set);
    ``calibration_quality`` (quality / strong-only quality at strong shares 0, 0.01, ... 1 on that set).
    """

    meta: dict[str, Any]
    arrays: dict[str, npt.NDArray[np.float32]]

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        """Load ``learned.json`` and ``learned.npz`` from a folder (or from the path of either file)."""
        meta, arrays = read_folder(path, META_FILE, WEIGHTS_FILE, what="router.artifact", train="tiergate router train")
        model = cls.from_parts(meta, arrays, where=str(path))
        expected = meta.get("weights_sha256")
        if expected is not None:
            folder = Path(path).parent if Path(path).suffix in {".json", ".npz"} else Path(path)
            got = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
            if got != expected:
                raise ConfigError(f"router.artifact: {folder} holds weights of another training (sha256 mismatch)")
        return model

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
        if "ood" in meta:
            needed.add("ood_reference")
        missing = sorted(needed - set(arrays))
        if layers < 1 or missing or "threshold" not in meta.get("calibration", {}):
            raise ConfigError(f"{where}: incomplete artifact (missing {', '.join(missing) or 'head or calibration'})")
        return cls(meta=meta, arrays={k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})

    def save(self, folder: str | Path) -> Path:
        """Write the two files; the weights first and the metadata (with the weights' sha256) last, each by an
        atomic rename, so a gateway watching the folder never reads a half-written pair."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = dict(self.arrays)
        if "ood_reference" in arrays:
            arrays["ood_reference"] = np.asarray(arrays["ood_reference"], dtype=np.float16)
        tmp = out / f".{WEIGHTS_FILE}.{os.getpid()}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, out / WEIGHTS_FILE)
        meta = {**self.meta, "weights_sha256": digest}
        tmp_meta = out / f".{META_FILE}.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", "utf-8")
        os.replace(tmp_meta, out / META_FILE)
        return out

    @property
    def threshold(self) -> float:
        return float(self.meta["calibration"]["threshold"])

    @property
    def strong_share(self) -> float | None:
        """The share of the calibration set the artifact's own threshold sends to the strong model."""
        share = self.meta["calibration"].get("strong_share")
        return None if share is None else float(share)

    def logits(self, embeddings: FloatArray, features: FloatArray) -> Scores:
        """The head's output before the sigmoid (``GAIN_SCALE`` x the predicted gain for a ridge head)."""
        a = self.arrays
        h = design(embeddings, features, a["feature_mean"], a["feature_std"])
        layers = int(self.meta["head"]["layers"])
        for i in range(layers):
            h = h @ a[f"w{i}"] + a[f"b{i}"]
            if i < layers - 1:
                h = np.maximum(h, 0.0)
        return np.asarray(h[:, 0], dtype=np.float64)

    def predict(self, embeddings: FloatArray, features: FloatArray) -> Scores:
        """Scores in [0, 1] for ``(n, 384)`` embeddings and ``(n, len(FEATURE_NAMES))`` features."""
        return 1.0 / (1.0 + np.exp(-self.logits(embeddings, features)))

    def threshold_for_share(self, strong_share: float) -> float:
        """The threshold that sends ``strong_share`` of the calibration set's prompts to strong."""
        quantiles = self.arrays["calibration_quantiles"].astype(np.float64)
        levels = np.linspace(0.0, 1.0, quantiles.size)
        return float(np.interp(1.0 - strong_share, levels, quantiles))

    def share_for_quality(self, fraction: float) -> float | None:
        """The smallest strong share whose quality on the calibration set reaches ``fraction`` x strong-only
        quality (``None`` when the artifact has no quality curve)."""
        curve = self.arrays.get("calibration_quality")
        if curve is None:
            return None
        reached = np.flatnonzero(curve.astype(np.float64) >= fraction - 1e-9)
        return float(reached[0] / (curve.size - 1)) if reached.size else 1.0

    def ood_distance(self, embedding: FloatArray) -> float | None:
        """The prompt's distance to the training vectors (``None`` when the artifact carries none)."""
        reference = self.arrays.get("ood_reference")
        if reference is None:
            return None
        return float(knn_distance(np.asarray(embedding).reshape(1, -1), reference, int(self.meta["ood"]["k"]))[0])

    def rules_percentile(self, score: float) -> float | None:
        """The share of the calibration set whose rules score is at or under ``score``."""
        quantiles = self.arrays.get("rules_quantiles")
        if quantiles is None:
            return None
        ordered = quantiles.astype(np.float64)
        return float(np.searchsorted(ordered, score + 1e-12, side="right") / ordered.size)


class LearnedRouter:
    """Implements :class:`~tiergate.routing.base.Router`; reads ``signals.embedding``."""

    kind = "learned"
    needs_embedding = True

    def __init__(self, model: LearnedModel, threshold: float | None = None, config: RouterConfig | None = None) -> None:
        self.model = model
        self.threshold = model.threshold if threshold is None else threshold
        config = config or RouterConfig()
        self.ood: OodConfig = config.ood
        self.strong_share = config.strong_share if config.strong_share is not None else model.strong_share
        ood_meta = model.meta.get("ood")
        self.ood_threshold: float | None = None
        if self.ood.enabled and ood_meta is not None:
            self.ood_threshold = self.ood.threshold if self.ood.threshold is not None else float(ood_meta["threshold"])
        #: Where the artifact was read from (``None``: the shipped one).
        self.source: str | None = config.artifact

    @classmethod
    def from_config(cls, config: RouterConfig) -> LearnedRouter:
        model = LearnedModel.load(config.artifact) if config.artifact else LearnedModel.default()
        return cls.with_model(model, config)

    @classmethod
    def with_model(cls, model: LearnedModel, config: RouterConfig) -> LearnedRouter:
        """The router over ``model``, its threshold from ``config`` as :meth:`from_config` sets it."""
        if config.threshold is not None:
            return cls(model, config.threshold, config)
        if config.strong_share is not None:
            return cls(model, model.threshold_for_share(config.strong_share), config)
        return cls(model, None, config)

    @classmethod
    def default(cls) -> LearnedRouter:
        return cls(LearnedModel.default())

    def score(self, request: ChatRequest, signals: Signals) -> float:
        if signals.embedding is None:
            raise ValueError("the learned router needs signals.embedding (run the encoder first)")
        features = request_features(request)[None, :]
        return float(self.model.predict(signals.embedding.reshape(1, -1), features)[0])

    def threshold_for_quality(self, fraction: float) -> float | None:
        """The threshold that keeps ``fraction`` x strong-only quality on the calibration set (``None``: the
        artifact has no quality curve)."""
        share = self.model.share_for_quality(fraction)
        return None if share is None else self.model.threshold_for_share(share)

    def decide(self, request: ChatRequest, signals: Signals, threshold: float | None = None) -> RouteDecision:
        """The learned decision, or the fallback where the prompt is out of the training data's reach."""
        if signals.embedding is None:
            raise ValueError("the learned router needs signals.embedding (run the encoder first)")
        features = request_features(request)
        threshold = self.threshold if threshold is None else threshold
        distance = self.model.ood_distance(signals.embedding) if self.ood_threshold is not None else None
        why = None
        if self.ood.enabled and features[_NON_ASCII] > self.ood.non_ascii_ratio:
            why = "ood:script"
        elif distance is not None and self.ood_threshold is not None and distance > self.ood_threshold:
            why = f"ood:{distance:.2f}>{self.ood_threshold:.2f}"
        score = float(min(1.0, max(0.0, self.model.predict(signals.embedding.reshape(1, -1), features[None, :])[0])))
        if why is not None:
            fallback = self._fallback(request, why)
            if fallback is not None:
                return RouteDecision(fallback[0], score, threshold, fallback[1], ood=distance, fallback=True)
        tier = Tier.CLOSED if score >= threshold else Tier.OPEN
        sign = ">=" if tier is Tier.CLOSED else "<"
        return RouteDecision(tier, score, threshold, f"router:{score:.2f}{sign}{threshold:.2f}", ood=distance)

    def _fallback(self, request: ChatRequest, why: str) -> tuple[Tier, str] | None:
        how = self.ood.fallback
        if how in ("open", "closed"):
            return Tier(how), f"{why}->{how}"
        share = self.strong_share
        pct = self.model.rules_percentile(rules_score(request))
        if pct is None or share is None:  # an artifact without the rules' quantiles: the learned score stands
            return None
        cut = 1.0 - share
        tier = Tier.CLOSED if pct > cut else Tier.OPEN
        return tier, f"{why}->rules:{pct:.2f}{'>' if tier is Tier.CLOSED else '<='}{cut:.2f}"
