"""OOD measure: mean cosine distance to the k nearest training vectors; thresholds and how far the sets are.

    OMP_NUM_THREADS=1 nice -n 15 /work/main/.venv/bin/python ood.py > results/ood.md
"""
import pickle
import numpy as np
from common import context, knn_dist, outer_folds
from methods import group_out_knn_dist, OOD_K
from standins import STANDINS
from tiergate.routing.metrics import apgr, quality_curve
from eval import slug
from pathlib import Path

c = context("clean")
mm, gs = np.flatnonzero(c.fam == "mmlu"), np.flatnonzero(c.fam == "gsm8k")
alltr = np.arange(len(c.fam))
K = OOD_K

def q(v, qs=(0.5, 0.9, 0.95, 0.99)):
    return " / ".join(f"{np.quantile(v, x):.3f}" for x in qs)

print(f"k = {K}; d = 1 - mean cosine similarity to the k nearest training vectors. Quantiles p50 / p90 / p95 / p99.\n")
print("| training set | scored set | d quantiles | share above T_self | share above T_group |")
print("|---|---|---|---|---|")
st_enc = None
rows = []
thr = {}
for tname, tr in [("MMLU (all subjects)", mm), ("GSM8K", gs), ("MMLU + GSM8K (as shipped)", alltr)]:
    self_d = knn_dist(c.x[tr], c.x[tr], K, exclude_self=True)
    grp_d = group_out_knn_dist(c, tr, K)
    t_self, t_group = float(np.quantile(self_d, 0.99)), float(np.quantile(grp_d, 0.99))
    thr[tname] = (t_self, t_group)
    sets = [("training rows, leave-self-out", self_d), ("training rows, leave-own-group-out", grp_d)]
    if tname.startswith("MMLU ("):
        sets.append(("GSM8K (other benchmark)", knn_dist(c.x[gs], c.x[mm], K)))
    if tname == "GSM8K":
        sets.append(("MMLU (other benchmark)", knn_dist(c.x[mm], c.x[gs], K)))
    for sname, d in sets:
        print(f"| {tname} | {sname} | {q(d)} | {np.mean(d > t_self):.3f} | {np.mean(d > t_group):.3f} |")
print("\nThresholds (0.99 quantiles): " + "; ".join(f"{k}: T_self {a:.3f}, T_group {b:.3f}" for k, (a, b) in thr.items()))

# stand-ins, against the full (shipped-style) training set
from tiergate.signals.encoder import Encoder
enc = Encoder.load(intra_op_num_threads=1)
texts = [(cat, t) for cat, ts in STANDINS.items() for t in ts]
xs = enc.encode([t for _, t in texts]); enc.close()
d = knn_dist(xs, c.x, K)
t_self, t_group = thr["MMLU + GSM8K (as shipped)"]
print(f"\nSTAND-IN prompts (hand-written for this note, not real traffic) against MMLU + GSM8K: "
      f"T_self {t_self:.3f}, T_group {t_group:.3f}\n")
print("| kind | prompt (start) | d | far (> T_self) | far (> T_group) |")
print("|---|---|---|---|---|")
for (cat, t), v in zip(texts, d):
    short = t.replace("\n", " ")[:60].replace("|", "/")
    print(f"| {cat} | {short} | {v:.3f} | {'yes' if v > t_self else 'no'} | {'yes' if v > t_group else 'no'} |")
np.save(Path("results") / "standin_vectors.npy", xs)

# does distance predict where the router is weak? R7 on near vs far halves of each LOBO test set
print("\nR7 APGR on the nearer and farther half of each headline test set (split at the median distance to that fold's training rows):\n")
print("| fold | d median | APGR near half | APGR far half | length APGR near / far |")
print("|---|---|---|---|---|")
from methods import loglen
for fname, tr, te in outer_folds(c):
    p = pickle.load(open(Path("results/clean/scores") / f"{slug('R7 ridge(gain) vec + 12 text statistics, nested')}__{slug(fname)}.pkl", "rb"))
    dd = knn_dist(c.x[te], c.x[tr], K)
    med = np.median(dd)
    cells = []
    for s in (p["scores"], loglen(c, te)):
        for m in (dd <= med, dd > med):
            cells.append(apgr(quality_curve(s[m], c.weak[te][m], c.strong[te][m])))
    print(f"| {fname} | {med:.3f} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} / {cells[3]:.3f} |")
