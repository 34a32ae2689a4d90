"""The simulator's aiohttp server: JSON-RPC over HTTP on port P, PubSub on P+1, ``/_sim`` admin.

Both ports serve the same routes, so a client deriving the WebSocket URL as port+1 (as
driftpy does) and one reusing the HTTP port both work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import zlib
from collections.abc import Callable
from decimal import Decimal

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from solders.hash import Hash
from solders.pubkey import Pubkey

from driftshare.sim.blocks import Blocks
from driftshare.sim.chain import Chain
from driftshare.sim.faults import FaultError, Faults
from driftshare.sim.limits import ClientLimits
from driftshare.sim.programs import Programs
from driftshare.sim.pubsub import PubSub
from driftshare.sim.rpc import (
    AccountEncoder,
    RpcError,
    RpcHandler,
    call_count,
    error_text,
    parse_body,
    validation_problems,
)
from driftshare.sim.stats import SimStats
from driftshare.sim.store import AccountStore
from driftshare.sim.tokens import USDC_DECIMALS, mint_to_owner, token_json_parser
from driftshare.sim.tx_rpc import TxRpc

__all__ = ["RATE_LIMIT_MESSAGE", "SimServer", "client_id"]

_log = logging.getLogger(__name__)

RATE_LIMIT_MESSAGE = (
    "Too many requests for a specific RPC call, contact your app developer or support@rpcpool.com."
)
_MAX_BODY = 1 << 20
_SHUTDOWN_TIMEOUT_S = 2.0
_REBIND_ATTEMPTS = 50
_REBIND_PAUSE_S = 0.2
_JSON = "application/json"
_LOST_REPLY_HOLD_S = 120.0
"""How long a send under the lost-reply timeout fault is held before its connection is cut:
longer than any client waits."""


def client_id(request: web.Request) -> str:
    """Who a request is from: its ``api-key`` query value or path token (hashed, so stats
    never show the secret), else its remote address."""
    token = request.query.get("api-key") or request.match_info.get("token")
    if token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"ip:{request.remote or 'unknown'}"


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Listening sockets on ``port`` and ``port + 1``; for port 0, a free pair."""
    if port:
        http = _bind(host, port)
        try:
            return http, _bind(host, port + 1)
        except OSError:
            http.close()
            raise
    for _ in range(100):
        http = _bind(host, 0)
        chosen = http.getsockname()[1]
        if chosen < 65535:
            try:
                return http, _bind(host, chosen + 1)
            except OSError:
                pass
        http.close()
    raise OSError(f"found no two consecutive free ports on {host}")


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _json_response(status: int, body: object) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=_JSON)


class _OracleWrite(BaseModel):
    """Body of ``POST /_sim/oracle``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    market: int
    price: float


class _UsdcCredit(BaseModel):
    """Body of ``POST /_sim/usdc``: whole USDC, up to its 6 decimals."""

    model_config = ConfigDict(extra="forbid")
    owner: str
    amount: Decimal = Field(gt=0, le=10**12, decimal_places=USDC_DECIMALS)


OracleWriter = Callable[[int, float], None]
"""Moves perp market ``index``'s oracle to ``price`` (``World.set_oracle_price``)."""


class SimServer:
    """HTTP + WebSocket server of one simulator; see :class:`driftshare.sim.Simulator`."""

    def __init__(
        self,
        store: AccountStore,
        *,
        host: str,
        port: int,
        programs: Programs,
        rate_limit: float | None,
        burst: int | None,
        max_ws_per_client: int,
        oracle_writer: OracleWriter | None = None,
    ) -> None:
        self.store = store
        self._oracle_writer = oracle_writer
        self.host = host
        self.port = port
        self.stats = SimStats(lambda: store.slot)
        self.faults = Faults(self)
        self.limits = ClientLimits(rate_limit, burst, max_ws_per_client)
        encoder = AccountEncoder(self.faults.serve, token_json_parser(store))
        # Each simulator is a chain of its own: two simulators never share a genesis hash (nor
        # blockhashes), so a client can tell them apart even when their seeds are equal.
        blocks = Blocks(store, Hash(os.urandom(32)))
        self.chain = Chain(store, programs, blocks, self.faults, self.stats)
        self.rpc = RpcHandler(store, encoder, blocks)
        self.rpc.add_methods(TxRpc(self.rpc, self.chain, encoder).methods())
        self.pubsub = PubSub(
            store, encoder, self.stats, self.chain, stalled=lambda: self.faults.stalled
        )
        self.chain.listeners.append(self.pubsub.notify_signatures)
        self._runner: web.AppRunner | None = None
        self._sites: list[web.SockSite] = []
        self._down = False
        self._admin: set[RequestHandler] = set()
        """Connections carrying a ``/_sim/faults`` request, spared by :meth:`go_down`."""

    @property
    def http_url(self) -> str:
        return _url("http", self.host, self.port)

    @property
    def ws_url(self) -> str:
        return _url("ws", self.host, self.port + 1)

    async def start(self) -> None:
        """Bind both ports and start serving."""
        sockets = _bind_pair(self.host, self.port)
        self.port = sockets[0].getsockname()[1]
        app = web.Application(client_max_size=_MAX_BODY, middlewares=[self._refuse_while_down])
        app.add_routes(
            [
                web.get("/_sim/stats", self._get_stats),
                web.get("/_sim/metrics", self._get_metrics),
                web.get("/_sim/faults", self._get_faults),
                web.post("/_sim/faults", self._post_faults),
                web.post("/_sim/oracle", self._post_oracle),
                web.post("/_sim/usdc", self._post_usdc),
                web.post("/", self._post_rpc),
                web.post("/{token}", self._post_rpc),
                web.get("/", self._get),
                web.get("/{token}", self._get),
            ]
        )
        # driftpy sends plain JSON labelled ``content-encoding: gzip``; nodes ignore the label.
        self._runner = web.AppRunner(
            app,
            auto_decompress=False,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
            access_log=None,
        )
        await self._runner.setup()
        await self._serve_on(sockets)

    async def stop(self) -> None:
        """Stop serving: close every WebSocket, connection and listening socket."""
        self.faults.cancel_down()
        self.chain.cancel_delayed()
        await self.pubsub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sites = []

    async def _serve_on(self, sockets: tuple[socket.socket, socket.socket]) -> None:
        assert self._runner is not None
        for sock in sockets:
            site = web.SockSite(self._runner, sock)
            await site.start()
            self._sites.append(site)

    async def drop_ws(self) -> int:
        return await self.pubsub.drop_all()

    async def go_down(self) -> None:
        """Close both listening sockets and reset every open connection."""
        self._down = True
        for site in self._sites:
            await site.stop()
        self._sites = []
        await self.pubsub.drop_all()
        if self._runner is not None and self._runner.server is not None:
            for connection in self._runner.server.connections:
                if connection not in self._admin:
                    connection.force_close()

    @web.middleware
    async def _refuse_while_down(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        # go_down's sweep misses a connection accepted as it ran (registered a moment after):
        # such a connection is cut at its first request, as a dead node's would be.
        if self._down:
            request.protocol.force_close()
            return web.Response(status=503)  # never written: the connection is gone
        return await handler(request)

    async def come_up(self) -> None:
        """Listen on the same two ports again."""
        if not self._down or self._runner is None:
            return
        for attempt in range(_REBIND_ATTEMPTS):
            try:
                sockets = _bind_pair(self.host, self.port)
            except OSError as exc:
                if attempt == _REBIND_ATTEMPTS - 1:
                    raise
                _log.warning("ports %d/%d not free again yet: %s", self.port, self.port + 1, exc)
                await asyncio.sleep(_REBIND_PAUSE_S)
            else:
                break
        await self._serve_on(sockets)
        self._down = False

    def _reply(self, status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
        self.stats.http_status[status] += 1
        if status == 429:
            self.stats.rate_limited += 1
        return web.Response(status=status, text=text, content_type=_JSON, headers=headers)

    async def _post_rpc(self, request: web.Request) -> web.StreamResponse:
        client = client_id(request)
        self.stats.http_requests[client] += 1
        body = await request.read()
        if "gzip" in request.headers.get("Content-Encoding", "") and body[:2] == b"\x1f\x8b":
            body = _gunzip(body)
        parsed: object
        try:
            parsed = parse_body(body)
        except RpcError as exc:
            parsed = exc
        first_id = parsed.get("id") if isinstance(parsed, dict) else None
        retry_after = self.limits.retry_after(client, call_count(parsed))
        failure = self.faults.take_failure() if retry_after is None else None
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        if retry_after is not None or failure == 429:
            return self._reply(
                429,
                error_text(429, RATE_LIMIT_MESSAGE, first_id),
                {"Retry-After": str(retry_after or 1)},
            )
        if failure is not None:
            return self._reply(failure, error_text(-32603, "Internal error", first_id))
        if isinstance(parsed, RpcError):
            text: str | None = error_text(parsed.code, parsed.message, None)
        else:
            self.chain.lost_reply = None
            text, methods = self.rpc.answer(parsed)
            self.stats.count_calls(client, methods)
            lost, self.chain.lost_reply = self.chain.lost_reply, None
            if lost == "429":
                return self._reply(
                    429, error_text(429, RATE_LIMIT_MESSAGE, first_id), {"Retry-After": "1"}
                )
            if lost == "timeout":
                await asyncio.sleep(_LOST_REPLY_HOLD_S)
                if request.transport is not None:
                    request.transport.abort()
        if self.faults.take_malformed():
            # Half an envelope always leaves a brace or bracket open: never valid JSON.
            text = (text or "{}")[: max(1, len(text or "{}") // 2)]
        return self._reply(200, text or "")

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(
                status=405, text="Used HTTP Method is not allowed. POST or OPTIONS is required\n"
            )
        client = client_id(request)
        if not self.limits.open_ws(client):
            self.stats.ws_refused += 1
            return self._reply(429, error_text(429, RATE_LIMIT_MESSAGE, None), {"Retry-After": "1"})
        try:
            return await self.pubsub.serve(request)
        finally:
            self.limits.close_ws(client)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json_response(200, self.stats.snapshot())

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.stats.render(), content_type="text/plain", charset="utf-8")

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json_response(200, self.faults.state())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _json_response(400, {"error": "body must be a JSON object"})
        if not isinstance(body, dict):
            return _json_response(400, {"error": "body must be a JSON object"})
        self._admin.add(request.protocol)
        try:
            await self.faults.apply(body)
        except FaultError as exc:
            return _json_response(400, {"error": str(exc)})
        finally:
            self._admin.discard(request.protocol)
        response = _json_response(200, self.faults.state())
        if self._down:
            response.force_close()
        return response

    async def _post_oracle(self, request: web.Request) -> web.Response:
        """Move one perp market's oracle now; the answer carries the write's
        ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process on a Linux host)."""
        if self._oracle_writer is None:
            return _json_response(404, {"error": "this simulator has no Drift world"})
        try:
            write = _OracleWrite.model_validate_json(await request.read())
        except ValidationError as exc:
            problems = validation_problems(exc, "body")
            return _json_response(400, {"error": f"invalid oracle write: {problems}"})
        written_at = time.monotonic()
        try:
            self._oracle_writer(write.market, write.price)
        except (KeyError, ValueError) as exc:
            return _json_response(400, {"error": str(exc).strip("'\"")})
        return _json_response(
            200, {"market": write.market, "price": write.price, "written_at": written_at}
        )

    async def _post_usdc(self, request: web.Request) -> web.Response:
        """Credit simulated USDC to an owner's associated token account, creating it."""
        try:
            credit = _UsdcCredit.model_validate_json(await request.read())
            owner = Pubkey.from_string(credit.owner)
        except ValidationError as exc:
            problems = validation_problems(exc, "body")
            return _json_response(400, {"error": f"invalid USDC credit: {problems}"})
        except ValueError as exc:
            return _json_response(400, {"error": f"invalid owner: {exc}"})
        amount = int(credit.amount.scaleb(USDC_DECIMALS))
        try:
            address, balance = mint_to_owner(self.store, owner, amount)
        except ValueError as exc:
            return _json_response(400, {"error": str(exc)})
        return _json_response(
            200,
            {
                "owner": str(owner),
                "token_account": str(address),
                "amount": amount,
                "balance": balance,
            },
        )


def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, _MAX_BODY)
    except zlib.error:
        return b""
    return b"" if inflater.unconsumed_tail else data
