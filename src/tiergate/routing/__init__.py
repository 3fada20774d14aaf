"""Router kinds, by name (a plain registry, as RouteLLM does it).

>>> router = build_router(RouterConfig(kind="rules"))
>>> router.kind
'rules'
"""

from __future__ import annotations

from collections.abc import Callable

from tiergate.config import RouterConfig
from tiergate.errors import ConfigError
from tiergate.routing.base import RouteDecision, Router, Signals, decide
from tiergate.routing.simple import FixedRouter, RandomRouter, RulesRouter


def _learned(config: RouterConfig) -> Router:
    from tiergate.routing.learned import LearnedRouter

    return LearnedRouter.from_config(config)


ROUTERS: dict[str, Callable[[RouterConfig], Router]] = {
    "learned": _learned,
    "rules": RulesRouter,
    "random": RandomRouter,
    "open": lambda c: FixedRouter("open", 0.0),
    "closed": lambda c: FixedRouter("closed", 1.0),
}


def build_router(config: RouterConfig) -> Router:
    try:
        factory = ROUTERS[config.kind]
    except KeyError:
        raise ConfigError(f"router.kind: unknown kind {config.kind!r}; use one of: {', '.join(ROUTERS)}") from None
    return factory(config)


__all__ = ["ROUTERS", "RouteDecision", "Router", "Signals", "build_router", "decide"]
