"""Embed the shared corpus and every data/*.jsonl source (cached)."""
import sys, time
sys.path.insert(0, "/work/guard-research/scripts")
from common import load_shared, load_new, embed_by_source, dedupe
t = time.time()
which = sys.argv[1] if len(sys.argv) > 1 else "all"
items = []
if which in ("all", "shared"):
    items += load_shared()
if which in ("all", "new"):
    items += load_new()
items = dedupe(items)
print(len(items), "items", flush=True)
embed_by_source(items)
print(f"done in {time.time()-t:.0f}s", flush=True)
