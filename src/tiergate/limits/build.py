"""The limiter a configuration asks for: shared in Redis with ``redis:`` (or ``$TIERGATE_REDIS_URL``), else
in this process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tiergate.config import Config
from tiergate.limits.base import Limiter
from tiergate.limits.local import LocalLimiter
from tiergate.limits.shared import SharedLimiter

__all__ = ["RESERVATION_MARGIN_S", "build_limiter"]

#: How much longer than the longest request (``dispatch.deadline_s``) an unsettled reservation is held.
RESERVATION_MARGIN_S = 60.0


def build_limiter(config: Config, registry: CollectorRegistry) -> Limiter:
    if config.redis is None:
        return LocalLimiter(config.keys)
    ttl = config.redis.reservation_ttl_s or config.dispatch.deadline_s + RESERVATION_MARGIN_S
    return SharedLimiter(config.redis, config.keys, reservation_ttl_s=ttl, registry=registry)
