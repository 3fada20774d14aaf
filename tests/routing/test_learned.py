"""The learned router: the shipped artifact, training, calibration; on the real encoder and real outcomes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tiergate.config import RouterConfig
from tiergate.errors import ConfigError
from tiergate.routing.base import Signals, decide
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
    DataError,
    Outcomes,
    benchmark_weights,
    fit_head,
    fit_ridge,
    groups,
    load_outcomes,
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
    for text in ["hi", "Prove that there are infinitely many primes, then compute 17 * 23 step by step."]:
        request = ChatRequest(model="auto", messages=[Message.text("user", text)])
        signals = Signals(embedding=encoder.encode([routing_text(request)])[0])
        score = router.score(request, signals)
        assert 0.0 <= score <= 1.0
        decision = decide(router, request, signals)
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


def test_benchmark_weights_lift_the_small_benchmark() -> None:
    weights = benchmark_weights(["mmlu"] * 16 + ["gsm8k"] * 4)
    assert weights[:16].tolist() == [1.0] * 16
    assert weights[16:].tolist() == [2.0] * 4


def test_the_word_problem_stage_moves_word_problems_only(small: tuple[Outcomes, np.ndarray]) -> None:
    data, embeddings = small
    feats = batch_features(data.prompts)
    gain = data.strong - data.weak
    problem = feats[:, FEATURE_NAMES.index("word_problem")] > 0.5
    assert problem.sum() == 48
    assert not problem[np.array(data.families) == "mmlu"].any()
    arrays = fit_head(embeddings, feats, gain, data.families)
    # Stage 1 alone: the same head with the word-problem weights (indicator and cues) set to 0.
    stage1 = dict(arrays)
    w0 = arrays["w0"].copy()
    w0[embeddings.shape[1] + FEATURE_NAMES.index("word_problem") :] = 0.0
    stage1["w0"] = w0
    meta = {**LearnedModel.default().meta, "calibration": {"threshold": 0.5}}
    both = LearnedModel.from_parts(meta, {**arrays, "calibration_quantiles": np.zeros(2)})
    first = LearnedModel.from_parts(meta, {**stage1, "calibration_quantiles": np.zeros(2)})
    # The folded feature means and stds leave other prompts' scores exactly as stage 1 made them...
    np.testing.assert_array_equal(both.predict(embeddings, feats)[~problem], first.predict(embeddings, feats)[~problem])
    assert not np.array_equal(both.predict(embeddings, feats)[problem], first.predict(embeddings, feats)[problem])

    # ...and on word problems the head equals stage 1 plus a ridge fit of its residuals on the cues.
    def gain_of(model: LearnedModel) -> np.ndarray:
        p = model.predict(embeddings, feats)
        return np.log(p / (1 - p)) / 4.0

    cues = feats[problem][:, [FEATURE_NAMES.index(n) for n in WORD_PROBLEM_FEATURES]].astype(np.float64)
    std = cues.std(axis=0)
    std[std < 1e-6] = 1.0
    z = (cues - cues.mean(axis=0)) / std
    coef, intercept = fit_ridge(z, gain[problem] - gain_of(first)[problem], 100.0)
    np.testing.assert_allclose(gain_of(both)[problem] - gain_of(first)[problem], z @ coef + intercept, atol=1e-4)


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
