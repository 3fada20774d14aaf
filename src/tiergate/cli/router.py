"""``tiergate router``: train, score, evaluate and calibrate the learned router on routing-outcome files.

Usage::

    tiergate router train data/routing/mmlu.jsonl data/routing/gsm8k.jsonl --out my-router/ --seed 0
    tiergate router score prompts.jsonl --out preds.jsonl [--artifact my-router/]
    tiergate router eval data/routing/gsm8k.jsonl --plot curve.png
    tiergate router calibrate data/routing/mmlu.jsonl --strong-share 0.3

    # From the deployment's own judged shadow pairs (tiergate.yaml's ledger, or --db):
    tiergate router train --from-ledger --out /srv/tiergate/router     # the folder router.artifact names
    tiergate router eval --from-ledger --artifact /srv/tiergate/router --plot cost-quality.png
    tiergate router calibrate --from-ledger --artifact /srv/tiergate/router --quality 0.95 --out /srv/tiergate/router

Files are JSONL as ``data/routing/SOURCES.md`` describes; ``score`` needs only ``id`` and ``prompt``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tiergate.cli.failure import fail, one_line_errors, training
from tiergate.routing.features import batch_features
from tiergate.routing.learned import LearnedModel

if TYPE_CHECKING:
    from tiergate.train.router.calibrate import Calibration
    from tiergate.train.router.ledger import LedgerData
    from tiergate.train.router.metrics import Curve, RoutingMetrics
    from tiergate.train.router.train import Outcomes

__all__ = ["router_app"]

router_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_CHUNK = 256
_CAPTION = (
    "CPT50/80: strong share reaching 50%/80% of the quality gap; Q@20%/50%: quality at 20%/50% strong calls; "
    "s@95%: strong share reaching 95% of strong-only quality"
)
ArtifactOpt = Annotated[
    Path | None, typer.Option("--artifact", help="Router folder from 'train' (default: the shipped router).")
]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="onnxruntime threads for the encoder.")]


def _embed(
    prompts: Sequence[str], threads: int, cache: Path | None = None, key: Sequence[str] = ()
) -> npt.NDArray[np.float32]:
    """The prompts' vectors; with ``cache``, kept in (and read back from) ``cache/embeddings-<key>.npy``, the key
    naming the encoder and the data (``key``: the files' sha256, as ``benchmarks/routing_quality.py`` names its
    cache; else the prompts themselves)."""
    from tiergate.signals.encoder import MAX_TOKENS, MODEL_ID, Encoder

    path = None
    if cache is not None:
        digest = hashlib.sha256("\n".join([MODEL_ID, str(MAX_TOKENS), *(key or prompts)]).encode()).hexdigest()[:16]
        path = cache / f"embeddings-{digest}.npy"
        if path.is_file():
            vectors = np.asarray(np.load(path), dtype=np.float32)
            if vectors.shape[0] == len(prompts):
                return vectors
    err = Console(stderr=True)
    encoder = Encoder.load(intra_op_num_threads=threads)
    parts = []
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("Encoding prompts", total=len(prompts))
            for start in range(0, len(prompts), _CHUNK):
                parts.append(encoder.encode(prompts[start : start + _CHUNK]))
                progress.advance(task, len(parts[-1]))
    finally:
        encoder.close()
    vectors = np.concatenate(parts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def _model(artifact: Path | None) -> LearnedModel:
    return LearnedModel.load(artifact) if artifact is not None else LearnedModel.default()


def _score(model: LearnedModel, prompts: Sequence[str], threads: int) -> npt.NDArray[np.float64]:
    return model.predict(_embed(prompts, threads), batch_features(prompts))


LedgerOpt = Annotated[
    bool, typer.Option("--from-ledger", help="Use the ledger's judged shadow pairs instead of files.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="tiergate.yaml whose ledger to read.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="Ledger URL, e.g. sqlite:///tiergate.db.")]
SinceOpt = Annotated[str, typer.Option("--since", help="Ledger window: 30d, 12h, an ISO date, or 'all'.")]


def _ledger(config: Path | None, db: str | None, since: str) -> LedgerData:
    from tiergate.accounting.summary import parse_since
    from tiergate.config import load_config
    from tiergate.train.router.ledger import load_ledger

    if config is not None and db is not None:
        fail("give --config or --db, not both", code=2)
    return load_ledger(db or load_config(config).ledger.url, parse_since(since))


@router_app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Folder for learned.json and learned.npz.", show_default=False)],
    data: Annotated[list[Path] | None, typer.Argument(help="Routing-outcome JSONL files.", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out group split.")] = 0,
    quality: Annotated[float, typer.Option(min=0.01, max=1.0, help="Calibrate to this x strong-only quality.")] = 0.95,
    exclude_task: Annotated[
        list[str] | None, typer.Option("--exclude-task", help="Leave a task's rows out (repeatable).")
    ] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Keep the prompts' vectors in this folder.")] = None,
    threads: ThreadsOpt = 1,
    from_ledger: LedgerOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    since: SinceOpt = "all",
    prior: Annotated[
        Path | None, typer.Option("--prior", help="--from-ledger: the router to start from (default: the shipped one).")
    ] = None,
    no_prior: Annotated[bool, typer.Option("--no-prior", help="--from-ledger: start from nothing.")] = False,
    holdout_share: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="--from-ledger: the latest share of the rows, held out.")
    ] = 0.2,
) -> None:
    """Train the learned router, calibrate it on held-out rows and write the artifact.

    From files: held-out task groups calibrate it. With --from-ledger: the deployment's judged shadow pairs,
    the latest of them held out to calibrate (a temporal split), the shipped router's weights as the prior."""
    if from_ledger == bool(data):
        fail("give routing-outcome files, or --from-ledger (not both)", code=2)
    with training(), one_line_errors():
        from tiergate.train.router.train import ALPHAS, DataError, load_outcomes, train_router

        if from_ledger:
            from tiergate.accounting.database import describe
            from tiergate.config import load_config
            from tiergate.train.router.ledger import temporal_holdout

            rows = _ledger(config, db, since)
            base = None if no_prior else _model(prior)
            held = temporal_holdout(rows.times, holdout_share)
            url = db or load_config(config).ledger.url
            provenance = {
                "source": "ledger",
                "ledger": {
                    "url": describe(url),
                    "since": since,
                    "first": rows.times[0].isoformat(),
                    "last": rows.times[-1].isoformat(),
                    "holdout_from": rows.times[int(np.argmax(held))].isoformat() if held.any() else None,
                    "rows": len(rows),
                    "skipped": rows.skipped,
                    "tier_cost_usd": rows.tier_cost,
                },
            }
            alphas = ALPHAS if base is None else (*ALPHAS, 1e4, 1e5)  # with a prior: may stay on it
            model = train_router(
                rows.outcomes,
                rows.vectors,
                seed=seed,
                quality=quality,
                alphas=alphas,
                prior=base,
                holdout=held,
                provenance=provenance,
            )
            outcomes = rows.outcomes
        else:
            outcomes = load_outcomes(data or [])
            vectors = _embed(outcomes.prompts, threads, cache, [f["sha256"] for f in outcomes.files])
            excluded = sorted(set(exclude_task or ()))
            keep = np.flatnonzero(~np.isin(np.array(outcomes.tasks), excluded))
            if keep.size == 0:
                raise DataError("every row is excluded")
            outcomes, vectors = outcomes.subset(keep), vectors[keep]
            model = train_router(
                outcomes,
                vectors,
                seed=seed,
                quality=quality,
                provenance={"excluded_tasks": excluded} if excluded else None,
            )
        model.save(out)
    cal, held_meta = model.meta["calibration"], model.meta["data"]
    typer.echo(
        f"Trained on {held_meta['train_rows']} {'pairs' if from_ledger else 'prompts'} (ridge penalty "
        f"{model.meta['head']['alpha']:g}), calibrated on {held_meta['holdout_rows']} held out: threshold "
        f"{cal['threshold']:.4f} sends {cal['strong_share']:.1%} to {outcomes.strong_model}. Wrote {out}/"
    )


@router_app.command()
def score(
    data: Annotated[Path, typer.Argument(help="JSONL with 'id' and 'prompt'.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Predictions JSONL: {id, score}.", show_default=False)],
    artifact: ArtifactOpt = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Score prompts: the need for the strong model, in [0, 1]."""
    import json

    with training(), one_line_errors():
        from tiergate.train.router.train import load_prompts

        ids, prompts = load_prompts(data)
        scores = _score(_model(artifact), prompts, threads)
        with out.open("w", encoding="utf-8") as fh:
            for id_, value in zip(ids, scores, strict=True):
                fh.write(json.dumps({"id": id_, "score": round(float(value), 6)}) + "\n")
    typer.echo(f"Wrote {len(ids)} scores to {out}")


def _metrics_table(title: str, rows: list[tuple[str, RoutingMetrics]]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=_CAPTION)
    for name in ("set", "n", "weak", "strong", "APGR", "CPT50", "CPT80", "Q@20%", "Q@50%", "s@95%"):
        table.add_column(name, justify="left" if name == "set" else "right")
    for name, m in rows:
        cells = (m.weak, m.strong, m.apgr, m.cpt50, m.cpt80, m.quality_at_20, m.quality_at_50, m.share_at_95)
        table.add_row(name, str(m.n), *(f"{v:.3f}" for v in cells))
    return table


def _by_family(outcomes: Outcomes, scores: npt.NDArray[np.float64]) -> list[tuple[str, RoutingMetrics]]:
    from tiergate.train.router.metrics import evaluate
    from tiergate.train.router.train import DataError

    families = np.array(outcomes.families)
    rows = []
    names = sorted(set(outcomes.families))
    for name in (names if len(names) > 1 else []) + ["all"]:
        mask = np.ones(len(outcomes), bool) if name == "all" else families == name
        if outcomes.strong[mask].mean() != outcomes.weak[mask].mean():
            rows.append((name, evaluate(scores[mask], outcomes.weak[mask], outcomes.strong[mask])))
    if not rows:
        raise DataError("strong-only and weak-only quality are equal on this data: nothing to evaluate")
    return rows


@router_app.command("eval")
def eval_(
    data: Annotated[Path | None, typer.Argument(help="Routing-outcome JSONL.", show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the quality curve (PNG).")] = None,
    artifact: ArtifactOpt = None,
    threads: ThreadsOpt = 1,
    from_ledger: LedgerOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    since: SinceOpt = "all",
) -> None:
    """RouteLLM's metrics of the router: APGR, CPT, quality at 20%/50%, share at 95%.

    With --from-ledger: on the deployment's held-out judged pairs (those after the artifact's training cut, or
    all of them for a router not trained on this ledger), beside the shipped router, the rules router, prompt
    length and random; --plot draws quality against the cost per request."""
    if from_ledger == (data is not None):
        fail("give a routing-outcome file, or --from-ledger (not both)", code=2)
    if from_ledger:
        _eval_ledger(artifact, plot, config, db, since)
        return
    assert data is not None
    with training(), one_line_errors():
        from tiergate.train.router.calibrate import quality_at_threshold, realised_share
        from tiergate.train.router.metrics import quality_curve
        from tiergate.train.router.train import load_outcomes

        outcomes = load_outcomes([data])
        model = _model(artifact)
        scores = _score(model, outcomes.prompts, threads)
        rows = _by_family(outcomes, scores)
        console = Console()
        console.print(_metrics_table(f"Learned router on {data.name}", rows))
        threshold = model.threshold
        console.print(
            f"At the artifact's threshold {threshold:.4f}: {realised_share(scores, threshold):.1%} strong calls, "
            f"quality {quality_at_threshold(scores, outcomes.weak, outcomes.strong, threshold):.3f} "
            f"(strong-only {outcomes.strong.mean():.3f}, weak-only {outcomes.weak.mean():.3f})."
        )
        if plot is not None:
            _plot(plot, quality_curve(scores, outcomes.weak, outcomes.strong), outcomes, data.name)
            console.print(f"Plot written to {plot}")


def _held_out(model: LearnedModel, rows: LedgerData) -> npt.NDArray[np.bool_]:
    """The rows a ledger-trained artifact did not train on (from its recorded cut); all rows otherwise."""
    ledger = model.meta.get("data", {}).get("ledger") or {}
    cut = ledger.get("holdout_from")
    if ledger and cut is None:
        fail("this router was trained on every judged pair of its ledger: nothing is held out to evaluate it on")
    if cut is None:
        return np.ones(len(rows), bool)
    from datetime import datetime

    start = datetime.fromisoformat(cut)
    return np.array([t >= start for t in rows.times])


def _eval_ledger(artifact: Path | None, plot: Path | None, config: Path | None, db: str | None, since: str) -> None:
    with training(), one_line_errors():
        from tiergate.routing.features import FEATURE_NAMES
        from tiergate.train.router.calibrate import quality_at_threshold, realised_share
        from tiergate.train.router.metrics import evaluate, quality_curve
        from tiergate.train.router.train import DataError

        rows = _ledger(config, db, since)
        model = _model(artifact)
        held = _held_out(model, rows)
        data = rows.outcomes.subset(np.flatnonzero(held))
        if len(data) < 2 or data.strong.mean() == data.weak.mean():
            raise DataError(f"{len(data)} held-out pairs, with no quality gap between the tiers: nothing to evaluate")
        x, f = rows.vectors[held], data.feature_matrix()
        scores = {
            "this router": model.predict(x, f),
            "shipped router": LearnedModel.default().predict(x, f),
            "rules router": data.rules_scores(),
            "prompt length": f[:, FEATURE_NAMES.index("log_chars")].astype(np.float64),
            "random": np.zeros(len(data)),
        }
        table_rows = [(name, evaluate(s, data.weak, data.strong)) for name, s in scores.items()]
        console = Console()
        title = f"Held-out judged pairs of the ledger ({len(data)} of {len(rows)}; open = weak, closed = strong)"
        console.print(_metrics_table(title, table_rows))
        threshold = model.threshold
        mine = scores["this router"]
        console.print(
            f"At the artifact's threshold {threshold:.4f}: {realised_share(mine, threshold):.1%} closed calls, "
            f"quality {quality_at_threshold(mine, data.weak, data.strong, threshold):.3f} (closed only "
            f"{data.strong.mean():.3f}, open only {data.weak.mean():.3f}). Strong share for 95% of closed-only "
            f"quality: {table_rows[0][1].share_at_95:.3f}."
        )
        if plot is not None:
            curves = {name: quality_curve(s, data.weak, data.strong) for name, s in scores.items()}
            _plot_costs(plot, curves, rows.tier_cost, data)
            console.print(f"Cost-quality chart written to {plot}")


def _plot_costs(path: Path, curves: dict[str, Curve], tier_cost: dict[str, float], data: Outcomes) -> None:
    """Quality against the mean cost of a request (open answers at the open tier's mean cost, closed at the
    closed tier's, both measured on these pairs); against the closed share where no cost was recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tiergate.train.router.metrics import oracle_curve

    low, high = tier_cost.get("open"), tier_cost.get("closed")
    priced = low is not None and high is not None and high != low

    def x_of(share: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if not priced:
            return share * 100
        assert low is not None
        assert high is not None
        return low + share * (high - low)

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"this router": ("C0", "-", 2.0), "shipped router": ("C1", "-", 1.2), "random": ("grey", "--", 1.0)}
    for name, curve in curves.items():
        colour, line, width = styles.get(name, (None, "-.", 1.0))
        ax.plot(x_of(curve.share), curve.quality, label=name, color=colour, linestyle=line, linewidth=width)
    oracle = oracle_curve(data.weak, data.strong)
    ax.plot(x_of(oracle.share), oracle.quality, label="oracle", color="C2", linestyle=":")
    strong = float(data.strong.mean())
    ax.axhline(0.95 * strong, color="C3", linewidth=0.6, linestyle=":", label="95% of closed only")
    xlabel = "mean cost per request (USD)" if priced else "closed-tier calls (%)"
    ax.set(xlabel=xlabel, ylabel="judged quality", title="Cost and quality on the held-out judged pairs")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot(path: Path, curve: Curve, outcomes: Outcomes, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tiergate.train.router.metrics import oracle_curve, random_curve

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    oracle = oracle_curve(outcomes.weak, outcomes.strong)
    rand = random_curve(outcomes.weak, outcomes.strong)
    ax.plot(curve.share * 100, curve.quality, label="learned router", color="C0", linewidth=2)
    ax.plot(rand.share * 100, rand.quality, label="random", color="grey", linestyle="--")
    ax.plot(oracle.share * 100, oracle.quality, label="oracle", color="C2", linestyle=":")
    ax.axhline(curve.strong, color="C3", linewidth=0.8, label=f"strong only ({outcomes.strong_model})")
    ax.axhline(curve.weak, color="C1", linewidth=0.8, label=f"weak only ({outcomes.weak_model})")
    ax.axhline(0.95 * curve.strong, color="C3", linewidth=0.6, linestyle=":", label="95% of strong only")
    ax.set(xlabel="strong model calls (%)", ylabel="quality", title=f"Quality against strong calls: {name}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@router_app.command("calibrate")
def calibrate_(
    data: Annotated[
        Path | None, typer.Argument(help="Routing-outcome JSONL (prompts alone for --strong-share).")
    ] = None,
    strong_share: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Target share of strong calls.")] = None,
    quality: Annotated[float | None, typer.Option(min=0.01, max=1.0, help="Target x strong-only quality.")] = None,
    artifact: ArtifactOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write a copy of the router with this threshold.")] = None,
    threads: ThreadsOpt = 1,
    from_ledger: LedgerOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    since: SinceOpt = "all",
) -> None:
    """Find the threshold that hits a share of strong calls or a quality target, on a file or (--from-ledger) on
    the deployment's judged pairs in --since (recent traffic: its scores also give the share quantiles)."""
    if (strong_share is None) == (quality is None):
        fail("give exactly one of --strong-share or --quality")
    if from_ledger == (data is not None):
        fail("give a routing-outcome file, or --from-ledger (not both)", code=2)
    with training(), one_line_errors():
        from tiergate.train.router.calibrate import calibrate
        from tiergate.train.router.train import load_outcomes, load_prompts, quality_fractions

        model = _model(artifact)
        weak: Any = None
        strong: Any = None
        rules: Any = None
        if from_ledger:
            rows = _ledger(config, db, since)
            scores = model.predict(rows.vectors, rows.outcomes.feature_matrix())
            weak, strong, rules, where = rows.outcomes.weak, rows.outcomes.strong, rows.outcomes.rules, "ledger"
        else:
            assert data is not None
            if quality is None:
                _, prompts = load_prompts(data)
            else:
                outcomes = load_outcomes([data])
                prompts, weak, strong = outcomes.prompts, outcomes.weak, outcomes.strong
            scores = _score(model, prompts, threads)
            where = data.name
        cal = calibrate(scores, weak, strong, strong_share=strong_share, quality=quality)
        _show_calibration(cal)
        if out is not None:
            meta = {**model.meta, "calibration": {**cal.as_dict(), "set": where}}
            arrays = {**model.arrays, "calibration_quantiles": np.quantile(scores, np.linspace(0, 1, 1001))}
            if rules is not None:
                arrays["rules_quantiles"] = np.quantile(rules, np.linspace(0, 1, 1001))
            if weak is not None and strong is not None and np.mean(strong) > 0:
                arrays["calibration_quality"] = quality_fractions(scores, weak, strong)
            LearnedModel.from_parts(meta, arrays).save(out)
            typer.echo(f"Wrote {out}/")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _show_calibration(cal: Calibration) -> None:
    table = Table(title=f"Calibration ({cal.method} = {cal.target:g}, {cal.n} prompts)")
    for name in ("threshold", "strong share", "quality", "x strong-only"):
        table.add_column(name, justify="right")
    table.add_row(f"{cal.threshold:.4f}", f"{cal.strong_share:.1%}", _num(cal.quality), _num(cal.quality_fraction))
    Console().print(table)
    typer.echo(f"router: {{kind: learned, threshold: {cal.threshold:.4f}}}")
