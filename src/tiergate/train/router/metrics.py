"""RouteLLM's router metrics, as pure functions of scores and outcomes.

Sort prompts by the router's score (highest first) and send the top share to the strong model; quality at
that share is the mean of the strong model's scores on the routed prompts and the weak model's on the rest.
Prompts with equal scores are routed together by any threshold, so between two distinct scores the curve
is a straight line (the expected quality when ties are broken at random).

- PGR (performance gap recovered) = (quality - weak-only) / (strong-only - weak-only)
- APGR = area under PGR over the strong share from 0 to 1
- CPT(x) = the smallest strong share at which PGR >= x
- share at 95% = the smallest strong share at which quality >= 0.95 x strong-only quality

    >>> m = evaluate([0.9, 0.1], weak=[0.0, 1.0], strong=[1.0, 1.0])
    >>> m.apgr, m.cpt50, round(m.share_at_95, 3)
    (0.75, 0.25, 0.45)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[np.float64]
ArrayLike: TypeAlias = Sequence[float] | npt.NDArray[np.floating] | npt.NDArray[np.integer]


@dataclass(frozen=True, slots=True)
class Curve:
    """Quality against the share of strong calls, as the corners of a piecewise-linear curve."""

    share: Array
    quality: Array
    weak: float
    strong: float

    @property
    def pgr(self) -> Array:
        return (self.quality - self.weak) / (self.strong - self.weak)


@dataclass(frozen=True, slots=True)
class RoutingMetrics:
    n: int
    weak: float
    strong: float
    apgr: float
    cpt50: float
    cpt80: float
    quality_at_20: float
    quality_at_50: float
    share_at_95: float

    def as_dict(self) -> dict[str, float]:
        return {k: (v if k == "n" else float(v)) for k, v in asdict(self).items()}


def _arrays(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike) -> tuple[Array, Array, Array]:
    s, w, g = (np.asarray(a, dtype=np.float64) for a in (scores, weak, strong))
    if s.ndim != 1 or s.shape != w.shape or s.shape != g.shape:
        raise ValueError("scores, weak and strong must be 1-D and of one length")
    if s.size == 0:
        raise ValueError("no prompts to evaluate")
    return s, w, g


def quality_curve(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike) -> Curve:
    """The quality curve of a router that sends the highest scores to the strong model first."""
    s, w, g = _arrays(scores, weak, strong)
    n = s.size
    order = np.argsort(-s, kind="stable")
    gain = np.cumsum((g - w)[order])
    # Corners only where the score changes (and at both ends): ties move together.
    sorted_scores = s[order]
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True]) + 1
    share = np.r_[0.0, ends / n]
    quality = (w.sum() + np.r_[0.0, gain[ends - 1]]) / n
    return Curve(share=share, quality=quality, weak=float(w.mean()), strong=float(g.mean()))


def random_curve(weak: ArrayLike, strong: ArrayLike) -> Curve:
    """The expected curve of a router that picks prompts at random: a straight line."""
    w = np.asarray(weak, dtype=np.float64)
    return quality_curve(np.zeros_like(w), w, strong)


def oracle_curve(weak: ArrayLike, strong: ArrayLike) -> Curve:
    """The best possible curve: prompts ranked by what the strong model gains on them."""
    w, g = np.asarray(weak, dtype=np.float64), np.asarray(strong, dtype=np.float64)
    return quality_curve(g - w, w, g)


def apgr(curve: Curve) -> float:
    """Area under the PGR curve over the strong share in [0, 1] (trapezoids are exact here)."""
    pgr = curve.pgr
    return float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(curve.share)))


def _first_crossing(share: Array, values: Array, target: float) -> float:
    above = np.flatnonzero(values >= target - 1e-12)
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(share[0])
    x0, x1, y0, y1 = share[i - 1], share[i], values[i - 1], values[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def cpt(curve: Curve, pgr_target: float) -> float:
    """Call-performance threshold: the smallest strong share at which PGR reaches ``pgr_target``."""
    return _first_crossing(curve.share, curve.pgr, pgr_target)


def quality_at(curve: Curve, share: float) -> float:
    """Quality when ``share`` of the calls go to the strong model."""
    return float(np.interp(share, curve.share, curve.quality))


def share_for_quality(curve: Curve, fraction: float = 0.95) -> float:
    """The smallest strong share whose quality reaches ``fraction`` of strong-only quality."""
    return _first_crossing(curve.share, curve.quality, fraction * curve.strong)


def evaluate(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike) -> RoutingMetrics:
    """Every metric of one router on one set of prompts."""
    curve = quality_curve(scores, weak, strong)
    if curve.strong == curve.weak:
        raise ValueError("strong-only and weak-only quality are equal: PGR is undefined")
    return RoutingMetrics(
        n=int(np.asarray(scores).size),
        weak=curve.weak,
        strong=curve.strong,
        apgr=apgr(curve),
        cpt50=cpt(curve, 0.5),
        cpt80=cpt(curve, 0.8),
        quality_at_20=quality_at(curve, 0.2),
        quality_at_50=quality_at(curve, 0.5),
        share_at_95=share_for_quality(curve, 0.95),
    )
