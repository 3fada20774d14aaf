"""Tables for EVAL.md from results/<variant>/scores: per-fold APGR and strong share at 95%, worst folds.

    VARIANT=clean /work/main/.venv/bin/python report.py > results/clean/tables.md
"""
import pickle
import numpy as np
from common import context, outer_folds, metrics, bootstrap_diff, VARIANT
from eval import OUT, slug
import methods as M

c = context()
folds = outer_folds(c)
FN = [f for f, _, _ in folds]
SHORT = {"LOBO mmlu->gsm8k": "MMLU→GSM8K", "LOBO gsm8k->mmlu": "GSM8K→MMLU"}
short = lambda f: SHORT.get(f, f.replace("MMLU subj fold ", "subj "))

res = {}
for name in M.METHODS:
    try:
        res[name] = {f: pickle.load(open(OUT / "scores" / f"{slug(name)}__{slug(f)}.pkl", "rb")) for f in FN}
    except FileNotFoundError:
        pass

def pooled(name):
    subj = [f for f in FN if f.startswith("MMLU")]
    te = np.concatenate([res[name][f]["te"] for f in subj])
    s = np.concatenate([res[name][f]["scores"] for f in subj])
    return metrics(c, te, s)

rows = []
for name, per in res.items():
    ap = {f: per[f]["metrics"]["apgr"] for f in FN}
    pm = pooled(name)
    worst7 = min(ap.values())
    worst3 = min(ap[FN[0]], ap[FN[1]], pm.apgr)
    rows.append((name, ap, pm, worst7, worst3))

print(f"Variant `{VARIANT}`. APGR per held-out fold (train on the rest; test rows never used for any choice).\n")
print("| method | " + " | ".join(short(f) for f in FN) + " | MMLU subj pooled | worst of 7 | **worst of 3** (2 LOBO + pooled subj) |")
print("|---|" + "---|" * (len(FN) + 3))
for name, ap, pm, w7, w3 in rows:
    flag = " †" if "saw test" in name else ""
    print(f"| {name}{flag} | " + " | ".join(f"{ap[f]:.3f}" for f in FN) + f" | {pm.apgr:.3f} | {w7:.3f} | **{w3:.3f}** |")

print("\nStrong-call share needed for 95% of strong-only quality (lower is better; random ≈ 0.95·strong−weak over gap):\n")
print("| method | " + " | ".join(short(f) for f in FN) + " | MMLU subj pooled | worst of 3 |")
print("|---|" + "---|" * (len(FN) + 2))
for name, ap, pm, w7, w3 in rows:
    sh = {f: res[name][f]["metrics"]["share_at_95"] for f in FN}
    print(f"| {name} | " + " | ".join(f"{sh[f]:.3f}" for f in FN) + f" | {pm.share_at_95:.3f} | {max(sh[FN[0]], sh[FN[1]], pm.share_at_95):.3f} |")

print("\nNested choices made on the training rows of each fold (C,target for LR; alpha for ridge; k for kNN):\n")
for name, per in res.items():
    ch = [per[f]["info"].get("chosen") for f in FN]
    if any(x is not None for x in ch):
        extra = ""
        if "k" in per[FN[0]]["info"]:
            extra = "; kNN k: " + ", ".join(str(per[f]["info"]["k"]) for f in FN)
        if "far_share" in per[FN[0]]["info"]:
            extra = "; OOD threshold / far share: " + ", ".join(f"{per[f]['info']['ood_threshold']:.3f}/{per[f]['info']['far_share']:.2f}" for f in FN)
        print(f"- {name}: " + ", ".join(f"{short(f)} {x}" for f, x in zip(FN, ch)) + extra)
