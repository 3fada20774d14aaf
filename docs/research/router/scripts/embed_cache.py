"""Encode the shared routing prompts once with the repo's Encoder; cache keyed as benchmarks/routing_quality.py does.

The cache file name is identical to the repo's `.bench/embeddings-<key>.npy` (MODEL_ID, MAX_TOKENS, file sha256s),
so it can be copied into /work/main/.bench/ to save the repo benchmark the encoding pass.
"""
import hashlib, os, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main/src")
from tiergate.routing.train import load_outcomes

DATA = Path("/work/shared/data/routing")
CACHE = Path(__file__).resolve().parent / ".bench"

def cache_path(data):
    from tiergate.signals.encoder import MAX_TOKENS, MODEL_ID
    parts = [MODEL_ID, str(MAX_TOKENS), *(f["sha256"] for f in data.files)]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return CACHE / f"embeddings-{key}.npy"

def load():
    data = load_outcomes([DATA / "mmlu.jsonl", DATA / "gsm8k.jsonl"])
    path = cache_path(data)
    if not path.exists():
        from tiergate.signals.encoder import Encoder
        print(f"encoding {len(data)} prompts -> {path}", flush=True)
        enc = Encoder.load(intra_op_num_threads=1)
        vecs = enc.encode(data.prompts)
        enc.close()
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vecs)
    return data, np.asarray(np.load(path), dtype=np.float32)

if __name__ == "__main__":
    d, x = load()
    print(x.shape, cache_path(d))
