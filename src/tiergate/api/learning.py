"""The router's learning endpoints: applications' own outcomes, and the operator's hand on the router.

``POST /v1/feedback`` ``{"request_id": "...", "score": 0.0-1.0, "tier": "open"|"closed" (optional)}``: the
application's score of the answer it got for one of its requests (by the ``x-request-id`` the gateway returned);
``tier`` defaults to the tier that served it. It is written to the ledger's ``route_outcomes`` as a ``feedback``
outcome. A key may only score its own requests; an unknown request id is a 404 (so is another key's).

``GET /admin/router`` (the router in service, the previous one, the capacity-aware threshold, shadow pairs),
``POST /admin/router/reload`` and ``POST /admin/router/rollback`` (:mod:`tiergate.routing.reload`). With API keys
configured, these need a key with ``admin: true``.

Errors use the OpenAI envelope (these paths belong to neither dialect; OpenAI's is the generic one).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tiergate.api.chat import error_response, new_request_id
from tiergate.api.edges import OPENAI
from tiergate.api.intake import read_body
from tiergate.api.state import AppState
from tiergate.errors import InvalidRequest, NotFound, RequestError, TiergateError
from tiergate.learning.store import Outcome
from tiergate.pipeline.gateway import Caller

__all__ = ["routes"]

_MAX_FEEDBACK_BYTES = 16_384


class PermissionDenied(RequestError):
    status = 403
    kind = "permission_error"


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tiergate
    return state


def _error(exc: TiergateError) -> Response:
    return error_response(OPENAI, exc, new_request_id())


def _admin(state: AppState, request: Request) -> Caller:
    caller = state.keys.caller(request.headers)
    if state.config.keys and not any(k.name == caller.name and k.admin for k in state.config.keys):
        raise PermissionDenied(f"key {caller.name!r} may not manage the router; use a key with admin: true")
    return caller


async def feedback(request: Request) -> Response:
    state = _state(request)
    try:
        caller = state.keys.caller(request.headers)
        body = await read_body(request, _MAX_FEEDBACK_BYTES)
        try:
            data = json.loads(body)
        except ValueError:
            raise InvalidRequest('the body must be JSON: {"request_id": "...", "score": 0.0-1.0}') from None
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        request_id, score, tier = data.get("request_id"), data.get("score"), data.get("tier")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequest("request_id: the x-request-id of the answer is required", param="request_id")
        if isinstance(score, bool) or not isinstance(score, int | float) or not (0 <= score <= 1):
            raise InvalidRequest("score: a number from 0 (bad) to 1 (good) is required", param="score")
        if tier is not None and tier not in ("open", "closed"):
            raise InvalidRequest("tier: 'open' or 'closed' (default: the tier that served the request)", param="tier")
        learning = state.learning
        assert learning is not None
        assert learning.store is not None
        await state.ledger.flush()  # the request may have ended a moment ago
        row = await learning.store.request(request_id)
        if row is None or (state.config.keys and row.key_name != caller.name):
            raise NotFound(f"no request {request_id!r} of this key in the ledger", param="request_id")
        tier = tier or row.tier
        if tier is None:
            raise InvalidRequest("that request was not served by a tier; give tier: 'open' or 'closed'", param="tier")
        outcome = Outcome(request_id, row.key_name, str(tier), float(score), "feedback", caller.name)
        await learning.store.record(None, [outcome])
    except TiergateError as exc:
        return _error(exc)
    return JSONResponse({"request_id": request_id, "tier": tier, "score": float(score), "recorded": True})


async def router_status(request: Request) -> Response:
    state = _state(request)
    try:
        _admin(state, request)
    except TiergateError as exc:
        return _error(exc)
    return JSONResponse(router_view(state))


def router_view(state: AppState) -> dict[str, object]:
    """The router in service, its capacity-aware threshold and the shadow pairs (also on the dashboard)."""
    gateway = state.gateway
    view: dict[str, object] = {
        "capacity": gateway.capacity.view(gateway.router, gateway.pool).to_json(),
        "shadow": state.learning.snapshot() if state.learning is not None else None,
    }
    if state.reloader is not None:
        view.update(state.reloader.status())
    return view


async def reload(request: Request) -> Response:
    state = _state(request)
    try:
        _admin(state, request)
        assert state.reloader is not None
        return JSONResponse(await state.reloader.reload())
    except TiergateError as exc:
        if not isinstance(exc, RequestError):
            exc = InvalidRequest(exc.message)
            exc.status = 409
        return _error(exc)


async def rollback(request: Request) -> Response:
    state = _state(request)
    try:
        _admin(state, request)
        assert state.reloader is not None
        return JSONResponse(state.reloader.rollback())
    except TiergateError as exc:
        if not isinstance(exc, RequestError):
            exc = InvalidRequest(exc.message)
            exc.status = 409
        return _error(exc)


def routes() -> list[Route]:
    return [
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/admin/router", router_status, methods=["GET"]),
        Route("/admin/router/reload", reload, methods=["POST"]),
        Route("/admin/router/rollback", rollback, methods=["POST"]),
    ]
