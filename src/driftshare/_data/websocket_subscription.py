"""Subscribing a DriftClient by websocket: driftpy's subscribers, fed by discovery and reporting
raw bytes to the tap.

The subscribers are driftpy's own, subclassed only where they would otherwise die on one bad
account, mispair an unsubscription's answer, or hide a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from driftpy.accounts.types import DataAndSlot, WebsocketProgramAccountOptions
from driftpy.accounts.ws import WebsocketDriftClientAccountSubscriber
from driftpy.accounts.ws.account_subscriber import WebsocketAccountSubscriber
from driftpy.accounts.ws.multi_account_subscriber import WebsocketMultiAccountSubscriber
from driftpy.accounts.ws.program_account_subscriber import WebSocketProgramAccountSubscriber
from driftpy.addresses import (
    get_state_public_key,
)
from driftpy.market_map.market_map import MarketMap
from driftpy.market_map.market_map_config import MarketMapConfig, WebsocketConfig
from driftpy.memcmp import get_market_type_filter
from driftpy.types import MarketType
from solana.rpc.commitment import Commitment
from solana.rpc.websocket_api import SubscriptionError
from solders.pubkey import Pubkey
from solders.rpc.responses import UnsubscribeResult

from driftshare._data.decoding import TolerantDecoder
from driftshare._data.discovery import Discovery, index_by_pda
from driftshare._data.ledger import AccountLedger, AccountRecord
from driftshare._data.tap import AccountTap

__all__ = ["SocketScreen", "WebsocketSubscriber"]

log = logging.getLogger(__name__)

_SUBSCRIBE_ANSWER_S = 5.0
"""How long a watched account's subscription may wait for its id."""
_SUBSCRIBE_POLL_S = 0.005


class _ReconnectHook:
    """Tells the tap when a driftpy subscriber sets its ``ws`` again after the first time."""

    _tap: AccountTap
    _socket: Any = None
    _connections = 0

    @property
    def ws(self) -> Any:
        return self._socket

    @ws.setter
    def ws(self, value: Any) -> None:
        self._socket = value
        if value is not None:
            self._connections += 1
            if self._connections > 1:
                self._tap.reconnected()


class _StateSubscriber(_ReconnectHook, WebsocketAccountSubscriber):  # type: ignore[misc]
    """driftpy's one-account subscriber, reporting each update's raw bytes to the tap."""

    def __init__(
        self, program: Any, commitment: Commitment, initial: DataAndSlot | None, tap: AccountTap
    ) -> None:
        self._tap = tap
        super().__init__(
            get_state_public_key(program.program_id), program, commitment, initial_data=initial
        )
        self._raw: bytes | None = None
        decode: Callable[[bytes], Any] = program.coder.accounts.decode

        def keep_raw(data: bytes) -> Any:
            # driftpy decodes, then calls update_data with the slot: pair them there.
            self._raw = data
            return decode(data)

        self.decode: Callable[[bytes], Any] = keep_raw

    def update_data(self, new_data: DataAndSlot | None) -> None:
        raw, self._raw = self._raw, None
        super().update_data(new_data)
        if new_data is not None and raw is not None:
            self._tap.record(str(self.pubkey), raw, new_data.slot)


class SocketScreen(Protocol):
    """A reader of its own messages on a WebSocket a driftpy subscriber owns (the transaction
    path's signature subscriptions), taking them before driftpy's loop sees them."""

    def screen(self, socket: Any, messages: list[Any]) -> list[Any]:
        """The messages of ``socket`` that are not this screen's own."""

    def refused(self, socket: Any, error: SubscriptionError) -> bool:
        """Whether the subscription ``socket`` refused was this screen's own."""

    def closed(self, socket: Any) -> None:
        """``socket`` is gone, and every subscription made on it."""


def _screen_messages(socket: Any, screens: Sequence[SocketScreen]) -> None:
    """Make ``socket`` (one connection) hand driftpy only the messages meant for it.

    The answers to unsubscriptions are skipped: driftpy's multi-account loop takes any integer
    result for the id of its oldest pending subscription, and an unsubscription's ``true`` is
    one, so it would pair the next account subscribed with the wrong id. The ``screens`` take
    their own messages first; a refusal of one of their subscriptions (which solana-py raises)
    would otherwise end driftpy's connection.
    """
    receive = socket.recv

    async def recv() -> list[Any]:
        while True:
            try:
                messages = await receive()
            except SubscriptionError as exc:
                if any(s.refused(socket, exc) for s in screens):
                    continue
                raise
            messages = [m for m in messages if not isinstance(m, UnsubscribeResult)]
            for screen in screens:
                messages = screen.screen(socket, messages)
            if messages:
                return messages

    socket.recv = recv


class _OracleSubscriber(_ReconnectHook, WebsocketMultiAccountSubscriber):  # type: ignore[misc]
    """driftpy's one-socket oracle subscriber, reporting each update's raw bytes to the tap.

    Watched accounts (a signer's User and UserStats) share its socket and can be
    unsubscribed one by one; ``screens`` read their own messages on it.
    """

    @property
    def ws(self) -> Any:
        return self._socket

    @ws.setter
    def ws(self, value: Any) -> None:
        old = self._socket
        if value is not None:
            _screen_messages(value, self.screens)
        _ReconnectHook.ws.fset(self, value)  # type: ignore[attr-defined]
        if old is not None and old is not value:
            for screen in self.screens:
                screen.closed(old)

    def __init__(self, program: Any, commitment: Commitment, tap: AccountTap) -> None:
        self._tap = tap
        self.screens: list[SocketScreen] = []
        super().__init__(program, commitment)
        self._raw: dict[Pubkey, bytes] = {}

    async def add_account(
        self,
        pubkey: Pubkey,
        decode: Callable[[bytes], Any] | None = None,
        initial_data: DataAndSlot | None = None,
    ) -> None:
        inner = decode if decode is not None else self.program.coder.accounts.decode

        def keep_raw(data: bytes) -> Any:
            self._raw[pubkey] = data
            return inner(data)

        await super().add_account(pubkey, keep_raw, initial_data)

    def _update_data(self, pubkey: Pubkey, new_data: DataAndSlot | None) -> None:
        raw = self._raw.pop(pubkey, None)
        super()._update_data(pubkey, new_data)
        if new_data is not None and raw is not None:
            self._tap.record(str(pubkey), raw, new_data.slot)


class _ProgramSubscriber(_ReconnectHook, WebSocketProgramAccountSubscriber):  # type: ignore[misc]
    """driftpy's program subscriber, telling the tap when it reconnects, and letting the
    loop's readers run before it decodes each notification."""

    def __init__(self, tap: AccountTap, *args: Any) -> None:
        self._tap = tap
        super().__init__(*args)

    async def _process_message(self, msg: Any) -> None:
        # A market account takes about a millisecond to decode, and a slot's notifications
        # arrive together: without this turn a read waits for every one of them, even when
        # the accounts it reads were applied first.
        await asyncio.sleep(0)
        await super()._process_message(msg)


_MarketApply = Callable[[str, bytes, DataAndSlot], None]


class WebsocketSubscriber(WebsocketDriftClientAccountSubscriber):  # type: ignore[misc]
    """driftpy's websocket subscriber, fed by :func:`discover_markets` instead of its own.

    Every account update reaches ``tap`` with its raw bytes; :meth:`inject` applies an
    account read elsewhere (a confirmation that found a missed update).
    """

    def __init__(
        self,
        program: Any,
        discovery: Discovery,
        commitment: Commitment,
        tap: AccountTap | None = None,
    ) -> None:
        if tap is None:
            tap = AccountTap(AccountLedger(), discovery.records)
        super().__init__(
            program,
            discovery.perp_indexes,
            discovery.spot_indexes,
            discovery.oracles,
            False,
            commitment,
        )
        self._discovery = discovery
        self._tap = tap
        self.oracle_subscriber = _OracleSubscriber(program, commitment, tap)
        self._market_apply: dict[str, _MarketApply] = {}
        self._decoders: dict[str, TolerantDecoder] = {}

    def _market_map(
        self,
        kind: Literal["perp", "spot"],
        initial: list[DataAndSlot],
        unavailable: dict[int, str] | None,
    ) -> MarketMap:
        connection = self.program.provider.connection
        market_type = MarketType.Perp() if kind == "perp" else MarketType.Spot()
        market_map = MarketMap(
            MarketMapConfig(self.program, market_type, WebsocketConfig(), connection)
        )
        wanted = {ds.data.market_index for ds in initial}
        decoder = self._decoders[kind] = TolerantDecoder(self.program, unavailable)
        by_pda = index_by_pda(self.program.program_id, kind)
        markets = market_map.market_map
        tap = self._tap

        def apply(key: str, raw: bytes, data: DataAndSlot) -> None:
            # The program subscription sends every market of the kind: keep the discovered
            # (and DRIFT_PERP_MARKETS-selected) ones, and skip accounts never decoded.
            if data.data is None:
                index = by_pda.get(Pubkey.from_string(key))
                if index is not None and index in wanted:
                    decoder.unreadable(index)
            elif data.data.market_index in wanted:
                current = markets.get(data.data.market_index)
                if current is None or data.slot >= current.slot:
                    markets[data.data.market_index] = data
            tap.record(key, raw, data.slot)

        async def update(key: str, data: DataAndSlot) -> None:
            apply(key, decoder.last_raw, data)

        self._market_apply[kind] = apply
        subscription = market_map.subscription
        subscription.decode = decoder
        subscription.on_update = update
        options = WebsocketProgramAccountOptions(
            (get_market_type_filter(market_type),), subscription.commitment, "base64"
        )
        subscription.subscriber = _ProgramSubscriber(
            tap, f"{kind}MarketMap", self.program, options, update, decoder
        )
        market_map.init(initial)
        return market_map

    async def subscribe(self) -> None:
        if self.is_subscribed():
            return
        discovery = self._discovery
        self.state_subscriber = _StateSubscriber(
            self.program, self.commitment, discovery.state, self._tap
        )
        await self.state_subscriber.subscribe()
        self.perp_market_map = self._market_map("perp", discovery.perp, discovery.unavailable)
        self.spot_market_map = self._market_map("spot", discovery.spot, None)
        for wrapper in discovery.oracles:
            await self.subscribe_to_oracle(wrapper)
        await self.oracle_subscriber.subscribe()
        await self.spot_market_map.subscribe()
        await self.perp_market_map.subscribe()
        await self._set_perp_oracle_map()
        await self._set_spot_oracle_map()

    def inject(self, record: AccountRecord) -> None:
        """Apply ``record`` as if its notification had arrived (it reaches the tap too)."""
        if record.kind == "state":
            state = self.state_subscriber
            state.update_data(DataAndSlot(record.slot, state.decode(record.data)))
        elif record.kind == "oracle":
            pubkey = Pubkey.from_string(record.pubkey)
            decode = self.oracle_subscriber.decode_map.get(pubkey)
            if decode is not None:
                self.oracle_subscriber._update_data(
                    pubkey, DataAndSlot(record.slot, decode(record.data))
                )
        elif record.kind in self._market_apply:
            decoded = self._decoders[record.kind](record.data)
            self._market_apply[record.kind](
                record.pubkey, record.data, DataAndSlot(record.slot, decoded)
            )
        else:  # a watched account: the tap is its only reader
            self._tap.record(record.pubkey, record.data, record.slot)

    def share_socket(self, screen: SocketScreen) -> Any | None:
        """The oracles' WebSocket (a solana-py connection) now, None while it is down;
        ``screen`` reads its own messages on it from now on, across reconnects."""
        oracles = self.oracle_subscriber
        if screen not in oracles.screens:
            oracles.screens.append(screen)  # the live socket reads this very list
        return oracles.ws

    async def watch_account(self, record: AccountRecord) -> None:
        """Subscribe ``record``'s account too, on the oracles' WebSocket (no socket of its
        own), starting from ``record``; its updates reach the tap, which must watch it."""
        key = Pubkey.from_string(record.pubkey)
        if key in self.oracle_subscriber.data_map:
            return  # watched already: a second accountSubscribe would never be unsubscribed
        initial = DataAndSlot(record.slot, record.data)
        await self.oracle_subscriber.add_account(key, bytes, initial)
        await self._settled(key)

    async def _settled(self, key: Pubkey) -> None:
        """Wait (bounded) until ``key``'s subscription is no longer awaiting its id.

        driftpy can only unsubscribe an account whose id it holds, and offers no event for
        its arrival: one unsubscribed while pending would stay subscribed until the socket
        closes. Polled, as the answer comes within one round trip.
        """
        oracles = self.oracle_subscriber
        deadline = asyncio.get_running_loop().time() + _SUBSCRIBE_ANSWER_S
        while key in oracles.pending_subscriptions and oracles.ws is not None:
            if asyncio.get_running_loop().time() > deadline:
                log.debug("no subscription id for %s within %.0f s", key, _SUBSCRIBE_ANSWER_S)
                return
            await asyncio.sleep(_SUBSCRIBE_POLL_S)

    async def unwatch_account(self, pubkey: str) -> None:
        """Unsubscribe an account :meth:`watch_account` subscribed."""
        key = Pubkey.from_string(pubkey)
        oracles = self.oracle_subscriber
        await self._settled(key)
        await oracles.remove_account(key)
        # driftpy removes only a subscription the RPC has confirmed: one still pending would
        # be subscribed again at the next reconnect.
        for table in (oracles.decode_map, oracles.data_map, oracles.initial_data_map):
            table.pop(key, None)
