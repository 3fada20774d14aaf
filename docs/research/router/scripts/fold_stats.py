"""Size, weak/strong accuracy, gap and gain counts of each outer fold's test rows, with its subjects."""
import numpy as np
from common import context, outer_folds
c = context()
for name, tr, te in outer_folds(c):
    g = c.gain[te]
    subj = sorted(set(c.grp[te]))
    print(f"{name:20s} n={te.size:5d} weak={c.weak[te].mean():.3f} strong={c.strong[te].mean():.3f} gap={g.mean():.3f} "
          f"gain+={int((g>0).sum())} gain-={int((g<0).sum())} groups={len(subj)}")
    if name.startswith("MMLU"):
        print("   ", ", ".join(s.split('/')[-1] for s in subj))
