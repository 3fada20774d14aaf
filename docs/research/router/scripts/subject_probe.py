"""Per-subject gap and mean router score on a fold: do routers fail by ranking whole subjects wrongly?"""
import pickle, sys
import numpy as np
from common import context, outer_folds
from eval import slug, OUT
c = context()
fold = sys.argv[1] if len(sys.argv) > 1 else "MMLU subj fold 2"
names = ["R2 LR vec+len, nested C/target", "prompt length", "shipped recipe, retrained per fold", "R3 ensemble LR+kNN+len (z-mean)"]
res = {n: pickle.load(open(OUT / "scores" / f"{slug(n)}__{slug(fold)}.pkl", "rb")) for n in names}
te = res[names[0]]["te"]
print(f"{'subject':38s} {'n':>5s} {'weak':>5s} {'gap':>6s} " + " ".join(f"{n[:10]:>10s}" for n in names))
for s in sorted(set(c.grp[te])):
    m = c.grp[te] == s
    row = []
    for n in names:
        sc = res[n]["scores"]
        row.append((sc[m].mean() - sc.mean()) / sc.std())
    print(f"{s:38s} {m.sum():5d} {c.weak[te][m].mean():5.2f} {c.gain[te][m].mean():6.3f} " + " ".join(f"{v:10.2f}" for v in row))
# within-subject APGR: ranking inside each subject only (subject prior removed)
from tiergate.routing.metrics import apgr, quality_curve
print("\nmean within-subject APGR (subjects with gap > 0.02):")
for n in names:
    sc = res[n]["scores"]; vals = []
    for s in sorted(set(c.grp[te])):
        m = c.grp[te] == s
        if c.gain[te][m].mean() > 0.02:
            vals.append(apgr(quality_curve(sc[m], c.weak[te][m], c.strong[te][m])))
    print(f"  {n:40s} {np.mean(vals):.3f} over {len(vals)} subjects")
