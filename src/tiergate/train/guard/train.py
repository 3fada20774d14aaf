"""Training the guard on the safety corpus (:mod:`tiergate.train.guard.data`), with numpy (the hazard-category
head with scikit-learn: :mod:`tiergate.train.guard.categories`).

The head (:class:`Recipe`) is L2-regularised logistic regression (the recipe can blend it with the mean of
one-layer MLPs of different seeds, :mod:`tiergate.train.guard.fit`), on each window's embedding, standardised
:mod:`~tiergate.guard.features` and three nearest-neighbour features (:mod:`tiergate.guard.knn`: how close the
window is to the training windows that should be flagged, to those that should pass, and the difference),
read from a bank of at most :attr:`Recipe.bank_per_source` training windows of each source and label; while
fitting, a window's neighbours are taken outside its own group, as a held-out source's would be.
Every window of a text carries the text's label and a share of its weight,
and a text scores the highest of its windows. Weights balance the two classes, damp the larger sources (a
source weighs as the square root of its size) and give the contrast set a fixed share, so that 8,979 MMLU
questions do not drown 200 HarmBench behaviours or the contrast set's risky-looking but safe prompts.

Grouped cross-validation (:func:`cross_validate`) holds out one style group of sources at a time
(:data:`tiergate.train.guard.data.STYLES`), and the contrast set's ``kind`` groups in :data:`CONTRAST_FOLDS`
seeded folds of whole kinds; the threshold is calibrated on those out-of-fold scores to the false-positive
budgets on prompts written by others (:func:`tiergate.train.guard.evaluate.calibrate`: ordinary benign sources
<= 2%, look-alikes <= 10%; the contrast set is reported, never calibrates), and the figures at it are
recorded in the artifact. With ``--packages`` the corpus adds the sets of ``docs/guard-sources.md``.
The shipped head is then fitted on everything but a seeded :data:`HOLDOUT_SHARE` of each group's rows, on
which its own figures and a small check subset (re-scored by the tests) are recorded. Same data and seed
give the same weights bit for bit on one machine, scores within 1e-3 elsewhere.

    corpus = load_corpus("../shared/data", packages=True)
    guard, cv = train_guard(corpus, embed_windows(corpus.texts, encoder.encode_layers), seed=0)
    guard.save("artifacts/")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from tiergate.guard.features import FEATURE_NAMES, batch_features
from tiergate.guard.knn import KNN_FEATURES, bank_rows, knn_features
from tiergate.guard.model import FORMAT, FORMAT_VERSION, Guard, state_rows
from tiergate.signals.encoder import DIM, MAX_TOKENS, MODEL_ID, POOLED_LAYERS
from tiergate.train.guard import evaluate, metrics
from tiergate.train.guard.data import Corpus, DataError
from tiergate.train.guard.embed import WindowVectors, max_by_owner
from tiergate.train.guard.fit import fit_logistic, fit_mlp

CONTRAST_FOLDS = 5
HOLDOUT_SHARE = 0.05
CHECK_ROWS = 48
FPR_BENIGN = 0.02
FPR_CONTRAST = 0.10


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a head is fitted. ``mlps=0`` gives logistic regression alone, ``logistic_weight=0`` MLPs alone.

    The default is the shipped recipe: logistic regression alone. The blend with three MLPs costs about three
    times the training; on the shared data, held out by source, the logistic member alone matched it, and on the
    broadened data it was not run again (docs/benchmarks-guard.md)."""

    l2: float = 3.0
    contrast_share: float = 0.5
    logistic_weight: float = 0.5
    mlps: int = 0
    hidden: int = 64
    mlp_l2: float = 1e-3
    epochs: int = 40
    knn: int = 5
    bank_per_source: int = 400
    #: Encoder layers (of :data:`~tiergate.signals.encoder.POOLED_LAYERS`) whose pooled states the head reads
    #: besides the sentence vector.
    pooled_layers: tuple[int, ...] = POOLED_LAYERS

    def members(self, seed: int) -> list[dict[str, Any]]:
        """The head's members as the artifact records them (each MLP with its own seed)."""
        out: list[dict[str, Any]] = []
        if self.logistic_weight > 0 or self.mlps == 0:
            out.append({"kind": "logistic", "layers": 1, "l2": self.l2, "weight": self.logistic_weight or 1.0})
        share = (1.0 - self.logistic_weight) / self.mlps if self.mlps else 0.0
        for k in range(self.mlps if share > 0 else 0):
            out.append(
                {
                    "kind": "mlp",
                    "layers": 2,
                    "hidden": self.hidden,
                    "l2": self.mlp_l2,
                    "epochs": self.epochs,
                    "seed": seed + k,
                    "weight": round(share, 6),
                }
            )
        return out


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Out-of-fold scores of every text, the fold that held each out, and the threshold they calibrate."""

    scores: npt.NDArray[np.float64]
    folds: npt.NDArray[np.str_]
    threshold: float


def folds(corpus: Corpus, seed: int, contrast_folds: int = CONTRAST_FOLDS) -> npt.NDArray[np.str_]:
    """The held-out unit of each text: its group (a source), or for the contrast set a seeded fold of kinds."""
    kinds = sorted(set(corpus.groups[corpus.sources == "contrast"].tolist()))
    order = np.random.default_rng(seed).permutation(len(kinds))
    fold_of = {kinds[j]: f"contrast#{n % contrast_folds}" for n, j in enumerate(order)}
    return np.array([fold_of.get(g, g) for g in corpus.groups.tolist()], dtype=np.str_)


def text_weights(corpus: Corpus, contrast_share: float) -> npt.NDArray[np.float64]:
    """Each text's training weight; each class sums to half the texts (see the module docstring)."""
    w = np.zeros(len(corpus))
    contrast = corpus.sources == "contrast"
    for label in (0, 1):
        cls = corpus.labels == label
        public = cls & ~contrast
        for source in sorted(set(corpus.sources[public].tolist())):
            rows = public & (corpus.sources == source)
            w[rows] = np.sqrt(rows.sum()) / rows.sum()
        share = contrast_share if (cls & contrast).any() and public.any() else float((cls & contrast).any())
        if public.any():
            w[public] *= (1.0 - share) / w[public].sum()
        if (cls & contrast).any():
            w[cls & contrast] = share / (cls & contrast).sum()
    return w * len(corpus) / max(float(w.sum()), 1e-12)


def fit_head(
    corpus: Corpus, vectors: WindowVectors, rows: npt.NDArray[np.bool_], recipe: Recipe, seed: int
) -> dict[str, Any]:
    """The head's arrays, fitted on the windows of the texts where ``rows`` is true."""
    weights = text_weights(corpus.select(rows), recipe.contrast_share)
    index = np.flatnonzero(rows)
    sub = vectors.of(index)
    per_window = weights[sub.owner] / np.bincount(sub.owner, minlength=index.size)[sub.owner]
    feats = batch_features(sub.windows)
    y = corpus.labels[index][sub.owner]
    arrays: dict[str, Any] = {}
    if recipe.knn > 0:
        groups = corpus.groups[index][sub.owner]
        bank = bank_rows(corpus.sources[index][sub.owner], y, recipe.bank_per_source, seed)
        sentence = sub.vectors
        arrays["bank"] = sentence[bank].astype(np.float16)
        arrays["bank_labels"] = y[bank].astype(np.int8)
        near = knn_features(sentence, arrays["bank"], arrays["bank_labels"], recipe.knn, groups, groups[bank])
        feats = np.hstack([feats, near])
    mean, std = feats.mean(axis=0), feats.std(axis=0)
    std[std < 1e-6] = 1.0
    read = sub.matrix[:, state_rows(recipe.pooled_layers)]
    x = np.hstack([read.reshape(len(sub.owner), -1), (feats - mean) / std])
    arrays.update({"feature_mean": mean.astype(np.float32), "feature_std": std.astype(np.float32)})
    for j, member in enumerate(recipe.members(seed)):
        if member["kind"] == "logistic":
            fitted = fit_logistic(x, y, per_window, member["l2"])
        else:
            fitted = fit_mlp(
                x, y, per_window, hidden=member["hidden"], l2=member["l2"], epochs=member["epochs"], seed=member["seed"]
            )
        arrays.update({f"m{j}_{name}": value for name, value in fitted.items()})
    return arrays


def head_meta(max_windows: int, recipe: Recipe, seed: int) -> dict[str, Any]:
    """The metadata that says how to run the head (the rest of an artifact's metadata is provenance)."""
    head: dict[str, Any] = {"kind": "blend", "contrast_share": recipe.contrast_share, "members": recipe.members(seed)}
    if recipe.knn > 0:
        head["knn"] = {"k": recipe.knn, "features": list(KNN_FEATURES), "bank_per_source": recipe.bank_per_source}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "features": list(FEATURE_NAMES),
        "head": head,
        "windows": {"max_windows": max_windows, "window_tokens": MAX_TOKENS - 2, "pool": "max"},
        "encoder": {
            "model": MODEL_ID,
            "max_tokens": MAX_TOKENS,
            "dim": DIM,
            "pooled_layers": list(recipe.pooled_layers),
        },
    }


def score_texts(guard: Guard, vectors: WindowVectors, n: int) -> npt.NDArray[np.float64]:
    """Each text's score: the highest of its windows'."""
    return max_by_owner(guard.predict(vectors.matrix, vectors.windows), vectors.owner, n)


def _guard(arrays: dict[str, Any], max_windows: int, recipe: Recipe, seed: int) -> Guard:
    return Guard({**head_meta(max_windows, recipe, seed), "calibration": {"threshold": 0.5}}, arrays)


def cross_validate(
    corpus: Corpus, vectors: WindowVectors, *, seed: int = 0, recipe: Recipe | None = None
) -> CrossValidation:
    """Out-of-fold scores, one held-out unit (:func:`folds`) at a time, and the threshold they calibrate."""
    recipe = recipe or Recipe()
    held = folds(corpus, seed)
    scores = np.zeros(len(corpus))
    max_windows = vectors.max_windows
    for fold in dict.fromkeys(held.tolist()):
        test = held == fold
        if not (~test & (corpus.labels == 1)).any() or not (~test & (corpus.labels == 0)).any():
            raise DataError(f"holding out {fold} leaves one class only: cross-validation needs more sources")
        guard = _guard(fit_head(corpus, vectors, ~test, recipe, seed), max_windows, recipe, seed)
        index = np.flatnonzero(test)
        scores[index] = score_texts(guard, vectors.of(index), index.size)
    threshold = evaluate.calibrate(corpus, scores, fpr_benign=FPR_BENIGN, fpr_lookalike=FPR_CONTRAST)
    return CrossValidation(scores, held, threshold)


def holdout_mask(corpus: Corpus, seed: int, share: float = HOLDOUT_SHARE) -> npt.NDArray[np.bool_]:
    """A seeded ``share`` of each group's rows (at least one of a group of ten or more), kept out of training."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(corpus), dtype=bool)
    for group in sorted(set(corpus.groups.tolist())):
        rows = np.flatnonzero(corpus.groups == group)
        count = round(share * rows.size) if rows.size >= 10 else 0
        mask[rng.permutation(rows)[: max(count, 1 if rows.size >= 10 else 0)]] = True
    return mask


def _figures(corpus: Corpus, scores: npt.NDArray[np.float64], threshold: float) -> dict[str, Any]:
    return {
        "summary": {k: round(v, 4) for k, v in metrics.summary(corpus, scores, threshold).items()},
        "by_source": [r.as_dict() for r in metrics.by_source(corpus, scores, threshold)],
    }


def _worst(report: evaluate.Report) -> dict[str, Any]:
    """The worst held-out sources by others, as the goals read them."""
    return {
        name: {"source": source, "flagged": round(value, 4)}
        for name, (source, value) in (
            ("harmful", report.worst_harmful),
            ("jailbreak", report.worst_jailbreak),
            ("benign", report.worst_benign),
            ("lookalike", report.worst_lookalike),
        )
    } | {"contrast_fpr": round(report.contrast_fpr, 4)}


def train_guard(
    corpus: Corpus,
    vectors: WindowVectors,
    *,
    seed: int = 0,
    recipe: Recipe | None = None,
    cv: CrossValidation | None = None,
    with_categories: bool = True,
) -> tuple[Guard, CrossValidation]:
    """Cross-validate (unless ``cv`` is given), then fit the shipped head and, with ``with_categories``, the
    hazard-category head (:mod:`tiergate.train.guard.categories`); see the module docstring."""
    if vectors.owner.size == 0 or int(vectors.owner.max()) != len(corpus) - 1:
        raise ValueError("the window vectors must cover every text of the corpus")
    recipe = recipe or Recipe()
    cv = cv or cross_validate(corpus, vectors, seed=seed, recipe=recipe)
    held = holdout_mask(corpus, seed)
    max_windows = vectors.max_windows
    arrays = fit_head(corpus, vectors, ~held, recipe, seed)
    categories: dict[str, Any] = {}
    if with_categories:
        from tiergate.train.guard.categories import category_labels, fit_category_head

        labels = category_labels(corpus)
        head = fit_category_head(corpus, vectors, labels, ~held)
        arrays.update({"category_w": head["category_w"], "category_b": head["category_b"]})
        rows = labels[~held]
        categories = {
            "names": head["names"],
            "taxonomy": "MLCommons AILuminate v1.0 hazards, and jailbreak",
            "train_rows": {n: int((rows == n).sum()) for n in head["names"]},
        }
    index = np.flatnonzero(held)
    check = corpus.select(index)
    held_scores = score_texts(_guard(arrays, max_windows, recipe, seed), vectors.of(index), index.size)
    picked = np.sort(np.random.default_rng(seed).permutation(index.size)[:CHECK_ROWS])
    meta: dict[str, Any] = {
        **head_meta(max_windows, recipe, seed),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": seed,
        "data": {
            "files": list(corpus.files),
            "rows": len(corpus),
            "train_rows": int((~held).sum()),
            "holdout_rows": int(held.sum()),
        },
        "calibration": {
            "threshold": round(cv.threshold, 6),
            "set": "cross-validation by style group (out-of-fold scores); prompts written by others only",
            "fpr_benign_budget": FPR_BENIGN,
            "fpr_lookalike_budget": FPR_CONTRAST,
        },
        "cross_validation": {
            "folds": sorted(set(cv.folds.tolist())),
            **_figures(corpus, cv.scores, cv.threshold),
            "worst": _worst(evaluate.Report.of(corpus, cv.scores, cv.threshold)),
        },
        "holdout": _figures(check, held_scores, cv.threshold),
        "check": {
            "ids": [check.ids[i] for i in picked],
            "scores": [round(float(held_scores[i]), 6) for i in picked],
        },
        "tolerance": {"scores": 1e-3},
    }
    if categories:
        meta["categories"] = categories
    return Guard.from_parts(meta, arrays), cv
