"""Reading a trained artifact (``*.json`` metadata + ``*.npz`` weights), shared by the router and the guard."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.errors import ConfigError

Parts = tuple[dict[str, Any], dict[str, Any]]


def read_folder(path: str | Path, meta_file: str, weights_file: str, *, what: str, train: str) -> Parts:
    """Metadata and arrays from the artifact folder ``path`` (or either of its two files).

    A missing or unreadable file is a one-line ConfigError that says how to make one.
    """
    folder = Path(path)
    if folder.suffix in {".json", ".npz"}:
        folder = folder.parent
    try:
        meta = json.loads((folder / meta_file).read_text("utf-8"))
        with np.load(folder / weights_file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError as exc:
        raise ConfigError(f"{what}: {exc.filename} not found; run '{train}'") from exc
    except (OSError, ValueError) as exc:  # unreadable, bad JSON, not an npz
        raise ConfigError(f"{what}: {folder} is not a readable artifact ({exc})") from exc
    return meta, arrays


def read_shipped(package: str, meta_file: str, weights_file: str) -> Parts:
    """Metadata and arrays of the artifact shipped as package data in ``package``/artifacts."""
    root = importlib.resources.files(package).joinpath("artifacts")
    meta = json.loads(root.joinpath(meta_file).read_text("utf-8"))
    with root.joinpath(weights_file).open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays
