"""The learned router: the shipped artifact, training, calibration; on the real encoder and real outcomes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tiergate.config import RouterConfig
from tiergate.errors import ConfigError
from tiergate.routing.base import RouteDecision, Signals, decide
from tiergate.routing.features import (
    FEATURE_NAMES,
    WORD_PROBLEM_FEATURES,
    batch_features,
    request_features,
    routing_text,
    text_features,
)
from tiergate.routing.learned import LearnedModel, LearnedRouter
from tiergate.signals.encoder import Encoder
from tiergate.train.router.calibrate import calibrate, quality_at_threshold, realised_share, threshold_for_share
from tiergate.train.router.metrics import evaluate
from tiergate.train.router.train import (
    HEAD_FEATURES,
    DataError,
    Outcomes,
    fit_gain_head,
    fit_ridge,
    groups,
    head_model,
    inner_splits,
    load_outcomes,
    select_alpha,
    train_router,
)
from tiergate.types import ChatRequest, Message, Tier, ToolSpec

DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "routing"


@pytest.fixture(scope="module")
def encoder() -> Iterator[Encoder]:
    enc = Encoder.load()
    yield enc
    enc.close()


@pytest.fixture(scope="module")
def outcomes() -> Outcomes:
    return load_outcomes([DATA / "mmlu.jsonl", DATA / "gsm8k.jsonl"])


@pytest.fixture(scope="module")
def small(outcomes: Outcomes, encoder: Encoder) -> tuple[Outcomes, np.ndarray]:
    """About 160 prompts: 8 MMLU subjects in full-ish slices and a slice of GSM8K, with their embeddings."""
    families = np.array(outcomes.families)
    tasks = np.array(outcomes.tasks)
    picked: list[int] = []
    for task in sorted(set(tasks[families == "mmlu"]))[:8]:
        picked += np.flatnonzero(tasks == task)[:14].tolist()
    picked += np.flatnonzero(families == "gsm8k")[:48].tolist()
    data = outcomes.subset(picked)
    return data, encoder.encode(data.prompts)


def test_the_router_protocol_and_the_shipped_threshold() -> None:
    router = LearnedRouter.from_config(RouterConfig(kind="learned"))
    assert (router.kind, router.needs_embedding) == ("learned", True)
    meta = router.model.meta
    assert meta["calibration"]["method"] == "quality"
    assert router.threshold == pytest.approx(meta["calibration"]["threshold"])
    assert LearnedRouter.from_config(RouterConfig(kind="learned", threshold=0.7)).threshold == 0.7
    few = LearnedRouter.from_config(RouterConfig(kind="learned", strong_share=0.1)).threshold
    many = LearnedRouter.from_config(RouterConfig(kind="learned", strong_share=0.6)).threshold
    assert 0.0 < many < few < 1.0


def test_scores_and_decisions(encoder: Encoder) -> None:
    router = LearnedRouter.default()
    cases = [("hi", True), ("Prove that there are infinitely many primes, then compute 17 * 23 step by step.", False)]
    for text, far in cases:
        request = ChatRequest(model="auto", messages=[Message.text("user", text)])
        signals = Signals(embedding=encoder.encode([routing_text(request)])[0])
        score = router.score(request, signals)
        assert 0.0 <= score <= 1.0
        decision = decide(router, request, signals)
        assert decision.fallback is far, decision  # "hi" is nothing like the benchmarks' prompts
        assert decision.score == pytest.approx(score)
        if not far:
            assert decision.tier is (Tier.CLOSED if score >= router.threshold else Tier.OPEN)
    with pytest.raises(ValueError, match="embedding"):
        router.score(ChatRequest(model="auto", messages=[Message.text("user", "x")]), Signals())


def test_request_features_see_the_conversation() -> None:
    tool = ToolSpec(name="f", description="", input_schema={"type": "object"})
    request = ChatRequest(
        model="auto",
        system="be brief",
        messages=[Message.text("user", "a"), Message.text("assistant", "b"), Message.text("user", "What is 2+2?")],
        tools=(tool,),
    )
    features = dict(zip(FEATURE_NAMES, request_features(request).tolist(), strict=True))
    assert routing_text(request) == "What is 2+2?"
    assert features["log_turns"] == pytest.approx(np.log1p(2))
    assert features["log_tools"] == pytest.approx(np.log1p(1))
    assert features["log_system_chars"] == pytest.approx(np.log1p(8))
    assert batch_features(["What is 2+2?"])[0][0] == pytest.approx(features["log_chars"])


def test_word_problem_features_are_zero_unless_a_quantity_and_no_options() -> None:
    def named(text: str) -> dict[str, float]:
        return dict(zip(FEATURE_NAMES, text_features(text).tolist(), strict=True))

    problem = named("Jan has three cats and 2.5 times as many fish, half of them red. How many fish, in all?")
    assert problem["word_problem"] == 1.0
    for name in WORD_PROBLEM_FEATURES:
        assert problem[name] > 0.0, name
    for text in (
        "Write a short poem about the sea, and make it rhyme.",
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:",
    ):
        other = named(text)
        assert [other[n] for n in ("word_problem", *WORD_PROBLEM_FEATURES)] == [0.0] * 7, text


def test_the_head_reads_generic_statistics_only(small: tuple[Outcomes, np.ndarray]) -> None:
    """Answer options and word-problem cues describe one benchmark's format: the head gives them weight 0."""
    data, embeddings = small
    feats = batch_features(data.prompts)
    arrays = fit_gain_head(embeddings, feats, data.gain, 10.0)
    weights = dict(zip(FEATURE_NAMES, arrays["w0"][embeddings.shape[1] :, 0].tolist(), strict=True))
    for name in ("choices", "word_problem", *WORD_PROBLEM_FEATURES):
        assert weights[name] == 0.0, name
    assert {n for n, w in weights.items() if w != 0.0} <= set(HEAD_FEATURES)
    assert weights["log_chars"] != 0.0
    # The head is the ridge of the gain on the vector and the standardised statistics: reproduce its scores.
    use = [FEATURE_NAMES.index(n) for n in HEAD_FEATURES]
    f = feats[:, use].astype(np.float64)
    std = f.std(axis=0)
    std[std < 1e-6] = 1.0
    x = np.c_[embeddings, (f - f.mean(axis=0)) / std]
    coef, intercept = fit_ridge(x, data.gain, 10.0)
    model = head_model(arrays)
    np.testing.assert_allclose(model.logits(embeddings, feats) / 4.0, x @ coef + intercept, atol=1e-4)


def test_the_penalty_is_chosen_by_the_worst_inner_fold(small: tuple[Outcomes, np.ndarray]) -> None:
    data, embeddings = small
    feats = batch_features(data.prompts)
    alpha, table = select_alpha(embeddings, feats, data, alphas=(1.0, 100.0, 10000.0), min_rows=10)
    assert set(table) == {"1", "100", "10000"}
    assert table[f"{alpha:g}"] == max(table.values())
    splits = inner_splits(data.families, groups(data), seed=0)
    fams = np.array(data.families)
    # Leave-one-benchmark-out first (both benchmarks are here), then 3 folds of whole groups.
    assert [set(fams[te]) for _, te in splits[:2]] == [{"gsm8k"}, {"mmlu"}]
    row_groups = np.array(groups(data))
    for tr, te in splits[2:]:
        assert not set(row_groups[tr]) & set(row_groups[te])


def test_a_prior_pulls_the_head_toward_its_weights(small: tuple[Outcomes, np.ndarray]) -> None:
    """``--from-ledger``: with a huge penalty the head is the prior (up to its unpenalised intercept, which only
    shifts every score alike); with a small one it fits the new rows."""
    data, embeddings = small
    feats = batch_features(data.prompts)
    prior = LearnedModel.default()
    flipped = -data.gain  # rows that say the opposite of what the prior learned
    kept = head_model(fit_gain_head(embeddings, feats, flipped, 1e9, prior=prior))
    shift = kept.logits(embeddings, feats) - prior.logits(embeddings, feats)
    np.testing.assert_allclose(shift, np.full_like(shift, shift.mean()), atol=1e-3)
    moved = head_model(fit_gain_head(embeddings, feats, flipped, 1.0, prior=prior)).logits(embeddings, feats)
    assert np.corrcoef(moved, flipped)[0, 1] > np.corrcoef(prior.logits(embeddings, feats), flipped)[0, 1] + 0.3


def test_shipped_artifact_reproduces_its_recorded_held_out_check(outcomes: Outcomes, encoder: Encoder) -> None:
    model = LearnedModel.default()
    check = model.meta["check"]
    index = {id_: i for i, id_ in enumerate(outcomes.ids)}
    subset = outcomes.subset([index[i] for i in check["ids"]])
    assert set(groups(subset)) <= set(model.meta["data"]["holdout_groups"]), "check rows must be held out"
    scores = model.predict(encoder.encode(subset.prompts), batch_features(subset.prompts))
    np.testing.assert_allclose(scores, check["scores"], atol=model.meta["tolerance"]["scores"])
    got = evaluate(scores, subset.weak, subset.strong).as_dict()
    for name, recorded in check["metrics"].items():
        assert got[name] == pytest.approx(recorded, abs=model.meta["tolerance"]["metrics"]), name


def test_training_with_a_fixed_seed_is_deterministic(small: tuple[Outcomes, np.ndarray]) -> None:
    data, embeddings = small
    first = train_router(data, embeddings, seed=3)
    second = train_router(data, embeddings, seed=3)
    assert first.arrays.keys() == second.arrays.keys()
    for key in first.arrays:
        np.testing.assert_array_equal(first.arrays[key], second.arrays[key])
    same = {k: v for k, v in first.meta.items() if k != "created"}
    assert same == {k: v for k, v in second.meta.items() if k != "created"}
    other = train_router(data, embeddings, seed=4)
    assert other.meta["data"]["holdout_groups"] != first.meta["data"]["holdout_groups"]
    held = set(first.meta["data"]["holdout_groups"])
    assert {t for t in data.tasks if t.startswith("mmlu/")} & held, "whole subjects are held out"


def test_saved_artifact_round_trips(small: tuple[Outcomes, np.ndarray], tmp_path: Path) -> None:
    data, embeddings = small
    model = train_router(data, embeddings, seed=0)
    model.save(tmp_path)
    again = LearnedRouter.from_config(RouterConfig(kind="learned", artifact=str(tmp_path)))
    feats = batch_features(data.prompts)
    np.testing.assert_allclose(again.model.predict(embeddings, feats), model.predict(embeddings, feats), atol=1e-6)
    assert json.loads((tmp_path / "learned.json").read_text())["seed"] == 0
    with pytest.raises(ConfigError, match="not found"):
        LearnedModel.load(tmp_path / "missing")


def test_calibration_hits_the_requested_share(small: tuple[Outcomes, np.ndarray]) -> None:
    data, embeddings = small
    scores = LearnedModel.default().predict(embeddings, batch_features(data.prompts))
    n = len(scores)
    for share in (0.1, 0.3, 0.5, 0.8):
        cal = calibrate(scores, strong_share=share)
        assert abs(cal.strong_share - share) <= 1 / n
        assert realised_share(scores, threshold_for_share(scores, share)) == cal.strong_share
    cal = calibrate(scores, data.weak, data.strong, quality=0.95)
    assert cal.quality is not None
    assert cal.quality_fraction is not None
    assert cal.quality_fraction >= 0.95
    assert cal.quality == quality_at_threshold(scores, data.weak, data.strong, cal.threshold)
    # One prompt fewer to the strong model would miss the target.
    routed = round(cal.strong_share * n)
    assert routed > 0
    fewer = np.sort(scores)[::-1][routed - 1] + 1e-9
    assert quality_at_threshold(scores, data.weak, data.strong, fewer) < 0.95 * data.strong.mean()
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(scores)


def test_the_artifact_share_quantiles_match_its_calibration_set() -> None:
    model = LearnedModel.default()
    cal = model.meta["calibration"]
    assert model.threshold_for_share(cal["strong_share"]) == pytest.approx(cal["threshold"], abs=0.01)


def test_bad_data_fails_with_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "prompt": "x", "outcomes": {"w": 0, "s": 1}}\nnot json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        load_outcomes([path])
    path.write_text('{"id": "a", "prompt": "x"}\n')
    with pytest.raises(DataError, match="outcomes"):
        load_outcomes([path])


def test_a_broken_artifact_is_a_config_error(tmp_path: Path) -> None:
    model = LearnedModel.default()
    model.save(tmp_path)
    (tmp_path / "learned.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"router\.artifact: .* is not a readable artifact"):
        LearnedModel.load(tmp_path)
    arrays = {k: v for k, v in model.arrays.items() if k != "w0"}
    with pytest.raises(ConfigError, match="missing w0"):
        LearnedModel.from_parts(model.meta, arrays)
    with pytest.raises(ConfigError, match="not a tiergate-learned-router"):
        LearnedModel.from_parts({**model.meta, "format_version": 99}, model.arrays)


def _decide(router: LearnedRouter, encoder: Encoder, text: str) -> RouteDecision:
    request = ChatRequest(model="auto", messages=[Message.text("user", text)])
    return router.decide(request, Signals(embedding=encoder.encode([routing_text(request)])[0]))


FAR = "Refactor this JavaScript to use async/await:\nfetch(url).then(r => r.json()).then(d => console.log(d));"
NEAR = "Which of the following is the primary function of the mitochondria?\nA. Protein synthesis\nB. Energy\nAnswer:"


def test_a_prompt_far_from_the_training_data_falls_back_to_the_rules(encoder: Encoder) -> None:
    router = LearnedRouter.from_config(RouterConfig(kind="learned", strong_share=0.4))
    ood = router.model.meta["ood"]
    assert router.ood_threshold == ood["threshold"]
    assert router.model.arrays["ood_reference"].shape == (ood["reference_rows"], 384)
    far = _decide(router, encoder, FAR)
    assert far.ood is not None
    assert far.ood > ood["threshold"]
    assert far.fallback
    assert re.fullmatch(r"ood:(\d\.\d\d)>(\d\.\d\d)->rules:(\d\.\d\d)(>|<=)0\.60", far.reason), far.reason
    near = _decide(router, encoder, NEAR)
    assert near.ood is not None
    assert near.ood < ood["threshold"]
    assert not near.fallback
    assert near.reason.startswith("router:")
    # A long technical prompt far from the data is among the rules' top 40%: it goes closed.
    hard = _decide(router, encoder, FAR + "\nExplain why, step by step, and debug the error handling. " * 12)
    assert hard.fallback
    assert hard.tier is Tier.CLOSED
    assert ">0.60" in hard.reason
    # Mostly non-Latin script: the English encoder cannot place it, whatever its distance.
    script = _decide(router, encoder, "请用简单的语言解释什么是区块链。")
    assert script.reason.startswith("ood:script->rules:")
    assert script.fallback


def test_the_fallback_is_configurable(encoder: Encoder) -> None:
    closed = LearnedRouter.from_config(RouterConfig(kind="learned", ood={"fallback": "closed"}))
    decision = _decide(closed, encoder, FAR)
    assert (decision.tier, decision.reason.split("->")[1]) == (Tier.CLOSED, "closed")
    off = LearnedRouter.from_config(RouterConfig(kind="learned", ood={"enabled": False}))
    plain = _decide(off, encoder, FAR)
    assert plain.reason.startswith("router:")
    assert plain.ood is None
    strict = LearnedRouter.from_config(RouterConfig(kind="learned", ood={"threshold": 0.2}))
    assert _decide(strict, encoder, NEAR).fallback


def test_the_quality_curve_gives_the_capacity_floor() -> None:
    router = LearnedRouter.default()
    base = router.threshold
    floor = router.threshold_for_quality(0.9)
    assert floor is not None
    assert floor > base
    share_at_floor = router.model.share_for_quality(0.9)
    assert share_at_floor is not None
    assert share_at_floor < router.model.meta["calibration"]["strong_share"]
    assert router.threshold_for_quality(0.999) is not None


def test_a_weights_file_of_another_training_is_refused(small: tuple[Outcomes, np.ndarray], tmp_path: Path) -> None:
    data, embeddings = small
    train_router(data, embeddings, seed=0).save(tmp_path / "a")
    train_router(data, embeddings, seed=1).save(tmp_path / "b")
    (tmp_path / "a" / "learned.npz").write_bytes((tmp_path / "b" / "learned.npz").read_bytes())
    with pytest.raises(ConfigError, match="another training"):
        LearnedModel.load(tmp_path / "a")
