"""Fixtures of the guard's tests: one real encoder, the shared data folder and the corpus read from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tiergate.signals.encoder import Encoder
from tiergate.train.guard.data import Corpus, load_corpus

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def encoder() -> Iterator[Encoder]:
    enc = Encoder.load()
    yield enc
    enc.close()


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return load_corpus(DATA)


@pytest.fixture(scope="session")
def full_corpus() -> Corpus:
    """The shared data and the package sources (docs/guard-sources.md): what the shipped guard trains on."""
    return load_corpus(DATA, packages=True)
