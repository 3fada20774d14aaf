"""The one builder of the pipeline's resources, shared by the app (``create_app``, whose lifespan starts them)
and the CLI (``tiergate route``): the pool of backends, the router, the hard policy with its guard.

Nothing here does I/O: building validates the whole configuration before anything starts. The encoder is
loaded afterwards, where a stage needs it, by :meth:`Gateway.load_encoder`.
"""

from __future__ import annotations

from tiergate.backends import BackendFactory, default_registry
from tiergate.config import Config
from tiergate.dispatch.pool import Pool
from tiergate.pipeline.gateway import Gateway
from tiergate.pipeline.policy import HardPolicy
from tiergate.routing import build_router

__all__ = ["build_gateway", "build_policy"]


def build_gateway(config: Config, registry: dict[str, BackendFactory] | None = None) -> Gateway:
    pool = Pool(config.backends, registry or default_registry())
    return Gateway(config, pool, build_router(config.router), policy=build_policy(config))


def build_policy(config: Config) -> HardPolicy:
    guard = None
    if config.policy.guard.enabled:
        from tiergate.guard.model import Guard  # the guard's model is only imported when it is on

        guard = Guard.from_config(config.policy.guard)
    return HardPolicy(config.policy, guard)
