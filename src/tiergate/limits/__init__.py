"""Budgets and rate limits, in this process or shared by every replica in Redis.

base.py     Limiter (the protocol admission and accounting use), SpendSource
local.py    LocalLimiter      without ``redis:``: this process's book (``accounting.budgets.Budgets``)
shared.py   SharedLimiter     with ``redis:``: one atomic script per reservation, settlements batched
scripts.py  the Lua scripts (reserve, settle, seed) and the Redis keys they touch
health.py   Health (is Redis answering), alone() (what each limit does while it is not)
keys.py     KeyOverride, KeyStore: revocations and limit changes at run time, versioned in Redis
build.py    build_limiter(config, registry)
"""

from tiergate.limits.base import Limiter, Settler, SpendSource
from tiergate.limits.build import build_limiter
from tiergate.limits.keys import KeyOverride, KeyStore
from tiergate.limits.local import LocalLimiter
from tiergate.limits.shared import SharedLimiter, SharedReservation

__all__ = [
    "KeyOverride",
    "KeyStore",
    "Limiter",
    "LocalLimiter",
    "Settler",
    "SharedLimiter",
    "SharedReservation",
    "SpendSource",
    "build_limiter",
]
