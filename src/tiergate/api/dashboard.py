"""``/dashboard``: a static page (``tiergate/web/``) that polls ``/dashboard/data.json`` for the ledger's figures.

The figures are :func:`tiergate.accounting.summary.summarise` over the window in ``?since=`` (``24h`` by
default; the same syntax as ``tiergate report --since``). When the gateway has API keys, the JSON needs one
(the page asks for it and keeps it in the tab's ``sessionStorage``); the page itself holds no data. Beside the
ledger's figures, ``router``: the router in service, its capacity-aware threshold and the shadow pairs (as
``GET /admin/router`` shows them).
"""

from __future__ import annotations

import logging
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tiergate.accounting.summary import parse_since, summarise
from tiergate.api.learning import router_view
from tiergate.api.state import AppState
from tiergate.errors import TiergateError

__all__ = ["routes"]

log = logging.getLogger("tiergate.dashboard")
_NO_STORE = {"cache-control": "no-store"}


def _asset(name: str) -> bytes:
    return resources.files("tiergate").joinpath("web").joinpath(name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_asset("dashboard.html"), media_type="text/html; charset=utf-8", headers=_NO_STORE)


async def script(request: Request) -> Response:
    return Response(_asset("dashboard.js"), media_type="text/javascript; charset=utf-8", headers=_NO_STORE)


async def data(request: Request) -> Response:
    state: AppState = request.app.state.tiergate
    try:
        state.keys.caller(request.headers)
        since = parse_since(request.query_params.get("since", "24h"))
    except TiergateError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    try:
        await state.ledger.flush()  # show the requests of the last half second too
    except Exception:
        log.exception("dashboard: ledger flush failed; showing what is written")
    summary = summarise(await state.ledger.rows(since), since)
    return JSONResponse({**summary.to_json(), "router": router_view(state)}, headers=_NO_STORE)


def routes() -> list[Route]:
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/dashboard.js", script, methods=["GET"]),
        Route("/dashboard/data.json", data, methods=["GET"]),
    ]
