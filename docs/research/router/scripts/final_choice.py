"""The shipped recipe's single choice on all the shared data (nested the same way: worst inner fold)."""
import numpy as np
from common import context, knn_dist
from methods import select, A_GRID, ridge_scores, group_out_knn_dist
for v in ("clean", "asis"):
    c = context(v)
    tr = np.arange(len(c.fam))
    best, table = select(c, tr, A_GRID, lambda itr, ite, a: ridge_scores(c, itr, ite, a, True))
    print(v, "alpha", best, {k: (round(a, 3), round(b, 3)) for k, (a, b) in table.items()})
    print(v, "T_self", round(float(np.quantile(knn_dist(c.x, c.x, 10, exclude_self=True), 0.99)), 3),
          "T_group", round(float(np.quantile(group_out_knn_dist(c, tr, 10), 0.99)), 3))
