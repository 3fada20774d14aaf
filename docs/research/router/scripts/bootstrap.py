"""Paired bootstrap (300 resamples of test prompts) of APGR differences on the 3 headline folds."""
import pickle, sys
import numpy as np
from common import context, outer_folds, bootstrap_diff, VARIANT
from eval import OUT, slug

c = context()
folds = outer_folds(c)
FN = [f for f, _, _ in folds]
def load(name, f):
    return pickle.load(open(OUT / "scores" / f"{slug(name)}__{slug(f)}.pkl", "rb"))
def headline(name):
    out = {f: (load(name, f)["te"], load(name, f)["scores"]) for f in FN[:2]}
    subj = [f for f in FN if f.startswith("MMLU")]
    out["MMLU subj pooled"] = (np.concatenate([load(name, f)["te"] for f in subj]), np.concatenate([load(name, f)["scores"] for f in subj]))
    return out
pairs = [
    ("R7 ridge(gain) vec + 12 text statistics, nested", "prompt length"),
    ("R7 ridge(gain) vec + 12 text statistics, nested", "rules router (fallback)"),
    ("R7 ridge(gain) vec + 12 text statistics, nested", "LR on sentence vector (C=1)"),
    ("shipped recipe, retrained per fold", "R7 ridge(gain) vec + 12 text statistics, nested"),
    ("shipped recipe, retrained per fold", "prompt length"),
    ("R10 z-mean of R7 and R1", "prompt length"),
    ("R9 R7 + OOD fallback to rules", "R7 ridge(gain) vec + 12 text statistics, nested"),
]
print(f"Variant `{VARIANT}`: APGR(a) - APGR(b), point estimate and 95% paired-bootstrap interval (300 resamples)\n")
print("| a | b | " + " | ".join(["MMLU→GSM8K", "GSM8K→MMLU", "MMLU subj pooled"]) + " |")
print("|---|---|---|---|---|")
from tiergate.routing.metrics import apgr, quality_curve
for a, b in pairs:
    A, B = headline(a), headline(b)
    cells = []
    for f in A:
        te, sa = A[f]; te2, sb = B[f]
        assert (te == te2).all()
        d = apgr(quality_curve(sa, c.weak[te], c.strong[te])) - apgr(quality_curve(sb, c.weak[te], c.strong[te]))
        lo, hi = bootstrap_diff(c, te, sa, sb)
        cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print(f"| {a} | {b} | " + " | ".join(cells) + " |")
# single-method interval half-widths for R7 (how noisy is one fold's APGR)
print("\nR7 APGR 95% bootstrap interval per headline fold: ", end="")
A = headline("R7 ridge(gain) vec + 12 text statistics, nested")
z = None
for f, (te, s) in A.items():
    lo, hi = bootstrap_diff(c, te, s, np.zeros_like(s))
    print(f"{f}: [{0.5+lo:.3f}, {0.5+hi:.3f}]", end="; ")
print()
