"""Decision cost of the recommended head on one core (the encoder pass, ~10 ms p50 / 14.8 ms p99 in
docs/benchmarks-routing.md, is not re-measured here): features, ridge head, OOD kNN distance."""
import os, time
import numpy as np
from common import context, FEATURE_NAMES
from tiergate.routing.features import text_features
from methods import CONTENT_IDX

c = context("clean")
rng = np.random.default_rng(0)
xt = np.ascontiguousarray(c.x)  # 9,789 x 384 float32 training vectors (the OOD reference set)
w = rng.normal(size=384 + 12).astype(np.float32)
mu, sd = np.zeros(12, np.float32), np.ones(12, np.float32)
prompt = " ".join(["word"] * 80) + " How many apples are left if 3 of 12 are eaten?"  # ~100 tokens
q = c.x[123].copy()

def t(fn, n=3000):
    for _ in range(200):
        fn()
    out = np.empty(n)
    for i in range(n):
        s = time.perf_counter(); fn(); out[i] = time.perf_counter() - s
    return np.percentile(out, 50) * 1e6, np.percentile(out, 99) * 1e6

def feats():
    return text_features(prompt)[CONTENT_IDX]
def head():
    f = (text_features(prompt)[CONTENT_IDX] - mu) / sd
    return float(q @ w[:384] + f @ w[384:])
def ood(ref=xt, k=10):
    s = ref @ q
    top = np.partition(s, s.size - k)[-k:]
    return 1.0 - float(top.mean())
sub = xt[rng.permutation(len(xt))[:2048]].copy()
xt16 = xt.astype(np.float16)
res = {
    "features (12 text statistics of a ~100-token prompt)": t(feats),
    "features + ridge head (396 multiply-adds)": t(head),
    f"OOD distance, k=10 over all {len(xt)} training vectors (float32 matvec + partition)": t(ood, 2000),
    "OOD distance over a 2,048-vector random subset": t(lambda: ood(sub), 2000),
}
print(f"one thread (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), machine shared, load {os.getloadavg()[0]:.1f}; microseconds p50 / p99\n")
print("| step | p50 us | p99 us |\n|---|---|---|")
for k, (a, b) in res.items():
    print(f"| {k} | {a:.0f} | {b:.0f} |")
# how much does the subset change the OOD flag on the held sets?
from common import knn_dist
full = knn_dist(c.x[:3000], xt, 10, exclude_self=True)
part = knn_dist(c.x[:3000], sub, 10)
print(f"\nsubset vs full distance on 3,000 training rows: correlation {np.corrcoef(full, part)[0,1]:.3f}, mean shift {np.mean(part-full):+.3f}")
