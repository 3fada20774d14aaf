"""Shared pieces of the router research: data, folds, methods. Read-only use of /work/main/src.

Run everything with /work/main/.venv/bin/python under `nice -n 15` and OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

sys.path.insert(0, "/work/main/src")

from embed_cache import load  # noqa: E402
from tiergate.routing.features import FEATURE_NAMES, batch_features  # noqa: E402
from tiergate.routing.learned import LearnedModel  # noqa: E402
from tiergate.routing.metrics import apgr, evaluate, quality_curve  # noqa: E402
from tiergate.routing.train import fit_head, groups, head_meta  # noqa: E402

SEED = 0
FOLDS = 5  # MMLU subject folds, as benchmarks/routing_quality.py


@dataclass
class Ctx:
    prompts: list[str]
    x: np.ndarray  # (n, 384) L2-normalised MiniLM vectors
    feats: np.ndarray  # repo features (n, 23)
    weak: np.ndarray
    strong: np.ndarray
    fam: np.ndarray
    grp: np.ndarray
    ids: list[str]
    fold: np.ndarray  # repo fold of each row, assigned on the full data (before any rows are dropped)

    @property
    def gain(self) -> np.ndarray:
        return self.strong - self.weak


#: Variant "clean" drops MMLU high_school_mathematics: GPT-4 is scored 0.03 there (below the 0.25 of a
#: 4-choice guess, Mixtral 0.32), a grading defect in the source data, not a model outcome (EVAL.md).
DROPPED = {"asis": (), "clean": ("mmlu/high_school_mathematics",)}
VARIANT = os.environ.get("VARIANT", "asis")


def context(variant: str | None = None) -> Ctx:
    data, x = load()
    c = Ctx(
        prompts=data.prompts,
        x=x,
        feats=batch_features(data.prompts),
        weak=data.weak,
        strong=data.strong,
        fam=np.array(data.families),
        grp=np.array(groups(data)),
        ids=data.ids,
        fold=np.zeros(len(data), int),
    )
    c.fold = repo_folds(c)
    keep = ~np.isin(np.array(data.tasks), DROPPED[variant or VARIANT])
    if keep.all():
        return c
    k = np.flatnonzero(keep)
    return Ctx(
        prompts=[c.prompts[i] for i in k], x=c.x[k], feats=c.feats[k], weak=c.weak[k], strong=c.strong[k],
        fam=c.fam[k], grp=c.grp[k], ids=[c.ids[i] for i in k], fold=c.fold[k],
    )


def repo_folds(c: Ctx) -> np.ndarray:
    """Exactly benchmarks/routing_quality.py's fold assignment (whole subjects / GSM8K hash buckets)."""
    rng = np.random.default_rng(SEED)
    fold = np.zeros(len(c.fam), int)
    for family in sorted(set(c.fam)):
        names = sorted(set(c.grp[c.fam == family]))
        for i, g in enumerate(rng.permutation(names)):
            fold[c.grp == g] = i % FOLDS
    return fold


def outer_folds(c: Ctx) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, train index, test index). LOBO both ways, then 5 held-out MMLU subject groups (repo folds)."""
    mm, gs = c.fam == "mmlu", c.fam == "gsm8k"
    out = [
        ("LOBO mmlu->gsm8k", np.flatnonzero(mm), np.flatnonzero(gs)),
        ("LOBO gsm8k->mmlu", np.flatnonzero(gs), np.flatnonzero(mm)),
    ]
    fold = c.fold
    for k in range(FOLDS):
        out.append((f"MMLU subj fold {k}", np.flatnonzero(fold != k), np.flatnonzero((fold == k) & mm)))
    return out


def inner_splits(c: Ctx, tr: np.ndarray, k: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner folds on training rows only: leave-one-benchmark-out if the training rows hold >= 2 benchmarks,
    plus k folds of whole groups (subjects / GSM8K buckets), each benchmark's groups spread over the k folds.
    Each (train, test) test part is scored per benchmark (see `inner_score`)."""
    rng = np.random.default_rng(SEED + 1)
    fam, grp = c.fam[tr], c.grp[tr]
    fams = sorted(set(fam))
    out = []
    if len(fams) >= 2:
        for f in fams:
            out.append((tr[fam != f], tr[fam == f]))
    fold = np.zeros(len(tr), int)
    for f in fams:
        names = sorted(set(grp[fam == f]))
        for i, g in enumerate(rng.permutation(names)):
            fold[grp == g] = i % k
    for j in range(k):
        out.append((tr[fold != j], tr[fold == j]))
    return out


def fold_apgr(c: Ctx, idx: np.ndarray, s: np.ndarray, min_rows: int = 60) -> list[float]:
    """APGR of scores s on rows idx, per benchmark present (>= min_rows)."""
    res = []
    for f in sorted(set(c.fam[idx])):
        m = c.fam[idx] == f
        if m.sum() >= min_rows and c.strong[idx][m].mean() != c.weak[idx][m].mean():
            res.append(apgr(quality_curve(s[m], c.weak[idx][m], c.strong[idx][m])))
    return res


def select(c: Ctx, tr: np.ndarray, grid: list, fit: Callable, criterion: str = "worst") -> tuple[object, dict]:
    """Nested selection on training rows only: the grid point with the best worst inner fold (ties: first)."""
    table = {}
    splits = inner_splits(c, tr)
    for g in grid:
        vals = []
        for itr, ite in splits:
            vals += fold_apgr(c, ite, fit(itr, ite, g))
        table[repr(g)] = (min(vals), float(np.mean(vals)))
    key = 0 if criterion == "worst" else 1
    best = max(grid, key=lambda g: table[repr(g)][key])
    return best, table


def metrics(c: Ctx, te: np.ndarray, s: np.ndarray):
    return evaluate(s, c.weak[te], c.strong[te])


def bootstrap_diff(c: Ctx, te: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 300) -> tuple[float, float]:
    rng = np.random.default_rng(SEED)
    w, g = c.weak[te], c.strong[te]
    d = []
    for _ in range(n):
        i = rng.integers(0, te.size, te.size)
        if g[i].mean() == w[i].mean():
            continue
        d.append(apgr(quality_curve(a[i], w[i], g[i])) - apgr(quality_curve(b[i], w[i], g[i])))
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def knn_dist(xq: np.ndarray, xt: np.ndarray, k: int = 10, exclude_self: bool = False, chunk: int = 2048) -> np.ndarray:
    """Mean cosine distance (1 - cos) to the k nearest training vectors (vectors are L2-normalised)."""
    out = np.empty(len(xq))
    for s in range(0, len(xq), chunk):
        sims = xq[s : s + chunk] @ xt.T
        kk = k + 1 if exclude_self else k
        top = -np.partition(-sims, kk - 1, axis=1)[:, :kk]
        top = np.sort(top, axis=1)[:, ::-1]
        if exclude_self:
            top = top[:, 1:]
        out[s : s + chunk] = 1.0 - top.mean(1)
    return out


def shipped_recipe_scores(c: Ctx, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
    """The shipped recipe (tiergate.routing.train.fit_head) retrained on the training rows."""
    arrays = fit_head(c.x[tr], c.feats[tr], c.gain[tr], list(c.fam[tr]))
    meta = {**head_meta(), "calibration": {"threshold": 0.5}}
    arrays["calibration_quantiles"] = np.zeros(2, np.float32)
    return LearnedModel.from_parts(meta, arrays).predict(c.x[te], c.feats[te])


def shipped_artifact() -> LearnedModel:
    """Loaded as tiergate.routing.learned.LearnedRouter.default() does."""
    return LearnedModel.default()
