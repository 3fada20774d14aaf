"""Held-out evaluation by style: calibration on prompts by others, the worst source, AUC."""

from __future__ import annotations

import numpy as np
import pytest

from tiergate.train.guard import evaluate as ev
from tiergate.train.guard.data import Corpus


def corpus_of(rows: list[tuple[str, int, int]]) -> Corpus:
    """(source, label, count) -> a corpus of placeholder texts, roles from the label."""
    sources, labels = [], []
    for source, label, count in rows:
        sources += [source] * count
        labels += [label] * count
    n = len(sources)
    roles = [
        "jailbreak" if s == "slabs" and y else ("harmful" if y else "benign")
        for s, y in zip(sources, labels, strict=True)
    ]
    return Corpus(
        ids=[str(i) for i in range(n)],
        texts=[f"text {i}" for i in range(n)],
        labels=np.array(labels, np.int8),
        sources=np.array(sources, dtype=np.str_),
        roles=np.array(roles, dtype=np.str_),
        groups=np.array(sources, dtype=np.str_),
    )


def test_auc() -> None:
    assert ev.auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert ev.auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert ev.auc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5  # ties count half
    assert np.isnan(ev.auc(np.array([]), np.array([0.1])))


def test_calibration_reads_only_prompts_written_by_others() -> None:
    corpus = corpus_of(
        [("mmlu", 0, 200), ("dna_advice", 0, 20), ("contrast", 0, 50), ("dna_malicious", 1, 40), ("everyday", 0, 10)]
    )
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.5, len(corpus))
    mmlu = corpus.sources == "mmlu"
    scores[np.flatnonzero(mmlu)[:10]] = np.linspace(0.90, 0.99, 10)  # 5% of MMLU scores high
    scores[corpus.sources == "contrast"] = 0.999  # the project's own set never moves the threshold
    scores[corpus.sources == "everyday"] = 0.999  # nor does a benign source under 100 texts
    scores[corpus.sources == "dna_malicious"] = np.linspace(0.5, 1.0, 40)
    threshold = ev.calibrate(corpus, scores)
    assert (scores[mmlu] >= threshold).mean() <= 0.02
    assert (scores[mmlu] >= np.nextafter(threshold, -np.inf)).mean() > 0.02  # the lowest such threshold
    report = ev.Report.of(corpus, scores, threshold)
    assert report.worst_benign[0] == "mmlu"
    assert report.worst_benign[1] <= 0.02
    assert report.worst_harmful[0] == "dna_malicious"
    assert report.contrast_fpr == 1.0  # reported, not calibrated on
    assert report.meets()["worst_benign"]
    assert not report.meets()["worst_harmful"]
    lookalike_high = scores.copy()
    lookalike_high[corpus.sources == "dna_advice"] = np.linspace(0.96, 0.999, 20)
    stricter = ev.calibrate(corpus, lookalike_high)
    assert (lookalike_high[corpus.sources == "dna_advice"] >= stricter).mean() <= 0.10
    assert stricter > threshold


def test_out_of_fold_fits_without_the_held_out_group() -> None:
    corpus = corpus_of([("mmlu", 0, 120), ("advbench", 1, 30), ("dna_malicious", 1, 30)])
    held = corpus.groups
    seen: list[set[str]] = []

    def candidate(train: ev.Mask, test: ev.Mask) -> ev.Scores:
        seen.append(set(corpus.sources[train].tolist()) & set(corpus.sources[test].tolist()))
        return np.full(int(test.sum()), 0.5)

    scores = ev.out_of_fold(corpus, held, candidate)
    assert seen == [set(), set(), set()]
    assert not np.isnan(scores).any()


def test_baselines_score_in_range() -> None:
    corpus = corpus_of([("mmlu", 0, 120), ("advbench", 1, 60)])
    texts = [("a short one" if y else "a much longer ordinary benign question " * 3) for y in corpus.labels]
    corpus = Corpus(corpus.ids, texts, corpus.labels, corpus.sources, corpus.roles, corpus.groups)
    train = np.arange(len(corpus)) % 2 == 0
    scores = ev.length_baseline(corpus)(train, ~train)
    assert scores.shape == ((~train).sum(),)
    assert ev.auc(scores[corpus.labels[~train] == 1], scores[corpus.labels[~train] == 0]) == pytest.approx(1.0)
