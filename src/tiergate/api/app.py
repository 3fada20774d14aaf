"""The Starlette app. Its lifespan builds every resource (backends, router, keys, metrics) and owns them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiergate.accounting.cost import CostModel
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.metrics import Metrics
from tiergate.accounting.prices import load_price_table
from tiergate.api import admin, chat, dashboard, learning
from tiergate.api.auth import KeyRing
from tiergate.api.edges import edge_for_path
from tiergate.api.lag import watch_loop_lag
from tiergate.api.state import AppState
from tiergate.backends import BackendFactory
from tiergate.config import Config
from tiergate.errors import MethodNotAllowed, NotFound, RequestError, TiergateError
from tiergate.learning.shadow import Learning
from tiergate.limits import build_limiter
from tiergate.offload import Parsers
from tiergate.pipeline.admit import Admission
from tiergate.pipeline.build import build_gateway
from tiergate.routing.reload import Reloader
from tiergate.tracing import Tracing

log = logging.getLogger("tiergate")


def build_state(
    config: Config, registry: dict[str, BackendFactory] | None = None, tracing: Tracing | None = None
) -> AppState:
    """Everything but I/O: validates the whole configuration before anything starts."""
    tracing = tracing or Tracing.from_config(config.tracing)
    gateway = build_gateway(config, registry)
    gateway.tracer = tracing.tracer
    overrides = {b.model: b.price for b in config.backends if b.model and b.price}
    costs = CostModel(config, load_price_table(overrides))
    metrics, ledger = Metrics(), Ledger(config.ledger.url)
    limiter = build_limiter(config, metrics.registry)
    keys, admission = KeyRing(config.keys, revoked=limiter.revoked), Admission(limiter, costs)
    state = AppState(config, gateway.pool, gateway, keys, metrics, costs, ledger, limiter, admission, tracing=tracing)
    state.learning = Learning(config.router.shadow, gateway, costs, limiter, config.router.seed)
    state.reloader = Reloader(config.router, gateway)
    limits = config.limits  # the largest bodies parsed in worker processes, started on the first one (offload.py)
    parsed = metrics.bodies_parsed
    state.parsers = Parsers(limits.parse_workers, limits.parse_worker_bytes, lambda where: parsed.labels(where).inc())
    return state


def create_app(
    config: Config | None = None, registry: dict[str, BackendFactory] | None = None, tracing: Tracing | None = None
) -> Starlette:
    """The gateway's app; ``tracing`` replaces the configured tracer (tests: an in-memory exporter)."""
    config = config or Config()
    state = build_state(config, registry, tracing)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.ledger.start()
        assert state.learning is not None
        assert state.reloader is not None
        await state.learning.start(state.ledger.engine)
        learning = state.learning

        async def spend(since: datetime) -> dict[str, float]:
            """This month's spend by key: the ledger's requests, plus the shadow pairs' cost (learning tables)."""
            spent = dict(await state.ledger.spend_by_key(since))
            for key, usd in (await learning.store_spend(since)).items():
                spent[key] = spent.get(key, 0.0) + usd
            return spent

        await state.budgets.start(spend)
        await state.pool.start()
        await state.gateway.load_encoder()
        await state.pool.check_health()
        state.ready = True
        # What start-up loaded lives as long as the process: out of the collector's full passes, which would
        # otherwise walk it all while holding the GIL, stalling the loop for 100 ms and more under big bodies.
        gc.collect()
        gc.freeze()
        dispatch = config.dispatch  # active health checks (Pool.watch_health)
        watcher = asyncio.create_task(state.pool.watch_health(dispatch.health_interval_s, dispatch.recovery_interval_s))
        reloads = asyncio.create_task(state.reloader.watch(), name="tiergate-router-reload")
        lag = config.server.loop_lag_interval_s
        lagging = asyncio.create_task(watch_loop_lag(state.metrics, lag)) if lag > 0 else None
        log.info("tiergate ready: %s", ", ".join(f"{n} ({s.config.tier.value})" for n, s in state.pool.states.items()))
        try:
            yield
        finally:
            state.ready = False
            gc.unfreeze()
            watcher.cancel()
            reloads.cancel()
            if lagging is not None:
                lagging.cancel()
            await state.drain()  # cut streams still being accounted need their backends and the ledger
            await state.parsers.close()
            await state.learning.close()  # shadow pairs need their backends and the ledger too
            await state.pool.close()
            await state.budgets.close()  # after the drain: the last settlements reach Redis
            state.gateway.close_encoder()
            await state.ledger.close()
            state.tracing.shutdown()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        err: RequestError
        if exc.status_code == 405:
            err = MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 404:
            err = NotFound(f"no such endpoint: {request.url.path}")
        else:
            err = RequestError(str(exc.detail))
            err.status = exc.status_code
        return chat.error_response(edge_for_path(request.url.path), err, chat.new_request_id())

    async def internal_error(request: Request, exc: Exception) -> Response:
        """A bug of ours outside a handler's own net: still the caller's envelope, never a plain-text 500."""
        rid = chat.new_request_id()
        log.error("request %s to %s failed inside the gateway", rid, request.url.path, exc_info=exc)
        err = TiergateError(f"internal error in the gateway (request id {rid})")
        return chat.error_response(edge_for_path(request.url.path), err, rid)

    routes = [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/messages", chat.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", admin.count_tokens, methods=["POST"]),
        Route("/v1/models", admin.models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", admin.model, methods=["GET"]),
        Route("/healthz", admin.healthz, methods=["GET"]),
        Route("/readyz", admin.readyz, methods=["GET"]),
        Route("/metrics", admin.metrics, methods=["GET"]),
        Route("/openapi.json", admin.openapi, methods=["GET"]),
        *dashboard.routes(),
        *learning.routes(),
    ]
    handlers = {HTTPException: http_error, Exception: internal_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.tiergate = state
    return app
