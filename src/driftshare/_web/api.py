"""The JSON API: markets, funding, stats, health, readiness, metrics and its OpenAPI document."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from driftshare import _metrics as metrics
from driftshare._data.markets import normalize_symbol
from driftshare._tx.history import TxRecord
from driftshare._web.accounts import UNREADABLE_FIELDS, account_rows, order_rows
from driftshare._web.live import LiveState
from driftshare.models import AccountInfo, FundingRateData, MarketData, OrderInfo, PositionInfo

__all__ = [
    "LIVE",
    "OPENAPI",
    "ListQuery",
    "QueryError",
    "error_response",
    "parse_list_query",
    "routes",
]

LIVE: web.AppKey[LiveState] = web.AppKey("live", LiveState)

_MAX_LIMIT = 1000
_STATUSES = (
    "initialized",
    "active",
    "funding_paused",
    "amm_paused",
    "fill_paused",
    "withdraw_paused",
    "reduce_only",
    "settlement",
    "delisted",
)
_SHARED_SORTS = ("symbol", "market_index", "mark_price", "oracle_price", "rate_hourly")
"""Sort keys both lists take, each naming the same field: one vocabulary."""
_FUNDING_SORTS = (
    *_SHARED_SORTS,
    "rate_8h",
    "rate_annual",
    "predicted_rate_hourly",
    "next_funding_ts",
)
_MARKET_SORTS = (*_SHARED_SORTS, "open_interest", "open_interest_usd")
_FUNDING_FIELDS = {"symbol": "market"}
"""Sort key → the row field it sorts by, where the two differ (FundingRateData.market)."""
_MARKET_FIELDS = {"rate_hourly": "funding_rate"}
_OLD_SORTS = {"market": "symbol", "funding_rate": "rate_hourly"}
"""The keys each list took before the vocabulary was shared; still accepted."""


class QueryError(ValueError):
    """A query string the API does not accept; the message says which parameter and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class ListQuery:
    """Validated ``sort``, ``order``, ``status`` and ``limit`` of a list endpoint."""

    sort: str = "market_index"
    descending: bool = False
    status: str | None = None
    limit: int | None = None

    def apply(
        self, rows: list[dict[str, Any]], fields: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Filter, sort (missing values last in either order) and cut ``rows``; ``fields``
        maps a sort key to the row field it sorts by where they differ."""
        if self.status is not None:
            rows = [row for row in rows if row["status"] == self.status]
        field = (fields or {}).get(self.sort, self.sort)
        present = [row for row in rows if row.get(field) is not None]
        missing = [row for row in rows if row.get(field) is None]
        present.sort(key=lambda row: row[field], reverse=self.descending)
        ordered = present + missing
        return ordered if self.limit is None else ordered[: self.limit]


def parse_list_query(query: MultiMapping[str], sorts: tuple[str, ...]) -> ListQuery:
    """Validate a list endpoint's query; :class:`QueryError` names the bad parameter."""
    known = {"sort", "order", "status", "limit"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise QueryError(f"unknown query parameter {unknown[0]!r}; known: {sorted(known)}")
    values: dict[str, str] = {}
    for key in known & set(query):
        given = query.getall(key)
        if len(given) != 1:
            raise QueryError(f"{key} given {len(given)} times; give it once")
        values[key] = given[0]
    sort = values.get("sort", "market_index")
    sort = _OLD_SORTS.get(sort, sort)
    if sort not in sorts:
        raise QueryError(f"sort must be one of {list(sorts)}, got {sort!r}")
    order = values.get("order", "asc")
    if order not in ("asc", "desc"):
        raise QueryError(f"order must be 'asc' or 'desc', got {order!r}")
    status = values.get("status")
    if status is not None and status not in _STATUSES:
        raise QueryError(f"status must be one of {list(_STATUSES)}, got {status!r}")
    limit: int | None = None
    if "limit" in values:
        text = values["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_LIMIT:
            raise QueryError(f"limit must be an integer from 1 to {_MAX_LIMIT}, got {text!r}")
        limit = int(text)
    return ListQuery(sort=sort, descending=order == "desc", status=status, limit=limit)


def error_response(status: int, error: str, message: str) -> web.Response:
    """A JSON error body: ``{"error": code, "message": text}``."""
    return web.json_response({"error": error, "message": message}, status=status)


def _envelope(live: LiveState, **body: Any) -> dict[str, Any]:
    return {"network": live.network, "simulated": live.simulated, "time": time.time(), **body}


async def _listing(
    request: web.Request,
    sorts: tuple[str, ...],
    fields: Mapping[str, str],
    key: str,
    rows: Callable[[LiveState], Awaitable[list[dict[str, Any]]]],
) -> web.Response:
    """A list endpoint: validate the query, then filter, sort and cut the rows."""
    try:
        query = parse_list_query(request.query, sorts)
    except QueryError as exc:
        return error_response(400, "bad_request", str(exc))
    live = request.app[LIVE]
    result = query.apply(await rows(live), fields)
    return web.json_response(_envelope(live, count=len(result), **{key: result}))


async def _market_rows(live: LiveState) -> list[dict[str, Any]]:
    return [m.to_dict() for m in await live.reader.get_all_perp_markets()]


async def _funding_rows(live: LiveState) -> list[dict[str, Any]]:
    return [f.to_dict() for f in await live.reader.get_all_funding_rates()]


async def markets(request: web.Request) -> web.Response:
    """``GET /api/markets``: every perp market's prices and open interest."""
    return await _listing(request, _MARKET_SORTS, _MARKET_FIELDS, "markets", _market_rows)


async def funding(request: web.Request) -> web.Response:
    """``GET /api/funding``: every perp market's funding rates."""
    return await _listing(request, _FUNDING_SORTS, _FUNDING_FIELDS, "funding", _funding_rows)


def _resolve(known: list[MarketData], text: str) -> int | None:
    # Matched against the subscribed markets only, so arbitrary input never reaches the
    # resolver's log-once memory.
    key = normalize_symbol(text)
    for market in known:
        symbol = normalize_symbol(market.symbol)
        if key in (symbol, symbol.removesuffix("-PERP"), str(market.market_index)):
            return market.market_index
    return None


async def market(request: web.Request) -> web.Response:
    """``GET /api/markets/{symbol}``: one market's prices, open interest and funding."""
    live = request.app[LIVE]
    reader = live.reader
    known = await reader.get_all_perp_markets()
    if not known:
        return error_response(503, "not_ready", "no market data yet")
    symbol = request.match_info["symbol"]
    index = _resolve(known, symbol)
    if index is None:
        return error_response(404, "not_found", f"no perp market {symbol!r}")
    data = await reader.get_market(index)
    rate = await reader.get_funding_rate(index)
    if data is None:
        return error_response(503, "not_ready", f"no data for perp market {symbol!r} now")
    return web.json_response(
        _envelope(live, market=data.to_dict(), funding=None if rate is None else rate.to_dict())
    )


async def stats(request: web.Request) -> web.Response:
    """``GET /api/stats``: the shared client, its traffic and cache, and the engines."""
    live = request.app[LIVE]
    return web.json_response(
        _envelope(
            live,
            rpc_url=live.snapshot()["rpc_url"],
            dashboard=live.manager_panel(),
            manager=(manager := live.manager_stats()),
            fleet=manager.get("fleet"),
            engines=[engine.status() for engine in live.engines],
        ),
        dumps=_dumps,
    )


async def _trading_listing(
    request: web.Request, key: str, rows: Callable[[LiveState], list[dict[str, Any]]]
) -> web.Response:
    """A trading list endpoint: it takes no query parameters."""
    if request.query:
        given = sorted(request.query)[0]
        return error_response(400, "bad_request", f"unknown query parameter {given!r}")
    live = request.app[LIVE]
    result = rows(live)
    return web.json_response(_envelope(live, count=len(result), **{key: result}))


async def accounts(request: web.Request) -> web.Response:
    """``GET /api/accounts``: every registered sub-account's margin, positions and orders."""
    return await _trading_listing(
        request, "accounts", lambda live: account_rows(live.network, live.rpc_url)
    )


async def orders(request: web.Request) -> web.Response:
    """``GET /api/orders``: the last writes this process sent and how each ended."""
    return await _trading_listing(
        request, "orders", lambda live: order_rows(live.network, live.rpc_url)
    )


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 while the shared client serves fresh data, else 503."""
    ready, reason = request.app[LIVE].readiness()
    body = {"status": "ready" if ready else "not_ready", "reason": reason}
    return web.json_response(body, status=200 if ready else 503)


async def prometheus(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text of driftshare's registry."""
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: this API as OpenAPI 3.0."""
    return web.json_response(OPENAPI)


def _dumps(value: Any) -> str:
    # Manager stats key unavailable markets by int; JSON objects need string keys.
    return json.dumps(value, default=str)


def routes() -> list[web.RouteDef]:
    """Every API route, for ``app.add_routes``."""
    return [
        web.get("/api/markets", markets),
        web.get("/api/markets/{symbol}", market),
        web.get("/api/funding", funding),
        web.get("/api/stats", stats),
        web.get("/api/accounts", accounts),
        web.get("/api/orders", orders),
        web.get("/api/openapi.json", openapi),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", prometheus),
    ]


# -- OpenAPI ------------------------------------------------------------------------------

_SCALARS: dict[str, dict[str, Any]] = {
    "float": {"type": "number"},
    "int": {"type": "integer"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
}


def _schema_of(cls: type) -> dict[str, Any]:
    """An object schema from a dataclass of scalar (or ``X | None``) fields."""
    properties: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        names = [part.strip() for part in str(field.type).split("|")]
        schema = dict(_SCALARS[next(n for n in names if n != "None")])
        if "None" in names:
            schema["nullable"] = True
        properties[field.name] = schema
    return {"type": "object", "required": list(properties), "properties": properties}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_READINESS: dict[str, Any] = {
    "type": "object",
    "required": ["status", "reason"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "reason": {"type": "string"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list_params(sorts: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {
            "name": "sort",
            "in": "query",
            "schema": {"type": "string", "enum": list(sorts), "default": "market_index"},
        },
        {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(_STATUSES)}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_LIMIT},
        },
    ]


def _list_of(item: str, key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["network", "simulated", "time", "count", key],
        "properties": {
            "network": {"type": "string"},
            "simulated": {"type": "boolean"},
            "time": {"type": "number"},
            "count": {"type": "integer"},
            key: {"type": "array", "items": _ref(item)},
        },
    }


_ERROR = _json(_ref("Error"), "error")


def _model_schema(cls: type[BaseModel], nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """An OpenAPI 3.0 object schema of a pydantic model of scalar fields (pydantic emits
    JSON Schema 2020-12, whose ``anyOf [X, null]`` is 3.0's ``nullable``)."""
    properties: dict[str, Any] = {}
    for name, prop in cls.model_json_schema()["properties"].items():
        variants = [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]
        schema = {k: v for k, v in variants[0].items() if k in ("type", "enum")}
        if len(variants) < len(prop.get("anyOf", [prop])) or name in nullable:
            schema["nullable"] = True
        properties[name] = schema
    return {"type": "object", "required": list(properties), "properties": properties}


_ACCOUNT: dict[str, Any] = _model_schema(AccountInfo, nullable=UNREADABLE_FIELDS)
_ACCOUNT["properties"]["positions"] = {"type": "array", "items": _ref("PositionInfo")}
_ACCOUNT["properties"]["open_orders"] = {"type": "array", "items": _ref("OrderInfo")}
_ACCOUNT["required"] += ["positions", "open_orders"]
_OBJECT: dict[str, Any] = {"type": "object"}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    responses.update({str(code): _ERROR for code in errors})
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    return {"get": operation}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "driftshare",
        "version": "0.1.0",
        "description": "Drift perp markets and funding from one shared, cached DriftClient.",
    },
    "paths": {
        "/api/markets": _get(
            "Every perp market: prices and open interest",
            _json(_list_of("MarketData", "markets"), "markets"),
            params=_list_params(_MARKET_SORTS),
            errors=(400,),
        ),
        "/api/markets/{symbol}": {
            **_get(
                "One perp market by symbol (SOL-PERP, sol) or index",
                _json(
                    {
                        "type": "object",
                        "required": ["network", "simulated", "time", "market", "funding"],
                        "properties": {
                            "network": {"type": "string"},
                            "simulated": {"type": "boolean"},
                            "time": {"type": "number"},
                            "market": _ref("MarketData"),
                            "funding": {"nullable": True, "allOf": [_ref("FundingRateData")]},
                        },
                    },
                    "the market",
                ),
                errors=(404, 503),
            ),
            "parameters": [
                {"name": "symbol", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        },
        "/api/funding": _get(
            "Funding of every perp market",
            _json(_list_of("FundingRateData", "funding"), "funding rates"),
            params=_list_params(_FUNDING_SORTS),
            errors=(400,),
        ),
        "/api/stats": _get(
            "The shared client, RPC traffic, cache and engines", _json(_OBJECT, "stats")
        ),
        "/api/accounts": _get(
            "Every registered sub-account: collateral, leverage, positions with PnL, orders",
            _json(_list_of("Account", "accounts"), "sub-accounts (public keys only)"),
            errors=(400,),
        ),
        "/api/orders": _get(
            "The last writes this process sent, newest first, with their status",
            _json(_list_of("TxRecord", "orders"), "writes"),
            errors=(400,),
        ),
        "/api/openapi.json": _get("This document", _json(_OBJECT, "OpenAPI 3.0")),
        "/healthz": _get("Liveness", _json(_OBJECT, "alive")),
        "/readyz": {
            "get": {
                "summary": "Readiness: fresh data from the shared client",
                "responses": {
                    "200": _json(_READINESS, "ready"),
                    "503": _json(_READINESS, "not ready, and why"),
                },
            }
        },
        "/metrics": _get(
            "Prometheus metrics",
            {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
    },
    "components": {
        "schemas": {
            "MarketData": _schema_of(MarketData),
            "FundingRateData": _schema_of(FundingRateData),
            "Account": _ACCOUNT,
            "PositionInfo": _model_schema(PositionInfo),
            "OrderInfo": _model_schema(OrderInfo),
            "TxRecord": _model_schema(TxRecord),
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            },
        }
    },
}
