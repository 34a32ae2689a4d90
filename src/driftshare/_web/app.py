"""The aiohttp application: the dashboard page, its live event stream and the JSON API."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import aclosing
from html import escape
from importlib.resources import files
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from driftshare._web.api import LIVE, error_response, routes
from driftshare._web.live import LiveState

__all__ = ["STATIC_DIR", "create_app"]

log = logging.getLogger(__name__)

_INDEX_TEMPLATE: web.AppKey[str] = web.AppKey("index_template", str)

STATIC_DIR = Path(str(files("driftshare._web") / "static"))

_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    503: "not_ready",
}


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; an unexpected exception becomes a 500 without its traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _ERROR_CODES.get(exc.status, "http_error"), exc.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        # The traceback goes to the server log only, never to the client.
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


def _initial_json(live: LiveState) -> str:
    # Embedded in <script>: "<" escaped so no value can close the element.
    return json.dumps(live.snapshot(), default=str).replace("<", "\\u003c")


async def _index(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    template = request.app[_INDEX_TEMPLATE]
    chain = "simulated chain" if live.simulated else "live RPC"
    html = (
        template.replace("%%CHAIN_CLASS%%", "sim" if live.simulated else "live")
        .replace("%%CHAIN%%", escape(chain))
        .replace("%%NETWORK%%", escape(live.network))
        .replace("%%RPC%%", escape(live.snapshot()["rpc_url"]))
        .replace("%%INITIAL%%", _initial_json(live))
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``snapshot`` event per new version of the live state."""
    live = request.app[LIVE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        async with aclosing(live.updates()) as updates:  # this listener leaves when it ends
            async for snapshot in updates:
                data = json.dumps(snapshot, default=str)
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
    except ConnectionResetError:
        log.debug("dashboard event stream closed by the browser")
    return response


def create_app(live: LiveState) -> web.Application:
    """The dashboard and API over ``live``; starting and stopping ``live`` is the caller's."""
    app = web.Application(middlewares=[_json_errors])
    app[LIVE] = live
    # Read once here: a file read in the handler would block the event loop on each request.
    app[_INDEX_TEMPLATE] = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    app.add_routes(
        [
            web.get("/", _index),
            web.get("/api/events", _events),
            web.static("/static", STATIC_DIR),
            *routes(),
        ]
    )
    return app
