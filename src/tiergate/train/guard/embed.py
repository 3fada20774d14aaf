"""Embedding many texts for training and evaluation: windows, one encoder run per window, an on-disk cache.

    encode = Encoder.load().encode_layers
    vectors = embed_windows(corpus.texts, encode, cache=Path(".cache/guard"))
    vectors.matrix          # (windows, 1 + len(POOLED_LAYERS), 384): the pooled states the guard reads
    vectors.vectors         # (windows, 384): the sentence vectors (row 0)
    vectors.owner           # (windows,) index of the text each window belongs to

The cache file of a list of texts is named by a hash of the encoder, of the layers pooled and of the
windows' texts, so a changed text, encoder, layer choice or window rule re-encodes and never reads a stale
file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from tiergate.guard.windows import Windower
from tiergate.signals.encoder import DIM, MODEL_ID, POOLED_LAYERS
from tiergate.train.guard.data import Corpus

Encode: TypeAlias = Callable[[Sequence[str]], npt.NDArray[np.float32]]
CHUNK = 512


@dataclass(frozen=True, slots=True)
class WindowVectors:
    """The pooled encoder states of every window of a list of texts, with the window texts and their owners."""

    matrix: npt.NDArray[np.float32]
    owner: npt.NDArray[np.intp]
    windows: list[str]
    max_windows: int = 2

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        """The windows' sentence vectors, ``(windows, 384)``."""
        return np.ascontiguousarray(self.matrix[:, 0])

    def of(self, index: Sequence[int] | npt.NDArray[np.intp]) -> WindowVectors:
        """The windows of the texts at ``index`` (renumbered 0..len(index)-1, in that order)."""
        idx = np.asarray(index, dtype=np.intp)
        rank = np.full(int(self.owner.max(initial=-1)) + 1, -1, dtype=np.intp)
        rank[idx] = np.arange(idx.size)
        keep = np.flatnonzero(rank[self.owner] >= 0)
        keep = keep[np.argsort(rank[self.owner[keep]], kind="stable")]
        return WindowVectors(
            self.matrix[keep], rank[self.owner[keep]], [self.windows[i] for i in keep], self.max_windows
        )


def max_by_owner(values: npt.NDArray[np.float64], owner: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.float64]:
    """The highest value of each owner's windows (owners 0..n-1; an owner with no window gets -inf)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, values)
    return out


def embed_windows(
    texts: Sequence[str],
    encode: Encode,
    *,
    windower: Windower | None = None,
    cache: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> WindowVectors:
    """Split ``texts`` into windows and embed them, reading and writing ``cache`` when given."""
    windower = windower or Windower()
    split = windower.split_many(texts)
    owner = np.repeat(np.arange(len(texts), dtype=np.intp), [len(w) for w in split])
    windows = [w for ws in split for w in ws]
    path: Path | None = None
    if cache is not None:
        digest = hashlib.sha256(f"{MODEL_ID}|pooled layers {POOLED_LAYERS}".encode())
        for window in windows:
            digest.update(hashlib.sha256(window.encode()).digest())
        path = cache / f"windows-{digest.hexdigest()[:20]}.npy"
        if path.exists():
            matrix = np.load(path, allow_pickle=False)
            if matrix.shape == (len(windows), 1 + len(POOLED_LAYERS), DIM):
                return WindowVectors(np.asarray(matrix, dtype=np.float32), owner, windows, windower.max_windows)
    parts = []
    for start in range(0, len(windows), CHUNK):
        parts.append(encode(windows[start : start + CHUNK]))
        if progress is not None:
            progress(len(parts[-1]))
    matrix = np.concatenate(parts) if parts else np.zeros((0, 1 + len(POOLED_LAYERS), DIM), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, matrix)
        tmp.replace(path)
    return WindowVectors(matrix, owner, windows, windower.max_windows)


def embed_corpus(
    corpus: Corpus,
    encode: Encode,
    *,
    windower: Windower | None = None,
    cache: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> WindowVectors:
    """:func:`embed_windows` of a corpus, source by source, so that each source's cache file outlives changes
    to the others."""
    windower = windower or Windower()
    parts = []
    for source in dict.fromkeys(corpus.sources.tolist()):
        index = np.flatnonzero(corpus.sources == source)
        got = embed_windows([corpus.texts[i] for i in index], encode, windower=windower, cache=cache, progress=progress)
        parts.append((got, index))
    owner = np.concatenate([index[got.owner] for got, index in parts])
    order = np.argsort(owner, kind="stable")
    windows = [w for got, _ in parts for w in got.windows]
    matrix = np.concatenate([got.matrix for got, _ in parts])
    return WindowVectors(matrix[order], owner[order], [windows[i] for i in order], windower.max_windows)
