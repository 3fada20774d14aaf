"""Key changes at run time, shared by every replica: revocation and limit overrides, versioned in Redis.

The keys themselves (names, secrets, policy) come from each replica's ``tiergate.yaml``. On top of them Redis
holds, per key name, an override (``P:keys``, a hash of JSON documents) and one version counter
(``P:keys:version``) bumped in the same transaction as every change. Each replica reads the counter every
``redis.refresh_s`` (0.25 s) and reloads the overrides when it moved, so a change reaches every replica
within that interval plus one round trip; ``tiergate keys`` writes them.

    store = KeyStore(redis_client, "tiergate")
    await store.change("team", KeyOverride(revoked=True))              # 401 on every replica within a second
    await store.change("team", KeyOverride(budget_usd_per_month=50))   # replaces the override
    await store.clear("team")                                          # back to tiergate.yaml
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from tiergate.accounting.budgets import Limits

__all__ = ["KeyOverride", "KeyStore"]

log = logging.getLogger("tiergate.limits")


class KeyOverride(BaseModel):
    """What Redis says of one key, over its ``tiergate.yaml`` entry. A limit given as ``null`` removes it;
    a limit left out keeps the file's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    revoked: bool = False
    budget_usd_per_month: float | None = Field(None, ge=0)
    over_budget: Literal["reject", "downgrade"] | None = None
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    def apply(self, lim: Limits) -> Limits:
        given = self.model_fields_set
        return Limits(
            self.budget_usd_per_month if "budget_usd_per_month" in given else lim.budget_usd_per_month,
            self.over_budget or lim.over_budget,
            self.requests_per_minute if "requests_per_minute" in given else lim.requests_per_minute,
            self.tokens_per_minute if "tokens_per_minute" in given else lim.tokens_per_minute,
        )

    def document(self) -> str:
        return self.model_dump_json(exclude_unset=True)


class KeyStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._hash = f"{prefix}:keys"
        self._version = f"{prefix}:keys:version"

    async def version(self) -> int:
        value = await self._redis.get(self._version)
        return int(value or 0)

    async def load(self) -> tuple[int, dict[str, KeyOverride]]:
        """The version and every override (one transaction: never a version with other overrides)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._version)
            pipe.hgetall(self._hash)
            version, raw = await pipe.execute()
        return int(version or 0), _parse(raw)

    async def get(self, name: str) -> KeyOverride | None:
        document = await self._redis.hget(self._hash, name)
        return None if document is None else _parse({name: document}).get(name)

    async def change(self, name: str, override: KeyOverride) -> int:
        """Set the override of ``name``; returns the new version."""
        return await self._write(name, override.document())

    async def clear(self, name: str) -> int:
        return await self._write(name, None)

    async def _write(self, name: str, document: str | None) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            if document is None:
                pipe.hdel(self._hash, name)
            else:
                pipe.hset(self._hash, name, document)
            pipe.incr(self._version)
            _, version = await pipe.execute()
        return int(version)


def _parse(raw: Mapping[bytes | str, bytes | str]) -> dict[str, KeyOverride]:
    overrides: dict[str, KeyOverride] = {}
    for name, document in raw.items():
        key = name.decode() if isinstance(name, bytes) else name
        try:
            overrides[key] = KeyOverride.model_validate(json.loads(document))
        except (ValueError, ValidationError) as exc:  # written by hand: keep the others, say which one is wrong
            log.warning("shared limits: the override of key %r in Redis is not valid, ignored: %s", key, exc)
    return overrides
