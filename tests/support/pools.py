"""Pools of in-process test backends (no HTTP), for the pool's and the dispatcher's own tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tiergate.backends import Backend
from tiergate.config import BackendConfig
from tiergate.dispatch.pool import Pool

KIND = "test"


def pool_of(backend: Callable[[BackendConfig], Backend], *backends: dict[str, Any]) -> Pool:
    """A pool with one ``backend(config)`` per dict of config fields (tier ``open`` unless it says otherwise)."""
    configs = [BackendConfig.model_validate({"tier": "open", "kind": KIND, **fields}) for fields in backends]
    return Pool(configs, {KIND: backend})
