"""Per-fold APGR / strong share at 95% for every method in methods.METHODS; writes results/ and EVAL.md tables.

    OMP_NUM_THREADS=1 nice -n 15 /work/main/.venv/bin/python eval.py [method names...]

Scores per (method, fold) are cached in results/scores/ (delete to recompute).
"""
import json, pickle, sys, time
from pathlib import Path
import numpy as np
from common import context, outer_folds, metrics
import methods as M

from common import VARIANT
OUT = Path(__file__).resolve().parent / "results" / VARIANT
(OUT / "scores").mkdir(parents=True, exist_ok=True)

def slug(s):
    return "".join(ch if ch.isalnum() else "_" for ch in s)

def run(names):
    c = context()
    folds = outer_folds(c)
    for name in names:
        fn = M.METHODS[name]
        for fname, tr, te in folds:
            path = OUT / "scores" / f"{slug(name)}__{slug(fname)}.pkl"
            if path.exists():
                continue
            t = time.time()
            if name.startswith(("R4", "R9")):
                src = "R2 LR vec+len, nested C/target" if name.startswith("R4") else "R7 ridge(gain) vec + 12 text statistics, nested"
                base = pickle.load(open(OUT / "scores" / f"{slug(src)}__{slug(fname)}.pkl", "rb"))
                s, info = fn(c, tr, te, base=(base["scores"], base["info"]))
            else:
                s, info = fn(c, tr, te)
            m = metrics(c, te, s)
            pickle.dump({"scores": s, "info": info, "metrics": m.as_dict(), "te": te}, open(path, "wb"))
            extra = {k: v for k, v in info.items() if k in ("chosen", "k", "ood_threshold", "far_share")}
            print(f"{name:45s} {fname:20s} APGR {m.apgr:.3f} share95 {m.share_at_95:.3f} {extra} ({time.time()-t:.1f}s)", flush=True)

if __name__ == "__main__":
    run(sys.argv[1:] or list(M.METHODS))
