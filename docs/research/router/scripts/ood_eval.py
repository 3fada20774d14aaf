"""R7 + OOD fallback to rules with the two threshold rules (T_self, T_group = 0.99 quantiles of the training
rows' leave-self-out / leave-own-group-out kNN distance, k=10): APGR per fold and share flagged."""
import pickle
import numpy as np
from pathlib import Path
from common import context, outer_folds, knn_dist, VARIANT
from methods import group_out_knn_dist, rules_score, pct, ridge_scores, OOD_K
from eval import slug, OUT
from tiergate.routing.metrics import apgr, quality_curve

c = context()
R7 = "R7 ridge(gain) vec + 12 text statistics, nested"
print(f"Variant `{VARIANT}`\n\n| fold | R7 | rules | T_self (flagged) -> APGR | T_group (flagged) -> APGR |\n|---|---|---|---|---|")
for fname, tr, te in outer_folds(c):
    p = pickle.load(open(OUT / "scores" / f"{slug(R7)}__{slug(fname)}.pkl", "rb"))
    s_tr = ridge_scores(c, tr, tr, p["info"]["chosen"], True)
    d_te = knn_dist(c.x[te], c.x[tr], OOD_K)
    t_self = np.quantile(knn_dist(c.x[tr], c.x[tr], OOD_K, exclude_self=True), 0.99)
    t_grp = np.quantile(group_out_knn_dist(c, tr, OOD_K), 0.99)
    r_tr, r_te = rules_score([c.prompts[i] for i in tr]), rules_score([c.prompts[i] for i in te])
    a = lambda s: apgr(quality_curve(s, c.weak[te], c.strong[te]))
    cells = []
    for t in (t_self, t_grp):
        far = d_te > t
        cells.append(f"{t:.3f} ({far.mean():.2f}) -> {a(np.where(far, pct(r_tr, r_te), pct(s_tr, p['scores']))):.3f}")
    print(f"| {fname} | {a(p['scores']):.3f} | {a(r_te):.3f} | {cells[0]} | {cells[1]} |")
