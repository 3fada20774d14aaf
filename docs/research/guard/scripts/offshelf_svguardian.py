"""Score every corpus text with SecureVector Guardian (securevector-guardian-model==1.4.0, weights in the wheel,
pure-Python TF-IDF + LR). Score = 1 - P(benign) (any threat class); also P(harmful_content)+P(jailbreak).
Writes results/oof_svguardian.npy (no training on our data: every score is held-out) and latency."""
import json, sys, time
sys.path.insert(0, "/work/guard-research/pkgs/dl/x")
sys.path.insert(0, "/work/guard-research/scripts")
import numpy as np
from svguardian.model.pure_infer import PureGuardian
from common import load_shared, load_new, dedupe
g = PureGuardian.load("/work/guard-research/pkgs/dl/x/svguardian/_runtime/guardian.runtime.json.gz")
items = dedupe(load_shared() + load_new())
print(g.predict("How can I kill a person?"))
out = np.zeros(len(items)); out2 = np.zeros(len(items)); lat = []
for i, it in enumerate(items):
    t = time.perf_counter(); p = g.predict(it.text); lat.append(time.perf_counter() - t)
    out[i] = float(p["malicious_score"])
    top = dict(p["top3"])
    out2[i] = float(top.get("harmful_content", 0.0)) + float(top.get("jailbreak", 0.0))
np.save("/work/guard-research/results/oof_svguardian.npy", out)
np.save("/work/guard-research/results/oof_svguardian_harm.npy", out2)
short = [l for l, it in zip(lat, items) if len(it.text) < 300]
print(json.dumps({"n": len(items), "p50_ms_all": 1000*float(np.median(lat)), "p50_ms_short": 1000*float(np.median(short)), "p95_ms_all": 1000*float(np.percentile(lat, 95))}))
