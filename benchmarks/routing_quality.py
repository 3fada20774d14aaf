"""Routing quality: the learned router against baselines, cross-validated over held-out task groups.

Folds hold out whole MMLU subjects (45 subjects in 5 folds) and GSM8K buckets (10 hash buckets in 5 folds);
every router is trained on the other folds of both files and scored on the held-out one, and the metrics
(``tiergate.train.router.metrics``) are computed on the pooled out-of-fold scores of each benchmark. Side by side:
random (its expected curve), prompt length, kNN over the embeddings (k=32, similarity-weighted mean gain),
logistic regression on the embeddings (P(strong right and weak wrong)), and the learned router
(``tiergate.train.router.train``), with the previous recipe of the learned router (one ridge, general features
only) for comparison. A paired bootstrap over prompts gives the interval of the learned router's APGR lead
over the best baseline.

    python benchmarks/routing_quality.py [--data ../shared/data/routing] [--out docs/benchmarks-routing.md]

Needs scikit-learn (for the logistic baseline only). Embeddings are cached in .bench/, keyed by the data and
the encoder's ``MODEL_ID`` (about 4 minutes of one CPU core the first time).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiergate.routing.features import FEATURE_NAMES, batch_features  # noqa: E402
from tiergate.routing.learned import LearnedModel  # noqa: E402
from tiergate.train.router.metrics import RoutingMetrics, apgr, evaluate, quality_curve  # noqa: E402
from tiergate.train.router.train import (  # noqa: E402
    RIDGE_ALPHA,
    Outcomes,
    fit_head,
    fit_ridge,
    groups,
    head_meta,
    load_outcomes,
)

FOLDS = 5
PREVIOUS = "single ridge (previous recipe)"  # shown for comparison, not a baseline
SEED = 0
Fit = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (train mask, test mask) -> test scores


def machine_line() -> str:
    """Where and when a figure was measured."""
    import datetime
    import os
    import platform

    import onnxruntime

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu}, {os.cpu_count()} cores shared with other work "
        f"(load average {load:.1f} at the end), Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )


def write_section(path: Path, name: str, body: str, title: str = "# Router benchmarks") -> None:
    """Replace this benchmark's section of the docs file (between its markers), keeping the others."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text("utf-8") if path.exists() else f"{title}\n\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


def embeddings(data: Outcomes, cache: Path) -> np.ndarray:
    from tiergate.signals.encoder import MAX_TOKENS, MODEL_ID

    # The encoder's identity is part of the key: vectors of another model (or quantisation) are not reused.
    parts = [MODEL_ID, str(MAX_TOKENS), *(f["sha256"] for f in data.files)]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    path = cache / f"embeddings-{key}.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=np.float32)
    from tiergate.signals.encoder import Encoder

    print(f"encoding {len(data)} prompts (cached in {path}) ...", flush=True)
    encoder = Encoder.load(intra_op_num_threads=1)
    vectors = encoder.encode(data.prompts)
    encoder.close()
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def folds(data: Outcomes) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    row_groups = np.array(groups(data))
    families = np.array(data.families)
    fold = np.zeros(len(data), int)
    for family in sorted(set(data.families)):
        names = sorted(set(row_groups[families == family]))
        for i, g in enumerate(rng.permutation(names)):
            fold[row_groups == g] = i % FOLDS
    return fold


def routers(data: Outcomes, x: np.ndarray) -> dict[str, Fit]:
    feats = batch_features(data.prompts)
    gain = data.strong - data.weak
    strong_only = (gain > 0).astype(int)

    def random(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        return np.zeros(int(te.sum()))  # all tied: the expected curve of a random router

    def length(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        return np.array([len(p) for p, t in zip(data.prompts, te, strict=True) if t], dtype=float)

    def knn(tr: np.ndarray, te: np.ndarray, k: int = 32) -> np.ndarray:
        sims = x[te] @ x[tr].T
        idx = np.argpartition(-sims, k, axis=1)[:, :k]
        w = np.take_along_axis(sims, idx, 1).clip(0)
        return np.asarray((w * gain[tr][idx]).sum(1) / (w.sum(1) + 1e-9))

    def logistic(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0, max_iter=3000).fit(x[tr], strong_only[tr])
        return np.asarray(model.predict_proba(x[te])[:, 1])

    general = [i for i, n in enumerate(FEATURE_NAMES) if n != "word_problem" and not n.startswith("wp_")]

    def single_ridge(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        f = feats[:, general]
        mean, std = f[tr].mean(axis=0), f[tr].std(axis=0)
        std[std < 1e-6] = 1.0
        design = np.concatenate([x, (f - mean) / std], axis=1)
        coef, intercept = fit_ridge(design[tr], gain[tr], RIDGE_ALPHA)
        return np.asarray(design[te] @ coef + intercept)

    def learned(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        arrays = fit_head(x[tr], feats[tr], gain[tr], [f for f, t in zip(data.families, tr, strict=True) if t])
        meta: dict[str, Any] = {**head_meta(), "calibration": {"threshold": 0.5}}
        arrays["calibration_quantiles"] = np.zeros(2, np.float32)
        return LearnedModel.from_parts(meta, arrays).predict(x[te], feats[te])

    return {
        "random": random,
        "prompt length": length,
        "kNN (k=32)": knn,
        "logistic regression": logistic,
        PREVIOUS: single_ridge,
        "learned router": learned,
    }


def out_of_fold(fit: Fit, fold: np.ndarray) -> np.ndarray:
    scores = np.zeros(fold.size)
    for k in range(FOLDS):
        scores[fold == k] = fit(fold != k, fold == k)
    return scores


def bootstrap_lead(
    a: np.ndarray, b: np.ndarray, weak: np.ndarray, strong: np.ndarray, n: int = 300
) -> tuple[float, float]:
    """95% interval of APGR(a) - APGR(b) over prompts resampled with replacement."""
    rng = np.random.default_rng(SEED)
    leads = []
    for _ in range(n):
        i = rng.integers(0, a.size, a.size)
        if strong[i].mean() == weak[i].mean():
            continue
        leads.append(apgr(quality_curve(a[i], weak[i], strong[i])) - apgr(quality_curve(b[i], weak[i], strong[i])))
    lo, hi = np.percentile(leads, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "routing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-routing.md")
    args = parser.parse_args()
    data = load_outcomes([args.data / "mmlu.jsonl", args.data / "gsm8k.jsonl"])
    x = embeddings(data, ROOT / ".bench")
    fold = folds(data)
    families = np.array(data.families)
    results: dict[str, dict[str, RoutingMetrics]] = {}
    oof: dict[str, np.ndarray] = {}
    for name, fit in routers(data, x).items():
        print(f"{name} ...", flush=True)
        oof[name] = out_of_fold(fit, fold)
        results[name] = {
            fam: evaluate(oof[name][families == fam], data.weak[families == fam], data.strong[families == fam])
            for fam in ("mmlu", "gsm8k")
        }
    lines = [
        "## Routing quality (held-out task groups)",
        "",
        f"{machine_line()}. Data: `mmlu.jsonl` ({(families == 'mmlu').sum()} prompts, 45 subjects) and "
        f"`gsm8k.jsonl` ({(families == 'gsm8k').sum()} problems); weak = {data.weak_model}, strong = "
        f"{data.strong_model}. {FOLDS}-fold cross-validation holding out whole MMLU subjects and GSM8K hash "
        "buckets; each router is trained on the other folds of both files and the metrics are taken on the "
        "pooled out-of-fold scores of each benchmark. Produced by `python benchmarks/routing_quality.py`.",
        "",
        "The learned router is linear on the embedding and 23 cheap features, fitted in two ridge stages "
        "(`tiergate.train.router.train`): stage 1 regresses the strong model's gain (strong - weak) on the embedding "
        "and 16 general features (length, numbers, maths, code, script, options, turns, tools), each benchmark's "
        "rows weighted by sqrt(largest benchmark / its size); stage 2 fits stage 1's residuals on the word "
        "problems alone (a quantity and no answer options) with 6 step cues (number words, fractions, commas, "
        "decimals, 'and', distinct numbers) that are 0 for every other prompt, so MMLU scores are stage 1's. "
        "This recipe was selected on cross-validations of this same data (the earlier single ridge, with the "
        "16 general features only and no weights, was itself picked among about 30 variants: targets gain, "
        "P(strong right and weak wrong), P(weak wrong); heads ridge, logistic, kNN, MLP, gated ridge; the "
        "step cues, the benchmark weights and the word-problem stage were then chosen by looking at GSM8K "
        "correlations and these same folds), so the learned router's figures here are optimistic; the "
        "baselines were not tuned. The row 'single ridge (previous recipe)' is that earlier router on the same "
        "folds and vectors; it is not counted as a baseline.",
        "",
    ]
    for fam in ("mmlu", "gsm8k"):
        lines += [
            f"### {fam.upper() if fam == 'mmlu' else 'GSM8K'}",
            "",
            "| router | APGR | CPT(50%) | CPT(80%) | quality @20% | quality @50% | strong share for 95% |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, per in results.items():
            m = per[fam]
            lines.append(
                f"| {name} | {m.apgr:.3f} | {m.cpt50:.3f} | {m.cpt80:.3f} | {m.quality_at_20:.3f} | "
                f"{m.quality_at_50:.3f} | {m.share_at_95:.3f} |"
            )
        m = results["learned router"][fam]
        lines += ["", f"Weak only {m.weak:.3f}, strong only {m.strong:.3f}.", ""]
    lines += ["### Against the goals", ""]
    lows = []
    for fam in ("mmlu", "gsm8k"):
        mask = families == fam
        baselines = {k: v[fam].apgr for k, v in results.items() if k not in ("learned router", PREVIOUS)}
        best = max(baselines, key=lambda k: baselines[k])
        learned = results["learned router"][fam]
        lo, hi = bootstrap_lead(oof["learned router"][mask], oof[best][mask], data.weak[mask], data.strong[mask])
        lead = learned.apgr - baselines[best]
        lows.append(lo)
        lines.append(
            f"- {fam}: learned APGR {learned.apgr:.3f} vs best baseline ({best}) {baselines[best]:.3f}: lead "
            f"{lead:+.3f} (95% bootstrap interval {lo:+.3f} to {hi:+.3f}); goal +0.05: "
            f"{'met' if lead >= 0.05 else 'not met'}. 95% of strong-only quality with {learned.share_at_95:.2f} "
            f"of the calls strong (random: {results['random'][fam].share_at_95:.2f}); goal <= 0.65: "
            f"{'met' if learned.share_at_95 <= 0.65 else 'not met'}."
        )
    lines += [
        "",
        "The leads are point estimates on folds that also served to select the recipe"
        + (
            ", and their bootstrap intervals reach below +0.05: a lead of +0.05 is not established beyond noise."
            if min(lows) < 0.05
            else "."
        )
        + " The word-problem stage was learned from GSM8K alone; in service it applies to any prompt with a "
        "quantity and no answer options.",
    ]
    shipped = LearnedModel.default().meta
    cal, held = shipped["calibration"], shipped["data"]
    lines += [
        "",
        f"The shipped artifact (`src/tiergate/routing/artifacts/`, seed {shipped['seed']}) is trained on "
        f"{held['train_rows']} prompts; {held['holdout_rows']} prompts of held-out groups "
        f"({', '.join(held['holdout_groups'])}) calibrate it: the default threshold {cal['threshold']:.3f} is set "
        f"for {cal['target']:g} x strong-only quality and sends {cal['strong_share']:.1%} of that set to the "
        f"strong model for {cal['quality_fraction']:.3f} x strong-only quality. Held-out APGR there: "
        + ", ".join(f"{k} {v['apgr']:.3f}" for k, v in shipped["holdout_metrics"].items())
        + ".",
        "",
    ]
    write_section(args.out, "routing-quality", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
