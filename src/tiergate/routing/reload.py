"""A new router artifact without a restart, and the previous one kept for rollback.

With ``router.artifact`` set (a folder written by ``tiergate router train --out``), the gateway looks at the two
files every ``router.reload_interval_s`` seconds (5 by default; 0: never) and, when they changed, loads the new
artifact off the event loop and swaps it in between two requests (a decision in progress finishes on the router
it started with). A folder that does not load (half-written, another training's weights, a wrong format) leaves
the router in service as it is, and the error is logged and shown by ``GET /admin/router``. The router replaced
is kept: ``POST /admin/router/rollback`` puts it back (and a second rollback undoes the first).
``POST /admin/router/reload`` reloads at once. ``LearnedModel.save`` writes the weights first and the metadata
last, each by an atomic rename, with the weights' SHA-256 in the metadata, so a pair caught between the two
renames is refused, not mixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from tiergate.config import RouterConfig
from tiergate.errors import ConfigError
from tiergate.routing.base import Router
from tiergate.routing.learned import META_FILE, WEIGHTS_FILE, LearnedModel, LearnedRouter

__all__ = ["Reloader"]

log = logging.getLogger("tiergate.router")
Signature = tuple[tuple[int, int], ...]


class Reloader:
    """Owns which router the gateway uses: ``holder.router`` is swapped in place (the gateway reads it per
    request)."""

    def __init__(self, config: RouterConfig, holder: Any) -> None:
        self.config = config
        self.holder = holder
        self.previous: Router | None = None
        self.loaded_at = time.time()
        self.reloads = 0
        self.last_error: str | None = None
        self.folder = Path(config.artifact) if config.artifact and config.kind == "learned" else None
        if self.folder is not None and self.folder.suffix in {".json", ".npz"}:
            self.folder = self.folder.parent
        self._seen = self._signature()

    def _signature(self) -> Signature | None:
        if self.folder is None:
            return None
        try:
            stats = [(self.folder / name).stat() for name in (META_FILE, WEIGHTS_FILE)]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    async def watch(self) -> None:
        """Poll the artifact's files; reload when they change. Runs until cancelled."""
        interval = self.config.reload_interval_s
        if self.folder is None or interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            seen = self._signature()
            if seen is not None and seen != self._seen:
                with contextlib.suppress(ConfigError):  # logged and kept in last_error by reload()
                    await self.reload()

    async def reload(self) -> dict[str, Any]:
        """Load the artifact folder again and swap it in; raises :class:`ConfigError` (router unchanged)."""
        if self.folder is None:
            raise ConfigError("router.artifact is not set: there is no artifact folder to reload")
        seen = self._signature()
        try:
            model = await asyncio.to_thread(LearnedModel.load, self.folder)
        except ConfigError as exc:
            self._seen = seen  # do not retry the same broken files every interval; a new write changes them
            self.last_error = exc.message
            log.error("router: kept the router in service; the new artifact does not load: %s", exc.message)
            raise
        self._seen = seen
        self.previous, self.holder.router = self.holder.router, LearnedRouter.with_model(model, self.config)
        self.loaded_at, self.last_error = time.time(), None
        self.reloads += 1
        log.info("router: loaded the artifact of %s from %s", model.meta.get("created"), self.folder)
        return self.status()

    def rollback(self) -> dict[str, Any]:
        """Put the previous router back (the current one becomes the previous); raises :class:`ConfigError`."""
        if self.previous is None:
            raise ConfigError("no previous router to roll back to")
        self.previous, self.holder.router = self.holder.router, self.previous
        self.loaded_at = time.time()
        log.warning("router: rolled back to the previous router")
        return self.status()

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.holder.router.kind,
            "artifact": str(self.folder) if self.folder is not None else None,
            "current": describe(self.holder.router),
            "previous": describe(self.previous) if self.previous is not None else None,
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "last_error": self.last_error,
        }


def describe(router: Router) -> dict[str, Any]:
    """What identifies a router: its kind and threshold, and for an artifact its training's date and digest."""
    out: dict[str, Any] = {"kind": router.kind, "threshold": router.threshold}
    if isinstance(router, LearnedRouter):
        meta = router.model.meta
        out.update(
            created=meta.get("created"),
            weights_sha256=meta.get("weights_sha256"),
            train_rows=meta.get("data", {}).get("train_rows"),
            source=meta.get("data", {}).get("source", "files"),
        )
    return out
