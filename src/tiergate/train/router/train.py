"""Training the learned router on routing outcomes (``data/routing/SOURCES.md`` or the ledger), with numpy alone.

The target is the strong model's gain on a prompt, ``strong - weak`` (in {-1, 0, 1} for right/wrong outcomes,
in [-1, 1] for judged pairs). The head is one ridge regression on :func:`design`: the sentence vector and the
generic text statistics of :data:`HEAD_FEATURES` (length, numbers, maths, code, script, the conversation's
shape), standardised on the training rows. The features that describe one benchmark's format (answer options,
word-problem cues) get weight 0: they fitted the surface of the two shared benchmarks and did not carry to
traffic unlike them (issue 14; ``docs/benchmarks-routing.md`` has the leave-one-benchmark-out figures).

The ridge penalty is chosen on the training rows only, by the **worst** inner fold: leave-one-benchmark-out
when the training rows hold two benchmarks or more, plus 3 folds of whole task groups; the APGR of each held-out
benchmark counts on its own, and the penalty whose worst inner APGR is highest wins (ties: the larger penalty).

A seeded share of the task groups (whole MMLU subjects; buckets of GSM8K problems) is held out of training:
the threshold is calibrated on it and its metrics are recorded in the artifact, with a small check subset that
tests re-score. The artifact also carries what the router needs to say "I do not know" at serving time
(:mod:`tiergate.routing.learned`): a seeded sample of the training vectors and the 0.99 quantile of the training
rows' distance to the sample's vectors of *other* groups (``ood``), and the quantiles of the rules router's score
on the calibration set, for the fallback. Same data and seed give the same weights bit for bit on one machine,
and scores within the artifact's recorded tolerance (1e-3) elsewhere (BLAS and onnxruntime kernels differ by CPU).

With ``prior`` (an artifact, by default the shipped one), the head is fitted as a correction of the prior's
weights: ridge toward them instead of toward 0, so few rows move the router little and many move it far
(``tiergate router train --from-ledger``; the shipped data enter as the model trained on them).

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
from tiergate.routing.learned import FORMAT, FORMAT_VERSION, GAIN_SCALE, LearnedModel, design
from tiergate.routing.simple import rules_score
from tiergate.signals.encoder import MAX_TOKENS, MODEL_ID
from tiergate.train.jsonl import DataError as DataError
from tiergate.train.jsonl import prompt_row
from tiergate.train.router.calibrate import calibrate
from tiergate.train.router.metrics import apgr, evaluate, quality_at, quality_curve
from tiergate.types import ChatRequest, Message

#: The features the head reads: generic statistics of any prompt. The rest of ``FEATURE_NAMES`` (answer
#: options, word-problem cues) describe one benchmark's format and get weight 0.
#: Benchmark-format features (answer options, the word-problem cues): not read by the head.
FORMAT_FEATURES: frozenset[str] = frozenset({"choices", "word_problem", *WORD_PROBLEM_FEATURES})
HEAD_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in FORMAT_FEATURES)
#: Ridge penalties tried, by the worst inner fold (:func:`select_alpha`).
ALPHAS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
INNER_GROUP_FOLDS = 3
#: A held-out benchmark with fewer rows than this in an inner fold is not scored there (too noisy).
MIN_FOLD_ROWS = 30
HOLDOUT_SHARE = 0.15
GROUP_BUCKETS = 10
CHECK_ROWS = 48
QUALITY_TARGET = 0.95
#: Out-of-distribution measure: mean distance to the k nearest of a seeded sample of the training vectors.
OOD_K = 10
OOD_QUANTILE = 0.99
OOD_REFERENCE_ROWS = 2048
#: Strong shares at which the calibration set's quality is recorded (the capacity-aware threshold's floor).
CURVE_POINTS = 101


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Prompts and both models' outcomes. Rows from the ledger have no prompt text: ``features`` (and
    ``rules``, the rules router's score) were computed when the request was served, ``weights`` corrects for
    how likely the request was to be shadowed."""

    ids: list[str]
    tasks: list[str]
    prompts: list[str]
    weak: npt.NDArray[np.float64]
    strong: npt.NDArray[np.float64]
    weak_model: str
    strong_model: str
    files: list[dict[str, Any]] = field(default_factory=list)
    features: npt.NDArray[np.float32] | None = None
    rules: npt.NDArray[np.float64] | None = None
    weights: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | npt.NDArray[np.intp]) -> Outcomes:
        idx = list(map(int, index))
        return Outcomes(
            ids=[self.ids[i] for i in idx],
            tasks=[self.tasks[i] for i in idx],
            prompts=[self.prompts[i] for i in idx] if self.prompts else [],
            weak=self.weak[idx],
            strong=self.strong[idx],
            weak_model=self.weak_model,
            strong_model=self.strong_model,
            files=self.files,
            features=None if self.features is None else self.features[idx],
            rules=None if self.rules is None else self.rules[idx],
            weights=None if self.weights is None else self.weights[idx],
        )

    @property
    def families(self) -> list[str]:
        """The benchmark of each prompt: the task up to its first ``/`` (``mmlu/anatomy`` -> ``mmlu``)."""
        return [t.split("/", 1)[0] for t in self.tasks]

    @property
    def gain(self) -> npt.NDArray[np.float64]:
        return self.strong - self.weak

    def feature_matrix(self) -> npt.NDArray[np.float32]:
        return self.features if self.features is not None else batch_features(self.prompts)

    def rules_scores(self) -> npt.NDArray[np.float64]:
        if self.rules is not None:
            return self.rules
        requests = (ChatRequest(model="auto", messages=[Message.text("user", p)]) for p in self.prompts)
        return np.array([rules_score(r) for r in requests])


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


def head_mask() -> npt.NDArray[np.bool_]:
    """Which of ``FEATURE_NAMES`` the head reads (:data:`HEAD_FEATURES`)."""
    return np.array([name in HEAD_FEATURES for name in FEATURE_NAMES])


def fit_gain_head(
    embeddings: npt.NDArray[Any],
    features: npt.NDArray[Any],
    gain: npt.NDArray[Any],
    alpha: float,
    *,
    weights: npt.NDArray[Any] | None = None,
    prior: LearnedModel | None = None,
) -> dict[str, Any]:
    """The head's arrays: ridge regression of ``gain`` on the embedding and the :data:`HEAD_FEATURES`.

    Without ``prior`` the features are standardised on these rows (a feature constant here gets std 1 and
    weight 0) and the penalty pulls the weights toward 0; with it, the prior's standardisation is kept and the
    penalty pulls toward the prior's weights (the fit is the ridge of the prior's residuals)."""
    features = np.asarray(features, dtype=np.float32)
    use = head_mask()
    if prior is None:
        mean = np.zeros(len(FEATURE_NAMES), np.float32)
        std = np.ones(len(FEATURE_NAMES), np.float32)
        mean[use] = features[:, use].mean(axis=0)
        std[use] = features[:, use].std(axis=0)
        std[std < 1e-6] = 1.0
        base_coef, base_intercept = None, 0.0
        base = np.zeros(len(gain))
    else:
        if int(prior.meta["head"]["layers"]) != 1:
            raise DataError("a prior must be a one-layer (linear) router")
        mean, std = prior.arrays["feature_mean"].copy(), prior.arrays["feature_std"].copy()
        base_coef = prior.arrays["w0"][:, 0].astype(np.float64) / GAIN_SCALE
        base_intercept = float(prior.arrays["b0"][0]) / GAIN_SCALE
        base = prior.logits(embeddings, features) / GAIN_SCALE
    x = design(embeddings, features, mean, std)
    dim = x.shape[1] - len(FEATURE_NAMES)
    columns = np.r_[np.ones(dim, bool), use]
    coef_used, intercept = fit_ridge(x[:, columns], np.asarray(gain, np.float64) - base, alpha, weights)
    coef = np.zeros(x.shape[1])
    coef[columns] = coef_used
    if base_coef is not None:
        coef, intercept = coef + base_coef, intercept + base_intercept
    return {
        "feature_mean": mean,
        "feature_std": std,
        "w0": (GAIN_SCALE * coef).astype(np.float32)[:, None],
        "b0": np.array([GAIN_SCALE * intercept], dtype=np.float32),
    }


def head_meta(alpha: float | None = None) -> dict[str, Any]:
    """The metadata that says how to run the head (the rest of an artifact's metadata is provenance)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "features": list(FEATURE_NAMES),
        "head": {
            "kind": "ridge on the gain",
            "layers": 1,
            "alpha": alpha,
            "features_used": list(HEAD_FEATURES),
            "target": "strong - weak quality",
            "output": f"sigmoid({GAIN_SCALE:g} x predicted gain)",
        },
    }


def head_model(arrays: dict[str, Any], alpha: float | None = None) -> LearnedModel:
    """A model of the head alone (threshold 0.5, no calibration), to score with."""
    meta = {**head_meta(alpha), "calibration": {"threshold": 0.5}}
    return LearnedModel.from_parts(meta, {**arrays, "calibration_quantiles": np.zeros(2, np.float32)})


def inner_splits(
    families: Sequence[str], row_groups: Sequence[str], seed: int, k: int = INNER_GROUP_FOLDS
) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """(train, test) index pairs over the given rows: leave-one-benchmark-out when there are two benchmarks or
    more, then ``k`` folds of whole groups (each benchmark's groups spread over the ``k`` folds)."""
    fam, grp = np.asarray(families), np.asarray(row_groups)
    names = sorted(set(fam.tolist()))
    out = []
    if len(names) >= 2:
        out += [(np.flatnonzero(fam != f), np.flatnonzero(fam == f)) for f in names]
    rng = np.random.default_rng(seed + 1)
    fold = np.zeros(len(fam), int)
    for f in names:
        members = sorted(set(grp[fam == f].tolist()))
        for i, g in enumerate(rng.permutation(members)):
            fold[grp == g] = i % k
    out += [(np.flatnonzero(fold != j), np.flatnonzero(fold == j)) for j in range(k) if (fold == j).any()]
    return [(tr, te) for tr, te in out if tr.size and te.size]


def fold_apgrs(
    scores: npt.NDArray[Any], weak: npt.NDArray[Any], strong: npt.NDArray[Any], families: Sequence[str], min_rows: int
) -> list[float]:
    """APGR of ``scores`` per benchmark present (with ``min_rows`` rows or more and a quality gap)."""
    fam = np.asarray(families)
    out = []
    for f in sorted(set(fam.tolist())):
        m = fam == f
        if m.sum() >= min_rows and strong[m].mean() != weak[m].mean():
            out.append(apgr(quality_curve(scores[m], weak[m], strong[m])))
    return out


def select_alpha(
    embeddings: npt.NDArray[Any],
    features: npt.NDArray[Any],
    data: Outcomes,
    *,
    seed: int = 0,
    alphas: Sequence[float] = ALPHAS,
    prior: LearnedModel | None = None,
    min_rows: int = MIN_FOLD_ROWS,
) -> tuple[float, dict[str, float]]:
    """The penalty with the best worst inner-fold APGR on these rows (ties: the larger penalty), and the worst
    inner APGR of each penalty tried."""
    splits = inner_splits(data.families, groups(data), seed)
    fam = np.asarray(data.families)
    gain, weights = data.gain, data.weights
    table: dict[str, float] = {}
    for alpha in alphas:
        worst: list[float] = []
        for tr, te in splits:
            row_weights = None if weights is None else weights[tr]
            head = fit_gain_head(embeddings[tr], features[tr], gain[tr], alpha, weights=row_weights, prior=prior)
            scores = head_model(head).logits(embeddings[te], features[te])
            worst += fold_apgrs(scores, data.weak[te], data.strong[te], list(fam[te]), min_rows)
        table[f"{alpha:g}"] = min(worst) if worst else float("nan")
    scored = [a for a in alphas if not np.isnan(table[f"{a:g}"])]
    if not scored:
        return max(alphas), table
    best = max(table[f"{a:g}"] for a in scored)
    return max(a for a in scored if table[f"{a:g}"] >= best - 1e-12), table


def ood_reference(
    embeddings: npt.NDArray[Any],
    row_groups: Sequence[str],
    seed: int,
    rows: int = OOD_REFERENCE_ROWS,
    extra: npt.NDArray[Any] | None = None,
) -> tuple[npt.NDArray[np.intp], float]:
    """A seeded sample of the training rows and the distance threshold measured against it: the
    :data:`OOD_QUANTILE` quantile of each training row's :data:`OOD_K`-nearest distance to the sample's rows of
    other groups ("farther than a new group of the same traffic"). ``extra``: reference vectors kept besides the
    sample (a prior's: a group of their own), the threshold measured against both."""
    n = len(embeddings)
    sample = np.sort(np.random.default_rng(seed + 2).permutation(n)[: min(rows, n)])
    reference = np.asarray(embeddings[sample], dtype=np.float16).astype(np.float32)  # as the artifact stores it
    ref_groups = np.asarray(row_groups, dtype=object)[sample]
    if extra is not None:
        reference = np.concatenate([np.asarray(extra, dtype=np.float32), reference])
        ref_groups = np.concatenate([np.full(len(extra), "\x00prior", dtype=object), ref_groups])
    grp = np.asarray(row_groups, dtype=object)
    distances = np.empty(n)
    for start in range(0, n, 1024):
        block = slice(start, min(n, start + 1024))
        sims = np.asarray(embeddings[block], dtype=np.float32) @ reference.T
        sims[grp[block][:, None] == ref_groups[None, :]] = -np.inf
        k = min(OOD_K, max(1, int(np.isfinite(sims).sum(axis=1).min())))
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k :]
        top[~np.isfinite(top)] = 0.0  # a row whose group fills the sample: as far as can be
        distances[block] = 1.0 - top.mean(axis=1)
    return sample, float(np.quantile(distances, OOD_QUANTILE))


def _metrics_by_family(data: Outcomes, scores: npt.NDArray[np.float64]) -> dict[str, dict[str, float]]:
    out = {}
    families = np.array(data.families)
    for family in [*sorted(set(data.families)), "all"]:
        mask = np.ones(len(data), bool) if family == "all" else families == family
        if mask.sum() >= 2 and data.strong[mask].mean() != data.weak[mask].mean():
            out[family] = evaluate(scores[mask], data.weak[mask], data.strong[mask]).as_dict()
    return out


def quality_fractions(scores: npt.NDArray[Any], weak: npt.NDArray[Any], strong: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Quality / strong-only quality at strong shares 0, 0.01, ... 1 (:data:`CURVE_POINTS`)."""
    curve = quality_curve(scores, weak, strong)
    shares = np.linspace(0.0, 1.0, CURVE_POINTS)
    strong_only = float(np.mean(strong))
    values = [quality_at(curve, s) / strong_only if strong_only else 1.0 for s in shares]
    return np.asarray(values, dtype=np.float32)


def train_router(
    data: Outcomes,
    embeddings: npt.NDArray[np.float32],
    *,
    seed: int = 0,
    holdout_share: float = HOLDOUT_SHARE,
    quality: float = QUALITY_TARGET,
    alphas: Sequence[float] = ALPHAS,
    prior: LearnedModel | None = None,
    holdout: npt.NDArray[np.bool_] | None = None,
    provenance: dict[str, Any] | None = None,
) -> LearnedModel:
    """Choose the penalty and fit the head on all but the held-out rows, calibrate on those, record what it
    yields there, and sample the training vectors for the out-of-distribution check.

    ``holdout``: the rows to hold out (default: a seeded ``holdout_share`` of each benchmark's groups)."""
    if embeddings.shape[0] != len(data):
        raise ValueError("one embedding per prompt is needed")
    features = data.feature_matrix()
    if holdout is not None:
        held = np.asarray(holdout, bool)
    else:
        held = holdout_mask(data, seed, holdout_share) if holdout_share > 0 else np.zeros(len(data), bool)
    train = ~held
    if train.sum() < 10:
        raise DataError("too few prompts to train on (need at least 10 outside the held-out rows)")
    rows = np.flatnonzero(train)
    fit_data = data.subset(rows)
    alpha, search = select_alpha(embeddings[train], features[train], fit_data, seed=seed, alphas=alphas, prior=prior)
    weights = None if data.weights is None else data.weights[train]
    arrays = fit_gain_head(embeddings[train], features[train], data.gain[train], alpha, weights=weights, prior=prior)
    meta: dict[str, Any] = {
        **head_meta(alpha),
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
            **(provenance or {}),
        },
        "alpha_search": {"criterion": "worst inner-fold APGR", "worst_apgr": search},
        "tolerance": {"scores": 1e-3, "metrics": 0.02},
    }
    if prior is not None:
        meta["prior"] = {"created": prior.meta.get("created"), "weights_sha256": prior.meta.get("weights_sha256")}
    model = head_model(arrays, alpha)
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
    extra = None if prior is None else prior.arrays.get("ood_reference")
    room = 2 * OOD_REFERENCE_ROWS - min(OOD_REFERENCE_ROWS, int(train.sum()))
    if extra is not None and len(extra) > room:  # retrained again and again: the reference stays bounded
        extra = extra[np.sort(np.random.default_rng(seed + 3).permutation(len(extra))[:room])]
    sample, distance = ood_reference(embeddings[train], groups(fit_data), seed, extra=extra)
    reference = np.asarray(embeddings[train][sample], dtype=np.float16)
    if prior is not None and extra is not None:  # what the prior knew stays known; its threshold is a floor
        reference = np.concatenate([np.asarray(extra, dtype=np.float16), reference])
        distance = max(distance, float(prior.meta["ood"]["threshold"]))
    meta["ood"] = {
        "k": OOD_K,
        "threshold": round(distance, 6),
        "quantile": OOD_QUANTILE,
        "reference_rows": len(reference),
        "measure": "1 - mean cosine similarity to the k nearest reference vectors; threshold: the quantile of the "
        "training rows' distance to reference rows of other groups" + (", or the prior's if higher" if prior else ""),
    }
    arrays["ood_reference"] = reference
    arrays["calibration_quantiles"] = np.quantile(cal_scores, np.linspace(0, 1, 1001)).astype(np.float32)
    arrays["rules_quantiles"] = np.quantile(cal.rules_scores(), np.linspace(0, 1, 1001)).astype(np.float32)
    if cal.strong.mean() > 0:
        arrays["calibration_quality"] = quality_fractions(cal_scores, cal.weak, cal.strong)
    return LearnedModel.from_parts(meta, arrays)
