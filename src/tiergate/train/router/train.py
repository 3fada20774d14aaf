"""Training the learned router on routing outcomes (``data/routing/SOURCES.md``), with numpy alone.

The target is the strong model's gain on a prompt, ``strong - weak`` (in {-1, 0, 1} for right/wrong
outcomes). The head is linear on :func:`design` and fitted in two stages, both ridge regression:

1. on the embedding and the general features, each benchmark's rows weighted by ``sqrt(largest / its
   size)`` so that a small benchmark (GSM8K beside MMLU) is not drowned out;
2. on the word problems among the training prompts (``word_problem``: a quantity and no answer options),
   the first stage's residuals on the ``wp_*`` features, which are 0 for every other prompt: a correction
   that applies to word problems alone and leaves every other score as the first stage made it.

The two stages fold into one weight vector; the score served is ``sigmoid(4 x predicted gain)``, so 0.5
means "no expected gain". Of the targets tried on held-out subjects (gain, P(strong right and weak wrong),
P(weak wrong)) and heads (ridge, logistic, kNN, MLP, gated and interacted variants), this gave the best APGR
on cross-validations of the shipped data itself (so its figures there are optimistic);
``docs/benchmarks-routing.md`` has them.

A seeded share of the task groups (whole MMLU subjects; buckets of GSM8K problems) is held out of training:
the threshold is calibrated on it and its metrics are recorded in the artifact, with a small check subset
that tests re-score. Same data and seed give the same weights bit for bit on one machine, and scores within
the artifact's recorded tolerance (1e-3) elsewhere (BLAS and onnxruntime kernels differ by CPU).

    data = load_outcomes(["mmlu.jsonl", "gsm8k.jsonl"])
    model = train_router(data, encoder.encode(data.prompts), seed=0)
    model.save("artifacts/")
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tiergate.routing.features import FEATURE_NAMES, WORD_PROBLEM_FEATURES, batch_features
from tiergate.routing.learned import FORMAT, FORMAT_VERSION, LearnedModel, design
from tiergate.signals.encoder import MAX_TOKENS, MODEL_ID
from tiergate.train.jsonl import DataError as DataError
from tiergate.train.jsonl import prompt_row
from tiergate.train.router.calibrate import calibrate
from tiergate.train.router.metrics import evaluate

RIDGE_ALPHA = 100.0
#: Ridge penalty of the word-problem correction (stage 2), on its standardised features.
CORRECTION_ALPHA = 100.0
#: Fewer word problems than this in training: no correction (its weights stay 0).
CORRECTION_MIN_ROWS = 20
GAIN_SCALE = 4.0
HOLDOUT_SHARE = 0.15
GROUP_BUCKETS = 10
CHECK_ROWS = 48
QUALITY_TARGET = 0.95


@dataclass(frozen=True, slots=True)
class Outcomes:
    ids: list[str]
    tasks: list[str]
    prompts: list[str]
    weak: npt.NDArray[np.float64]
    strong: npt.NDArray[np.float64]
    weak_model: str
    strong_model: str
    files: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | npt.NDArray[np.intp]) -> Outcomes:
        idx = list(map(int, index))
        return Outcomes(
            ids=[self.ids[i] for i in idx],
            tasks=[self.tasks[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            weak=self.weak[idx],
            strong=self.strong[idx],
            weak_model=self.weak_model,
            strong_model=self.strong_model,
            files=self.files,
        )

    @property
    def families(self) -> list[str]:
        """The benchmark of each prompt: the task up to its first ``/`` (``mmlu/anatomy`` -> ``mmlu``)."""
        return [t.split("/", 1)[0] for t in self.tasks]


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    rows = []
    for number, line in enumerate(raw.decode("utf-8").split("\n"), 1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        row = prompt_row(path, number, line)
        row.setdefault("id", f"{path.stem}/{number}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no prompts")
    return rows, hashlib.sha256(raw).hexdigest()


def load_prompts(path: str | Path) -> tuple[list[str], list[str]]:
    """Ids and prompts of a JSONL file (outcomes not needed), for scoring."""
    rows, _ = _read_jsonl(Path(path))
    return [str(r["id"]) for r in rows], [r["prompt"] for r in rows]


def load_outcomes(paths: Sequence[str | Path], *, weak: str | None = None, strong: str | None = None) -> Outcomes:
    """Read routing-outcome files; without names, the model with the higher mean score is the strong one."""
    rows: list[dict[str, Any]] = []
    files = []
    for p in map(Path, paths):
        got, digest = _read_jsonl(p)
        for number, row in enumerate(got, 1):
            if not isinstance(row.get("outcomes"), dict) or len(row["outcomes"]) < 2:
                raise DataError(f"{p}: row {number} ({row['id']}) needs 'outcomes' with two models' scores")
        rows += got
        files.append({"name": p.name, "sha256": digest, "rows": len(got)})
    models = sorted(set.intersection(*(set(r["outcomes"]) for r in rows)))
    if weak is None or strong is None:
        if len(models) != 2:
            raise DataError(f"name the weak and strong models: the rows share {len(models)} models ({models})")
        means = {m: float(np.mean([r["outcomes"][m] for r in rows])) for m in models}
        low, high = sorted(models, key=lambda m: means[m])
        weak, strong = weak or low, strong or high
    for name in (weak, strong):
        if name not in models:
            raise DataError(f"model {name!r} is not scored in every row; models: {', '.join(models)}")
    return Outcomes(
        ids=[str(r["id"]) for r in rows],
        tasks=[str(r.get("task", "")) for r in rows],
        prompts=[r["prompt"] for r in rows],
        weak=np.array([float(r["outcomes"][weak]) for r in rows]),
        strong=np.array([float(r["outcomes"][strong]) for r in rows]),
        weak_model=weak,
        strong_model=strong,
        files=files,
    )


def _bucket(text: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % buckets


def groups(data: Outcomes) -> list[str]:
    """Held-out units: a task with a subject (``mmlu/anatomy``) whole, else hash buckets of its prompts."""
    return [t if "/" in t else f"{t}#{_bucket(i, GROUP_BUCKETS)}" for t, i in zip(data.tasks, data.ids, strict=True)]


def holdout_mask(data: Outcomes, seed: int, share: float = HOLDOUT_SHARE) -> npt.NDArray[np.bool_]:
    """A seeded share of each benchmark's groups, held out of training."""
    rng = np.random.default_rng(seed)
    row_groups = np.array(groups(data))
    families = np.array(data.families)
    held: set[str] = set()
    for family in sorted(set(data.families)):
        names = sorted(set(row_groups[families == family]))
        if len(names) < 2:
            continue
        count = max(1, round(share * len(names)))
        held.update(names[i] for i in rng.permutation(len(names))[:count])
    return np.isin(row_groups, sorted(held))


def fit_ridge(
    x: npt.NDArray[Any], y: npt.NDArray[Any], alpha: float, weights: npt.NDArray[Any] | None = None
) -> tuple[npt.NDArray[np.float64], float]:
    """Ridge regression with an unpenalised intercept (closed form, float64), optionally row-weighted."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    w = np.ones(len(y64)) if weights is None else np.asarray(weights, dtype=np.float64)
    x_mean, y_mean = (w @ x64) / w.sum(), float(w @ y64 / w.sum())
    xc = x64 - x_mean
    gram = xc.T @ (xc * w[:, None]) + alpha * np.eye(xc.shape[1])
    coef = np.linalg.solve(gram, xc.T @ (w * (y64 - y_mean)))
    return coef, y_mean - float(x_mean @ coef)


def benchmark_weights(families: Sequence[str]) -> npt.NDArray[np.float64]:
    """Each row's weight: ``sqrt(rows of the largest benchmark / rows of its own)``."""
    names, inverse, counts = np.unique(np.asarray(families), return_inverse=True, return_counts=True)
    per = np.sqrt(counts.max() / counts) if names.size else counts.astype(np.float64)
    return np.asarray(per[inverse], dtype=np.float64)


def fit_head(
    embeddings: npt.NDArray[Any],
    features: npt.NDArray[Any],
    gain: npt.NDArray[Any],
    families: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The head's arrays: stage 1 on the embedding and general features, stage 2 on word problems."""
    names = list(FEATURE_NAMES)
    wp = np.array([n in WORD_PROBLEM_FEATURES for n in names])
    gate = names.index("word_problem")
    general = ~wp
    general[gate] = False
    features = np.asarray(features, dtype=np.float32)
    mean = np.zeros(len(names), np.float32)
    std = np.ones(len(names), np.float32)
    mean[general] = features[:, general].mean(axis=0)
    std[general] = features[:, general].std(axis=0)
    std[std < 1e-6] = 1.0  # constant in training (turns, tools here): such a feature then adds nothing
    weights = benchmark_weights(families) if families is not None else None
    x = design(embeddings, features, mean, std)
    dim = x.shape[1] - len(names)
    stage1 = np.r_[np.ones(dim, bool), general]
    coef1, intercept = fit_ridge(x[:, stage1], gain, RIDGE_ALPHA, weights)
    coef = np.zeros(x.shape[1])
    coef[stage1] = coef1
    rows = features[:, gate] > 0.5
    if rows.sum() >= CORRECTION_MIN_ROWS:
        # Stage 2 on the residuals of the word problems, its features standardised on those rows; folded into
        # the linear head as weights on (feature / std) and on the word_problem indicator (mean 0, std 1).
        cues = features[rows][:, wp].astype(np.float64)
        cue_mean, cue_std = cues.mean(axis=0), cues.std(axis=0)
        cue_std[cue_std < 1e-6] = 1.0
        residual = gain[rows] - (x[rows] @ coef + intercept)
        coef2, intercept2 = fit_ridge((cues - cue_mean) / cue_std, residual, CORRECTION_ALPHA)
        std[wp] = cue_std.astype(np.float32)
        coef[dim:][wp] = coef2
        coef[dim + gate] = intercept2 - float(coef2 @ (cue_mean / cue_std))
    return {
        "feature_mean": mean,
        "feature_std": std,
        "w0": (GAIN_SCALE * coef).astype(np.float32)[:, None],
        "b0": np.array([GAIN_SCALE * intercept], dtype=np.float32),
    }


def head_meta() -> dict[str, Any]:
    """The metadata that says how to run the head (the rest of an artifact's metadata is provenance)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "features": list(FEATURE_NAMES),
        "head": {
            "kind": "ridge + word-problem correction",
            "layers": 1,
            "alpha": RIDGE_ALPHA,
            "correction_alpha": CORRECTION_ALPHA,
            "row_weights": "sqrt(rows of the largest benchmark / rows of the prompt's benchmark)",
            "target": "strong - weak quality",
            "output": f"sigmoid({GAIN_SCALE:g} x predicted gain)",
        },
    }


def _metrics_by_family(data: Outcomes, scores: npt.NDArray[np.float64]) -> dict[str, dict[str, float]]:
    out = {}
    families = np.array(data.families)
    for family in [*sorted(set(data.families)), "all"]:
        mask = np.ones(len(data), bool) if family == "all" else families == family
        if mask.sum() >= 2 and data.strong[mask].mean() != data.weak[mask].mean():
            out[family] = evaluate(scores[mask], data.weak[mask], data.strong[mask]).as_dict()
    return out


def train_router(
    data: Outcomes,
    embeddings: npt.NDArray[np.float32],
    *,
    seed: int = 0,
    holdout_share: float = HOLDOUT_SHARE,
    quality: float = QUALITY_TARGET,
) -> LearnedModel:
    """Fit the head on all but the held-out groups, calibrate on those, record what it yields there."""
    if embeddings.shape[0] != len(data):
        raise ValueError("one embedding per prompt is needed")
    features = batch_features(data.prompts)
    held = holdout_mask(data, seed, holdout_share) if holdout_share > 0 else np.zeros(len(data), bool)
    train = ~held
    if train.sum() < 10:
        raise DataError("too few prompts to train on (need at least 10 outside the held-out groups)")
    families = [f for f, t in zip(data.families, train, strict=True) if t]
    arrays = fit_head(embeddings[train], features[train], data.strong[train] - data.weak[train], families)
    meta: dict[str, Any] = {
        **head_meta(),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "encoder": {"model": MODEL_ID, "max_tokens": MAX_TOKENS, "dim": int(embeddings.shape[1])},
        "seed": seed,
        "data": {
            "files": data.files,
            "weak_model": data.weak_model,
            "strong_model": data.strong_model,
            "rows": len(data),
            "train_rows": int(train.sum()),
            "holdout_rows": int(held.sum()),
            "holdout_groups": sorted(set(np.array(groups(data))[held].tolist())),
        },
        "tolerance": {"scores": 1e-3, "metrics": 0.02},
    }
    unset = {"calibration": {"threshold": 0.5}}  # until the held-out scores below calibrate it
    model = LearnedModel.from_parts({**meta, **unset}, {**arrays, "calibration_quantiles": np.zeros(2, np.float32)})
    cal_rows = held if held.any() else train
    cal = data.subset(np.flatnonzero(cal_rows))
    cal_scores = model.predict(embeddings[cal_rows], features[cal_rows])
    calibration = calibrate(cal_scores, cal.weak, cal.strong, quality=quality)
    meta["calibration"] = {**calibration.as_dict(), "set": "holdout" if held.any() else "training"}
    meta["holdout_metrics"] = _metrics_by_family(cal, cal_scores) if held.any() else {}
    check = np.sort(np.random.default_rng(seed).permutation(len(cal))[:CHECK_ROWS])
    meta["check"] = {
        "ids": [cal.ids[i] for i in check],
        "scores": [round(float(cal_scores[i]), 6) for i in check],
        "metrics": _metrics_by_family(cal.subset(check), cal_scores[check]).get("all"),
    }
    arrays["calibration_quantiles"] = np.quantile(cal_scores, np.linspace(0, 1, 1001)).astype(np.float32)
    return LearnedModel.from_parts(meta, arrays)
