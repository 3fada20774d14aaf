from __future__ import annotations

import math

import numpy as np
import pytest

from tiergate.train.router.metrics import (
    apgr,
    cpt,
    evaluate,
    oracle_curve,
    quality_at,
    quality_curve,
    random_curve,
    share_for_quality,
)

# Four prompts: the strong model gains on #0 and #1, loses on #3, and both fail #2.
WEAK = [0.0, 0.0, 0.0, 1.0]
STRONG = [1.0, 1.0, 0.0, 0.0]


def test_curve_corners_follow_the_ranking() -> None:
    curve = quality_curve([0.9, 0.8, 0.2, 0.1], WEAK, STRONG)
    assert curve.weak == 0.25
    assert curve.strong == 0.5
    np.testing.assert_allclose(curve.share, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.quality, [0.25, 0.5, 0.75, 0.75, 0.5])
    np.testing.assert_allclose(curve.pgr, [0, 1, 2, 2, 1])


def test_perfect_ranking() -> None:
    curve = quality_curve([0.9, 0.8, 0.2, 0.1], WEAK, STRONG)
    # PGR: 0 -> 1 -> 2 -> 2 -> 1 at steps of 0.25; trapezoids: 0.125 + 0.375 + 0.5 + 0.375.
    assert apgr(curve) == pytest.approx(1.375)
    assert cpt(curve, 0.5) == pytest.approx(0.125)
    assert cpt(curve, 0.8) == pytest.approx(0.2)
    assert quality_at(curve, 0.2) == pytest.approx(0.45)
    assert quality_at(curve, 0.5) == pytest.approx(0.75)
    # 95% of strong-only quality (0.475) is reached on the way up to 0.5 at share 0.225.
    assert share_for_quality(curve, 0.95) == pytest.approx(0.225)


def test_worst_ranking_goes_below_weak() -> None:
    curve = quality_curve([0.1, 0.2, 0.8, 0.9], WEAK, STRONG)
    np.testing.assert_allclose(curve.quality, [0.25, 0.0, 0.0, 0.25, 0.5])
    assert apgr(curve) == pytest.approx((-0.5 - 1 - 0.5 + 0.5) / 4)
    assert cpt(curve, 0.5) == pytest.approx(0.875)


def test_ties_route_together_as_a_straight_line() -> None:
    curve = quality_curve([0.5, 0.5, 0.5, 0.5], WEAK, STRONG)
    np.testing.assert_allclose(curve.share, [0, 1])
    np.testing.assert_allclose(curve.quality, [0.25, 0.5])
    assert apgr(curve) == pytest.approx(0.5)
    assert quality_at(curve, 0.5) == pytest.approx(0.375)
    assert share_for_quality(curve, 0.95) == pytest.approx(0.9)


def test_random_and_oracle_bounds() -> None:
    rng = np.random.default_rng(0)
    weak = rng.integers(0, 2, 500).astype(float)
    strong = np.maximum(weak, rng.integers(0, 2, 500))
    assert apgr(random_curve(weak, strong)) == pytest.approx(0.5)
    best = apgr(oracle_curve(weak, strong))
    assert best > apgr(quality_curve(rng.random(500), weak, strong))
    assert cpt(random_curve(weak, strong), 0.8) == pytest.approx(0.8)


def test_evaluate_collects_every_metric() -> None:
    m = evaluate([0.9, 0.8, 0.2, 0.1], WEAK, STRONG)
    assert m.n == 4
    assert m.as_dict()["apgr"] == pytest.approx(1.375)
    assert m.cpt50 == pytest.approx(0.125)
    assert m.cpt80 == pytest.approx(0.2)
    assert m.quality_at_20 == pytest.approx(0.45)
    assert m.quality_at_50 == pytest.approx(0.75)


def test_weak_already_good_enough_needs_no_strong_calls() -> None:
    curve = quality_curve([1.0, 0.0], [1.0, 1.0], [1.0, 0.9])
    assert share_for_quality(curve, 0.95) == 0.0


def test_unreachable_target_is_nan() -> None:
    curve = quality_curve([1.0, 0.0], [0.0, 0.0], [1.0, 0.0])
    assert math.isnan(cpt(curve, 1.5))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one length"):
        quality_curve([0.1], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="no prompts"):
        quality_curve([], [], [])
    with pytest.raises(ValueError, match="undefined"):
        evaluate([0.1, 0.2], [1.0, 0.0], [1.0, 0.0])
