"""The routers compared in EVAL.md. Each method: fn(c, tr, te) -> (test scores, info dict).

Nothing here looks at the test rows' outcomes: nested choices use `common.select` on training rows only.
"""
from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from common import Ctx, knn_dist, select, shipped_artifact, shipped_recipe_scores

# The repo's RulesRouter (routing/simple.py) score on a single-turn prompt without tools.
_HARD = re.compile(
    r"```|\bdef |\bclass |\bprove\b|\bderive\b|\bstep[- ]by[- ]step\b|\banaly[sz]e\b|\bexplain why\b|\bdebug\b",
    re.IGNORECASE,
)


def rules_score(texts: list[str]) -> np.ndarray:
    return np.array([min(min(len(t) / 8000, 0.45) + (0.4 if _HARD.search(t) else 0.0), 1.0) for t in texts])


def loglen(c: Ctx, idx: np.ndarray) -> np.ndarray:
    return np.log1p(np.array([len(c.prompts[i]) for i in idx], dtype=float))


def target(c: Ctx, idx: np.ndarray, kind: str) -> np.ndarray:
    if kind == "gain>0":  # strong right and weak wrong
        return (c.gain[idx] > 0).astype(int)
    if kind == "weak wrong":
        return (c.weak[idx] < 0.5).astype(int)
    raise ValueError(kind)


# ---------------------------------------------------------------- baselines
def m_random(c, tr, te):
    return np.zeros(te.size), {}


def m_length(c, tr, te):
    return loglen(c, te), {}


def m_rules(c, tr, te):
    return rules_score([c.prompts[i] for i in te]), {}


def m_lr_vec(c, tr, te):
    """Repo baseline: logistic regression C=1 on the sentence vector, target strong right & weak wrong."""
    m = LogisticRegression(C=1.0, max_iter=3000).fit(c.x[tr], target(c, tr, "gain>0"))
    return m.decision_function(c.x[te]), {}


def knn_gain(c, tr, te, k=32, exclude_self=False):
    out = np.empty(te.size)
    g = c.gain[tr]
    for s in range(0, te.size, 2048):
        q = te[s : s + 2048]
        sims = c.x[q] @ c.x[tr].T
        if exclude_self:  # te is a subset of tr: drop the row itself
            pos = {r: j for j, r in enumerate(tr)}
            for a, r in enumerate(q):
                sims[a, pos[r]] = -np.inf
        idx = np.argpartition(-sims, k, axis=1)[:, :k]
        w = np.take_along_axis(sims, idx, 1).clip(0)
        out[s : s + 2048] = (w * g[idx]).sum(1) / (w.sum(1) + 1e-9)
    return out


def m_knn(c, tr, te):
    """Repo baseline: k=32 similarity-weighted mean gain."""
    return knn_gain(c, tr, te, 32), {}


def m_bow(c, tr, te):
    """Bag-of-words (TF-IDF unigrams, sublinear tf, min_df 2) logistic regression, C=1, untuned."""
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
    xt = vec.fit_transform([c.prompts[i] for i in tr])
    m = LogisticRegression(C=1.0, max_iter=3000).fit(xt, target(c, tr, "gain>0"))
    return m.decision_function(vec.transform([c.prompts[i] for i in te])), {}


def m_shipped_recipe(c, tr, te):
    return shipped_recipe_scores(c, tr, te), {}


def m_shipped_artifact(c, tr, te):
    """The shipped artifact as it is (trained on both files minus 9 groups: it has seen most test rows)."""
    a = shipped_artifact()
    return a.predict(c.x[te], c.feats[te]), {}


# ---------------------------------------------------------------- candidates
C_GRID = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
TARGETS = ["gain>0", "weak wrong"]


def design_vec(c, idx, with_len, len_stats=None):
    if not with_len:
        return c.x[idx], None
    ll = loglen(c, idx)
    mu, sd = len_stats if len_stats is not None else (ll.mean(), ll.std() + 1e-9)
    z = (ll - mu) / sd  # standardised on the training rows
    return np.c_[c.x[idx], z], (mu, sd)


def fit_lr(c, tr, cfg, with_len):
    C, tgt = cfg
    xtr, stats = design_vec(c, tr, with_len)
    m = LogisticRegression(C=C, max_iter=3000).fit(xtr, target(c, tr, tgt))
    return m, stats


def lr_scores(c, tr, te, cfg, with_len):
    m, stats = fit_lr(c, tr, cfg, with_len)
    return m.decision_function(design_vec(c, te, with_len, stats)[0])


GRID = [(C, t) for t in TARGETS for C in C_GRID]


def _nested_lr(c, tr, te, with_len):
    best, table = select(c, tr, GRID, lambda itr, ite, g: lr_scores(c, itr, ite, g, with_len))
    return lr_scores(c, tr, te, best, with_len), {"chosen": best, "inner": table}


def m_lr_nested(c, tr, te):
    """R1: LR on the sentence vector; C and target chosen by the worst inner fold (training rows only)."""
    return _nested_lr(c, tr, te, False)


def m_lr_len_nested(c, tr, te):
    """R2: R1 plus log prompt length (one standardised column)."""
    return _nested_lr(c, tr, te, True)


def zs(train_scores, scores):
    return (scores - train_scores.mean()) / (train_scores.std() + 1e-9)


K_GRID = [16, 64, 256]


def m_ensemble(c, tr, te):
    """R3: mean of z-scores (z against the training rows' own scores) of the nested LR (R1's choice), kNN mean
    gain (k nested) and log length."""
    best, _ = select(c, tr, GRID, lambda itr, ite, g: lr_scores(c, itr, ite, g, False))
    kbest, ktable = select(c, tr, K_GRID, lambda itr, ite, k: knn_gain(c, itr, ite, k))
    m, _ = fit_lr(c, tr, best, False)
    lr_tr, lr_te = m.decision_function(c.x[tr]), m.decision_function(c.x[te])
    kn_tr, kn_te = knn_gain(c, tr, tr, kbest, exclude_self=True), knn_gain(c, tr, te, kbest)
    ln_tr, ln_te = loglen(c, tr), loglen(c, te)
    s = (zs(lr_tr, lr_te) + zs(kn_tr, kn_te) + zs(ln_tr, ln_te)) / 3
    return s, {"chosen": best, "k": kbest, "k_inner": ktable}


def group_out_knn_dist(c, tr, k=10):
    """Each training row's mean cosine distance to its k nearest training rows of OTHER groups."""
    out = np.empty(tr.size)
    g = c.grp[tr]
    for s in range(0, tr.size, 1024):
        q = tr[s : s + 1024]
        sims = c.x[q] @ c.x[tr].T
        sims[c.grp[q][:, None] == g[None, :]] = -np.inf
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        out[s : s + 1024] = 1.0 - top.mean(1)
    return out


def pct(train_scores, scores):
    srt = np.sort(train_scores)
    return np.searchsorted(srt, scores, side="right") / srt.size


OOD_K = 10
OOD_Q = 0.99


def m_lr_len_ood(c, tr, te, base=None):
    """R4: R2 with the OOD fallback. A prompt whose kNN distance to the training vectors is above the
    OOD_Q quantile of the training rows' leave-group-out distance is scored by the rules router instead;
    both scores are mapped to their percentile among the training rows' scores so the two mix on one scale
    (in service: each gets its own threshold for the target strong share)."""
    s_te, info = base if base is not None else m_lr_len_nested(c, tr, te)
    m, stats = fit_lr(c, tr, info["chosen"], True)
    s_tr = m.decision_function(design_vec(c, tr, True, stats)[0])
    d_tr = group_out_knn_dist(c, tr, OOD_K)
    thr = float(np.quantile(d_tr, OOD_Q))
    d_te = knn_dist(c.x[te], c.x[tr], OOD_K)
    far = d_te > thr
    r_tr, r_te = rules_score([c.prompts[i] for i in tr]), rules_score([c.prompts[i] for i in te])
    s = np.where(far, pct(r_tr, r_te), pct(s_tr, s_te))
    return s, {**info, "ood_threshold": thr, "far_share": float(far.mean())}


METHODS = {
    "random": m_random,
    "prompt length": m_length,
    "rules router (fallback)": m_rules,
    "LR on sentence vector (C=1)": m_lr_vec,
    "kNN on sentence vector (k=32)": m_knn,
    "bag-of-words LR (C=1)": m_bow,
    "shipped recipe, retrained per fold": m_shipped_recipe,
    "shipped artifact as is (saw test rows)": m_shipped_artifact,
    "R1 LR vec, nested C/target": m_lr_nested,
    "R2 LR vec+len, nested C/target": m_lr_len_nested,
    "R3 ensemble LR+kNN+len (z-mean)": m_ensemble,
    "R4 R2 + OOD fallback to rules": m_lr_len_ood,
}
BASELINES = [
    "random",
    "prompt length",
    "rules router (fallback)",
    "LR on sentence vector (C=1)",
    "kNN on sentence vector (k=32)",
    "bag-of-words LR (C=1)",
]


# ---------------------------------------------------------------- candidates on generic text statistics
from common import FEATURE_NAMES  # noqa: E402

#: The repo's general text statistics (routing/features.py), without the format cues that are constant within
#: a benchmark (choices), the conversation shape (constant in this data) and the word-problem cues.
CONTENT = [
    "log_chars", "log_words", "mean_word_length", "digit_ratio", "log_numbers", "log_math_symbols", "log_latex",
    "code_lines", "non_ascii_ratio", "question_marks", "log_sentences", "log_lines",
]
CONTENT_IDX = [FEATURE_NAMES.index(n) for n in CONTENT]


def design_feats(c, idx, with_vec, stats=None):
    f = c.feats[idx][:, CONTENT_IDX].astype(np.float64)
    if stats is None:
        mu, sd = f.mean(0), f.std(0)
        sd[sd < 1e-6] = 1.0  # constant in training: the column is 0 and adds nothing
        stats = (mu, sd)
    z = (f - stats[0]) / stats[1]
    return (np.c_[c.x[idx], z] if with_vec else z), stats


def feat_lr_scores(c, tr, te, cfg, with_vec):
    C, tgt = cfg
    xtr, stats = design_feats(c, tr, with_vec)
    m = LogisticRegression(C=C, max_iter=5000).fit(xtr, target(c, tr, tgt))
    return m.decision_function(design_feats(c, te, with_vec, stats)[0])


def m_feat_lr(c, tr, te):
    """R5: LR on the 12 standardised generic text statistics alone; C/target nested."""
    best, table = select(c, tr, GRID, lambda itr, ite, g: feat_lr_scores(c, itr, ite, g, False))
    return feat_lr_scores(c, tr, te, best, False), {"chosen": best, "inner": table}


def m_vec_feat_lr(c, tr, te):
    """R6: LR on the sentence vector + the 12 standardised text statistics; C/target nested."""
    best, table = select(c, tr, GRID, lambda itr, ite, g: feat_lr_scores(c, itr, ite, g, True))
    return feat_lr_scores(c, tr, te, best, True), {"chosen": best, "inner": table}


METHODS["R5 LR on 12 text statistics, nested"] = m_feat_lr
METHODS["R6 LR vec + 12 text statistics, nested"] = m_vec_feat_lr


# ---------------------------------------------------------------- ridge on the gain (strong - weak), as the repo
from tiergate.routing.train import fit_ridge  # noqa: E402

A_GRID = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]


def ridge_scores(c, tr, te, alpha, with_vec):
    xtr, stats = design_feats(c, tr, with_vec)
    coef, b = fit_ridge(xtr, c.gain[tr], alpha)
    return design_feats(c, te, with_vec, stats)[0] @ coef + b


def m_ridge_vec_feat(c, tr, te):
    """R7: ridge regression of the gain (strong - weak, in {-1, 0, 1}) on the sentence vector + the 12
    standardised text statistics, no row weights; alpha nested."""
    best, table = select(c, tr, A_GRID, lambda itr, ite, a: ridge_scores(c, itr, ite, a, True))
    return ridge_scores(c, tr, te, best, True), {"chosen": best, "inner": table}


def m_ridge_feat(c, tr, te):
    """R8: ridge regression of the gain on the 12 standardised text statistics alone; alpha nested."""
    best, table = select(c, tr, A_GRID, lambda itr, ite, a: ridge_scores(c, itr, ite, a, False))
    return ridge_scores(c, tr, te, best, False), {"chosen": best, "inner": table}


METHODS["R7 ridge(gain) vec + 12 text statistics, nested"] = m_ridge_vec_feat
METHODS["R8 ridge(gain) 12 text statistics, nested"] = m_ridge_feat


def m_ridge_ood(c, tr, te, base=None):
    """R9: R7 with the OOD fallback (as R4): prompts farther from the training vectors than the 0.99 quantile
    of the training rows' leave-group-out kNN distance are scored by the rules router (percentile scale)."""
    s_te, info = base if base is not None else m_ridge_vec_feat(c, tr, te)
    s_tr = ridge_scores(c, tr, tr, info["chosen"], True)
    thr = float(np.quantile(group_out_knn_dist(c, tr, OOD_K), OOD_Q))
    far = knn_dist(c.x[te], c.x[tr], OOD_K) > thr
    r_tr, r_te = rules_score([c.prompts[i] for i in tr]), rules_score([c.prompts[i] for i in te])
    return np.where(far, pct(r_tr, r_te), pct(s_tr, s_te)), {**info, "ood_threshold": thr, "far_share": float(far.mean())}


def m_ridge_lr_mix(c, tr, te):
    """R10: mean of z-scores (against the training rows' own scores) of R7 (ridge on gain, vec + statistics)
    and R1 (LR on the vector), each with its own nested choice: a hedge toward the sentence-vector LR."""
    a, _ = select(c, tr, A_GRID, lambda itr, ite, a: ridge_scores(c, itr, ite, a, True))
    g, _ = select(c, tr, GRID, lambda itr, ite, g: lr_scores(c, itr, ite, g, False))
    r_tr, r_te = ridge_scores(c, tr, tr, a, True), ridge_scores(c, tr, te, a, True)
    l_tr, l_te = lr_scores(c, tr, tr, g, False), lr_scores(c, tr, te, g, False)
    return (zs(r_tr, r_te) + zs(l_tr, l_te)) / 2, {"chosen": (a, g)}


METHODS["R9 R7 + OOD fallback to rules"] = m_ridge_ood
METHODS["R10 z-mean of R7 and R1"] = m_ridge_lr_mix


def ridge_fe_scores(c, tr, te, alpha):
    """Ridge on the gain over vec + 12 statistics + one nearly unpenalised intercept column per training
    benchmark (a nuisance 'source' effect: it soaks up the benchmarks' different mean gains so that the
    content weights do not learn 'looks like GSM8K -> strong'); at scoring time the source columns are 0."""
    xtr, stats = design_feats(c, tr, True)
    fams = sorted(set(c.fam[tr]))
    if len(fams) > 1:
        oh = np.stack([(c.fam[tr] == f).astype(float) for f in fams[1:]], 1) * 100.0  # ~unpenalised
        xtr = np.c_[xtr, oh]
    coef, b = fit_ridge(xtr, c.gain[tr], alpha)
    d = design_feats(c, te, True, stats)[0]
    return d @ coef[: d.shape[1]] + b


def m_ridge_fe(c, tr, te):
    """R11: R7 with per-benchmark intercepts in training only; alpha nested."""
    best, table = select(c, tr, A_GRID, lambda itr, ite, a: ridge_fe_scores(c, itr, ite, a))
    return ridge_fe_scores(c, tr, te, best), {"chosen": best, "inner": table}


METHODS["R11 R7 + per-benchmark intercept (train only)"] = m_ridge_fe
