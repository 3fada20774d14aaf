"""What the guard's and the router's data files share: JSONL lines that each carry a ``prompt`` string.

>>> prompt_row(Path("x.jsonl"), 3, '{"id": "a", "prompt": "hi"}')
{'id': 'a', 'prompt': 'hi'}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file that is missing or cannot be used; the message names the file (and the line)."""


def prompt_row(path: Path, number: int, line: str) -> dict[str, Any]:
    """Line ``number`` of ``path`` as a JSON object with a ``prompt`` string, else a :class:`DataError`."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise DataError(f"{path}:{number}: each line needs a 'prompt' string")
    return row
