"""Setting a router's threshold on a calibration set (a decision sends ``score >= threshold`` to strong).

Two targets, as RouteLLM sets them: a share of strong calls (the threshold is the score quantile that sends
that share to the strong model), or a quality (the smallest share whose quality reaches ``quality`` x the
strong-only quality of the set).

    >>> cal = calibrate([0.9, 0.7, 0.4, 0.1], strong_share=0.5)
    >>> cal.threshold, cal.strong_share
    (0.55, 0.5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from tiergate.train.router.metrics import ArrayLike, quality_curve, share_for_quality


@dataclass(frozen=True, slots=True)
class Calibration:
    """A threshold and what it yields on the calibration set."""

    method: Literal["strong_share", "quality"]
    target: float
    threshold: float
    n: int
    #: Share of the set whose score is >= threshold.
    strong_share: float
    #: Quality on the set at that threshold and as a fraction of strong-only quality (None without outcomes).
    quality: float | None = None
    quality_fraction: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def threshold_for_count(scores: ArrayLike, count: int) -> float:
    """A threshold that sends the ``count`` highest scores to strong (ties move together)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = ordered.size
    if n == 0:
        raise ValueError("no scores to calibrate on")
    if count <= 0:
        return float(min(1.0, np.nextafter(ordered[0], np.inf)))
    if count >= n:
        return float(ordered[-1])
    # Halfway between the last score in and the first one out, so that tiny numeric drift changes nothing.
    return float((ordered[count - 1] + ordered[count]) / 2)


def threshold_for_share(scores: ArrayLike, strong_share: float) -> float:
    """The threshold that sends ``strong_share`` of ``scores`` to the strong model."""
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError("strong_share must be between 0 and 1")
    n = np.asarray(scores).size
    return threshold_for_count(scores, round(strong_share * n))


def threshold_for_quality(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike, quality: float = 0.95) -> float:
    """The threshold of the smallest strong share whose quality reaches ``quality`` x strong-only quality."""
    if not 0.0 < quality <= 1.0:
        raise ValueError("quality must be in (0, 1]")
    curve = quality_curve(scores, weak, strong)
    share = share_for_quality(curve, quality)
    # The first corner of the curve at or past that share (corners are where a threshold can fall).
    corner = curve.share[np.searchsorted(curve.share, share - 1e-12)]
    return threshold_for_count(scores, round(corner * np.asarray(scores).size))


def realised_share(scores: ArrayLike, threshold: float) -> float:
    return float(np.mean(np.asarray(scores, dtype=np.float64) >= threshold))


def quality_at_threshold(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike, threshold: float) -> float:
    routed = np.asarray(scores, dtype=np.float64) >= threshold
    return float(np.mean(np.where(routed, np.asarray(strong, dtype=np.float64), np.asarray(weak, dtype=np.float64))))


def calibrate(
    scores: ArrayLike,
    weak: ArrayLike | None = None,
    strong: ArrayLike | None = None,
    *,
    strong_share: float | None = None,
    quality: float | None = None,
) -> Calibration:
    """Calibrate to exactly one target: ``strong_share`` (scores alone) or ``quality`` (needs outcomes)."""
    if (strong_share is None) == (quality is None):
        raise ValueError("give exactly one of strong_share or quality")
    has_outcomes = weak is not None and strong is not None
    if strong_share is not None:
        method: Literal["strong_share", "quality"] = "strong_share"
        target = strong_share
        threshold = threshold_for_share(scores, strong_share)
    else:
        assert quality is not None
        if weak is None or strong is None:
            raise ValueError("a quality target needs the weak and strong outcomes")
        method, target = "quality", quality
        threshold = threshold_for_quality(scores, weak, strong, quality)
    got_quality = got_fraction = None
    if has_outcomes:
        assert weak is not None
        assert strong is not None
        got_quality = quality_at_threshold(scores, weak, strong, threshold)
        strong_only = float(np.mean(np.asarray(strong, dtype=np.float64)))
        got_fraction = got_quality / strong_only if strong_only else None
    return Calibration(
        method=method,
        target=target,
        threshold=threshold,
        n=int(np.asarray(scores).size),
        strong_share=realised_share(scores, threshold),
        quality=got_quality,
        quality_fraction=got_fraction,
    )
