"""The configured backends, by name and by tier, with what the gateway knows of their health."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from tiergate.backends import Backend, BackendFactory, build_backend
from tiergate.config import BackendConfig
from tiergate.types import Tier

log = logging.getLogger("tiergate.backends")


@dataclass(slots=True)
class BackendState:
    backend: Backend
    healthy: bool = True
    in_flight: int = 0
    last_error: str | None = None

    @property
    def config(self) -> BackendConfig:
        return self.backend.config

    @property
    def name(self) -> str:
        return self.backend.config.name


class Pool:
    def __init__(self, configs: list[BackendConfig], registry: dict[str, BackendFactory]) -> None:
        self.states = {c.name: BackendState(build_backend(c, registry)) for c in configs}

    @classmethod
    def of(cls, backends: list[Backend]) -> Pool:
        pool = cls([], {})
        pool.states = {b.config.name: BackendState(b) for b in backends}
        return pool

    async def start(self) -> None:
        await asyncio.gather(*(s.backend.start() for s in self.states.values()))

    async def close(self) -> None:
        await asyncio.gather(*(s.backend.close() for s in self.states.values()), return_exceptions=True)

    def get(self, name: str) -> BackendState | None:
        return self.states.get(name)

    def by_model(self, model: str) -> BackendState | None:
        return next((s for s in self.states.values() if s.backend.model == model), None)

    def tier(self, tier: Tier) -> list[BackendState]:
        """Backends of ``tier``: healthy first, then fewest requests in flight (least outstanding)."""
        members = [s for s in self.states.values() if s.config.tier is tier]
        return sorted(members, key=lambda s: (not s.healthy, s.in_flight))

    def has_tier(self, tier: Tier) -> bool:
        return any(s.config.tier is tier for s in self.states.values())

    async def check_health(self) -> dict[str, bool]:
        results = await asyncio.gather(*(s.backend.health() for s in self.states.values()), return_exceptions=True)
        out: dict[str, bool] = {}
        for state, ok in zip(self.states.values(), results, strict=True):
            state.healthy = ok is True
            out[state.name] = state.healthy
        return out

    def mark(self, state: BackendState, *, ok: bool, error: str | None = None) -> None:
        if ok:
            state.healthy, state.last_error = True, None
        else:
            if state.healthy:
                log.warning("backend %s marked unhealthy: %s", state.name, error)
            state.healthy, state.last_error = False, error
