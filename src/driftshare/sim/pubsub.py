"""Solana PubSub over WebSocket: account, program and slot subscriptions pushed from the store,
signature subscriptions from the chain's statuses."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict
from solders.pubkey import Pubkey
from solders.signature import Signature

from driftshare.sim.blocks import FINALITY_DEPTH
from driftshare.sim.chain import Chain, Commitment
from driftshare.sim.rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    AccountEncoder,
    RpcError,
    SubscribeConfig,
    error_text,
    invalid_params,
    parse_model,
    parse_pubkey,
    parse_signature,
    parse_subscribe_config,
)
from driftshare.sim.stats import SimStats
from driftshare.sim.store import Account, AccountStore

__all__ = ["PubSub"]

_log = logging.getLogger(__name__)

_Kind = Literal["account", "program", "slot", "signature"]


class _SignatureConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    commitment: Literal["processed", "confirmed", "finalized"] | None = None


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    outbox: asyncio.Queue[tuple[str, str | None]] = field(default_factory=asyncio.Queue)
    """Texts to send, each with its notification method (None for answers)."""
    subscriptions: dict[int, _Subscription] = field(default_factory=dict)


@dataclass(eq=False)
class _Subscription:
    id: int
    kind: _Kind
    connection: _Connection
    key: Pubkey | None
    config: SubscribeConfig | None
    signature: Signature | None = None
    commitment: Commitment = "finalized"
    since_slot: int = 0
    """The tip when it was made."""


class PubSub:
    """Every WebSocket connection's subscriptions, notified on each store write."""

    def __init__(
        self,
        store: AccountStore,
        encoder: AccountEncoder,
        stats: SimStats,
        chain: Chain,
        *,
        stalled: Callable[[], bool],
    ) -> None:
        self._store = store
        self._chain = chain
        self._encoder = encoder
        self._stats = stats
        self._stalled = stalled
        self._ids = itertools.count(1)
        self._connections: set[_Connection] = set()
        self._by_account: dict[Pubkey, dict[int, _Subscription]] = {}
        self._by_program: dict[Pubkey, dict[int, _Subscription]] = {}
        self._slot_subs: dict[int, _Subscription] = {}
        self._signature_subs: dict[int, _Subscription] = {}
        store.listen(self._on_change)
        self._methods: dict[str, Callable[[_Connection, list[Any]], str]] = {
            "accountSubscribe": self._account_subscribe,
            "accountUnsubscribe": self._unsubscriber("account"),
            "programSubscribe": self._program_subscribe,
            "programUnsubscribe": self._unsubscriber("program"),
            "slotSubscribe": self._slot_subscribe,
            "slotUnsubscribe": self._unsubscriber("slot"),
            "signatureSubscribe": self._signature_subscribe,
            "signatureUnsubscribe": self._unsubscriber("signature"),
        }

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """Run one WebSocket connection until either side closes it."""
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Connection(ws, request)
        self._connections.add(conn)
        self._stats.ws_open += 1
        self._stats.ws_total += 1
        sender = asyncio.create_task(self._send_loop(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    conn.outbox.put_nowait((self._answer(conn, msg.data), None))
                elif msg.type == WSMsgType.BINARY:
                    answer = self._answer(conn, msg.data.decode("utf-8", "replace"))
                    conn.outbox.put_nowait((answer, None))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._forget(conn)
        return ws

    def notify_slot(self, slot: int) -> None:
        """Tell every slot subscriber that ``slot`` is the new tip."""
        if self._stalled() or not self._slot_subs:
            return
        result = json.dumps(
            {"parent": slot - 1, "root": max(0, slot - FINALITY_DEPTH), "slot": slot}
        )
        for sub in self._slot_subs.values():
            sub.connection.outbox.put_nowait(
                (
                    '{"jsonrpc":"2.0","method":"slotNotification","params":{"result":'
                    f'{result},"subscription":{sub.id}}}}}',
                    "slotNotification",
                )
            )

    def notify_signatures(self) -> None:
        """Tell each signature subscriber whose transaction reached its commitment, once: the
        subscription ends with its notification, as on a node. As a node's, the notification
        carries the transaction's own slot when it was made before the transaction landed
        (its block's check), else the tip's (the next block checked)."""
        if self._stalled() or not self._signature_subs:
            return
        for sub in list(self._signature_subs.values()):
            assert sub.signature is not None
            landed = self._chain.status(sub.signature)
            if landed is None or not self._chain.reached(landed, sub.commitment):
                continue
            value = json.dumps({"err": landed.err})
            slot = landed.slot if sub.since_slot <= landed.slot else self._store.slot
            sub.connection.outbox.put_nowait(
                (
                    '{"jsonrpc":"2.0","method":"signatureNotification","params":{"result":'
                    f'{{"context":{{"slot":{slot}}},"value":{value}}},'
                    f'"subscription":{sub.id}}}}}',
                    "signatureNotification",
                )
            )
            self._remove(sub)

    async def drop_all(self) -> int:
        """Cut every connection without a close frame, as a network failure would."""
        dropped = 0
        for conn in list(self._connections):
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
                dropped += 1
        return dropped

    async def close(self) -> None:
        """Close every connection, telling clients the server is going away."""
        await asyncio.gather(
            *(conn.ws.close(code=1001, message=b"simulator stopping") for conn in self._connections)
        )

    def _forget(self, conn: _Connection) -> None:
        for sub in list(conn.subscriptions.values()):
            self._remove(sub)
        if conn in self._connections:
            self._connections.discard(conn)
            self._stats.ws_open -= 1

    async def _send_loop(self, conn: _Connection) -> None:
        while True:
            text, notification = await conn.outbox.get()
            try:
                await conn.ws.send_str(text)
            except ConnectionError:
                return
            if notification is not None:
                self._stats.notifications[notification] += 1

    def _answer(self, conn: _Connection, text: str) -> str:
        try:
            parsed = json.loads(text)
        except ValueError:
            return error_text(PARSE_ERROR, "Parse error", None)
        if isinstance(parsed, list):
            if not parsed:
                return error_text(INVALID_REQUEST, "Invalid request", None)
            return "[" + ",".join(self._answer_one(conn, call) for call in parsed) + "]"
        return self._answer_one(conn, parsed)

    def _answer_one(self, conn: _Connection, call: object) -> str:
        if (
            not isinstance(call, dict)
            or call.get("jsonrpc") != "2.0"
            or not isinstance(call.get("method"), str)
        ):
            request_id = call.get("id") if isinstance(call, dict) else None
            return error_text(INVALID_REQUEST, "Invalid request", request_id)
        request_id = call.get("id")
        handler = self._methods.get(call["method"])
        params = call.get("params")
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
            if params is None:
                params = []
            if not isinstance(params, list):
                raise RpcError(INVALID_PARAMS, "Invalid params: params must be an array")
            result = handler(conn, params)
        except RpcError as exc:
            return error_text(exc.code, exc.message, request_id, exc.data)
        return f'{{"jsonrpc":"2.0","result":{result},"id":{json.dumps(request_id)}}}'

    def _add(
        self,
        conn: _Connection,
        kind: _Kind,
        method: str,
        key: Pubkey | None,
        config: SubscribeConfig | None,
    ) -> str:
        sub = _Subscription(next(self._ids), kind, conn, key, config)
        conn.subscriptions[sub.id] = sub
        if kind == "slot":
            self._slot_subs[sub.id] = sub
        elif kind == "signature":
            self._signature_subs[sub.id] = sub
        else:
            index = self._by_account if kind == "account" else self._by_program
            assert key is not None
            index.setdefault(key, {})[sub.id] = sub
        self._stats.subscriptions[method] += 1
        self._stats.subscriptions_active += 1
        return str(sub.id)

    def _remove(self, sub: _Subscription) -> None:
        sub.connection.subscriptions.pop(sub.id, None)
        if sub.kind == "slot":
            self._slot_subs.pop(sub.id, None)
        elif sub.kind == "signature":
            self._signature_subs.pop(sub.id, None)
        else:
            index = self._by_account if sub.kind == "account" else self._by_program
            assert sub.key is not None
            subs = index.get(sub.key, {})
            subs.pop(sub.id, None)
            if not subs:
                index.pop(sub.key, None)
        self._stats.subscriptions_active -= 1

    def _account_subscribe(self, conn: _Connection, params: list[Any]) -> str:
        if not params:
            raise RpcError(INVALID_PARAMS, "Invalid params: missing pubkey")
        pubkey = parse_pubkey(params[0])
        config = parse_subscribe_config(params, 1)
        return self._add(conn, "account", "accountSubscribe", pubkey, config)

    def _program_subscribe(self, conn: _Connection, params: list[Any]) -> str:
        if not params:
            raise RpcError(INVALID_PARAMS, "Invalid params: missing program id")
        program = parse_pubkey(params[0])
        config = parse_subscribe_config(params, 1)
        return self._add(conn, "program", "programSubscribe", program, config)

    def _slot_subscribe(self, conn: _Connection, params: list[Any]) -> str:
        if params:
            raise RpcError(INVALID_PARAMS, "Invalid params: slotSubscribe takes no params")
        return self._add(conn, "slot", "slotSubscribe", None, None)

    def _signature_subscribe(self, conn: _Connection, params: list[Any]) -> str:
        if not params:
            raise invalid_params("missing signature")
        signature = parse_signature(params[0])
        config = parse_model(_SignatureConfig, params, 1)
        sub_id = self._add(conn, "signature", "signatureSubscribe", None, None)
        sub = conn.subscriptions[int(sub_id)]
        sub.signature = signature
        sub.commitment = config.commitment or "finalized"
        sub.since_slot = self._store.slot
        # After the answer is queued: a transaction already there is notified at once.
        asyncio.get_running_loop().call_soon(self.notify_signatures)
        return sub_id

    def _unsubscriber(self, kind: _Kind) -> Callable[[_Connection, list[Any]], str]:
        def unsubscribe(conn: _Connection, params: list[Any]) -> str:
            sub_id = params[0] if len(params) == 1 else None
            sub = conn.subscriptions.get(sub_id) if isinstance(sub_id, int) else None
            if sub is None or sub.kind != kind:
                raise RpcError(INVALID_PARAMS, "Invalid subscription id.")
            self._remove(sub)
            return "true"

        return unsubscribe

    def _on_change(self, pubkey: Pubkey, stored: Account) -> None:
        account_subs = self._by_account.get(pubkey)
        program_subs = self._by_program.get(stored.owner)
        if (not account_subs and not program_subs) or self._stalled():
            return
        account = self._encoder.served(pubkey, stored)
        if account is None:
            return
        context = f'{{"slot":{self._store.slot}}}'
        for sub in (account_subs or {}).values():
            text = self._encode(pubkey, account, sub)
            if text is not None:
                sub.connection.outbox.put_nowait(
                    (
                        '{"jsonrpc":"2.0","method":"accountNotification","params":{"result":'
                        f'{{"context":{context},"value":{text}}},"subscription":{sub.id}}}}}',
                        "accountNotification",
                    )
                )
        for sub in (program_subs or {}).values():
            assert sub.config is not None
            if not sub.config.filters.matches(account.data):
                continue
            text = self._encode(pubkey, account, sub)
            if text is not None:
                sub.connection.outbox.put_nowait(
                    (
                        '{"jsonrpc":"2.0","method":"programNotification","params":{"result":'
                        f'{{"context":{context},"value":{{"pubkey":"{pubkey}","account":{text}}}}},'
                        f'"subscription":{sub.id}}}}}',
                        "programNotification",
                    )
                )

    def _encode(self, pubkey: Pubkey, account: Account, sub: _Subscription) -> str | None:
        assert sub.config is not None
        try:
            return self._encoder.encode(pubkey, account, sub.config.encoding)
        except RpcError as exc:
            # A node cannot send a base58 notification for a large account and sends none.
            _log.debug("no notification for %s: %s", pubkey, exc.message)
            return None
