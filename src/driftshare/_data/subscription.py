"""Discovering Drift's markets and subscribing a DriftClient to them, by websocket or polling
(gRPC: :mod:`driftshare._data.grpc_subscription`).

driftpy's own "find all markets" path decodes every market in one go, so a single account
it cannot decode (a layout newer than the installed driftpy, corrupt data) fails the whole
subscription. Here discovery decodes account by account, and the subscribers are driftpy's
own, subclassed only where they would otherwise die on one bad account or wait one poll
interval per oracle.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Protocol

from driftpy.accounts.bulk_account_loader import BufferAndSlot, BulkAccountLoader
from driftpy.accounts.oracle import decode_oracle, get_oracle_decode_fn
from driftpy.accounts.polling import PollingDriftClientAccountSubscriber
from driftpy.accounts.types import DataAndSlot, FullOracleWrapper, WebsocketProgramAccountOptions
from driftpy.accounts.ws import WebsocketDriftClientAccountSubscriber
from driftpy.accounts.ws.account_subscriber import WebsocketAccountSubscriber
from driftpy.accounts.ws.multi_account_subscriber import WebsocketMultiAccountSubscriber
from driftpy.accounts.ws.program_account_subscriber import WebSocketProgramAccountSubscriber
from driftpy.addresses import (
    get_perp_market_public_key,
    get_spot_market_public_key,
    get_state_public_key,
)
from driftpy.market_map.market_map import MarketMap
from driftpy.market_map.market_map_config import MarketMapConfig, WebsocketConfig
from driftpy.memcmp import get_market_type_filter
from driftpy.oracles.oracle_id import get_oracle_id
from driftpy.types import MarketType, OracleInfo
from solana.rpc.commitment import Commitment
from solana.rpc.websocket_api import SubscriptionError
from solders.pubkey import Pubkey
from solders.rpc.responses import UnsubscribeResult

from driftshare._data.freshness import KEYS_PER_CALL, multiple_accounts
from driftshare._data.ledger import AccountKind, AccountLedger, AccountRecord

__all__ = [
    "AccountTap",
    "Discovery",
    "PollingSubscriber",
    "ResilientLoader",
    "SocketScreen",
    "SubscriptionMode",
    "WebsocketSubscriber",
    "discover_markets",
    "newest_data_slot",
    "post_batch",
]

log = logging.getLogger(__name__)

SubscriptionMode = Literal["websocket", "polling", "grpc"]

_MAX_MARKET_INDEX = 512
_SUBSCRIBE_ANSWER_S = 5.0
"""How long a watched account's subscription may wait for its id."""
_SUBSCRIBE_POLL_S = 0.005


@dataclass
class Discovery:
    """The program's markets and oracles as found on chain, with what could not be decoded."""

    slot: int
    perp: list[DataAndSlot] = field(default_factory=list)
    spot: list[DataAndSlot] = field(default_factory=list)
    oracles: list[FullOracleWrapper] = field(default_factory=list)
    unavailable: dict[int, str] = field(default_factory=dict)
    """Perp market index → why it is not served."""
    state: DataAndSlot | None = None
    records: list[AccountRecord] = field(default_factory=list)
    """The raw bytes of every account subscribed to, as read here."""

    @property
    def perp_indexes(self) -> list[int]:
        return sorted(ds.data.market_index for ds in self.perp)

    @property
    def spot_indexes(self) -> list[int]:
        return sorted(ds.data.market_index for ds in self.spot)

    def oracle_infos(self) -> list[OracleInfo]:
        return [OracleInfo(w.pubkey, w.oracle_source) for w in self.oracles]


@cache
def _index_by_pda(program_id: Pubkey, kind: str) -> dict[Pubkey, int]:
    derive = get_perp_market_public_key if kind == "perp" else get_spot_market_public_key
    return {derive(program_id, i): i for i in range(_MAX_MARKET_INDEX)}


async def post_batch(connection: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send a JSON-RPC batch through ``connection``'s HTTP session; the answers, by request:
    the one with each request's ``id``, or an error answer where the RPC gave none."""
    # Raw JSON-RPC through the client's session (so through driftshare's transport), as driftpy
    # does, because solana-py has no batch call and its typed calls drop the context slot.
    provider = connection._provider
    response = await provider.session.post(provider.endpoint_uri, json=batch)
    response.raise_for_status()
    answers = response.json()
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise ValueError("the RPC answered a batch with something other than a list of objects")
    # A batch's answers may come in any order.
    by_id = {answer.get("id"): answer for answer in answers}
    return [by_id.get(request.get("id"), {"error": {"message": "no answer"}}) for request in batch]


async def _program_accounts(program: Any) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """Perp and spot market accounts in one batched HTTP request, with their context slots."""
    kinds = {"perp": MarketType.Perp(), "spot": MarketType.Spot()}
    batch = []
    for number, market_type in enumerate(kinds.values()):
        memcmp = get_market_type_filter(market_type)
        options = {
            "encoding": "base64",
            "withContext": True,
            "filters": [{"memcmp": {"offset": memcmp.offset, "bytes": str(memcmp.bytes)}}],
        }
        batch.append(
            {
                "jsonrpc": "2.0",
                "id": number,
                "method": "getProgramAccounts",
                "params": [str(program.program_id), options],
            }
        )
    answers = await post_batch(program.provider.connection, batch)
    found: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    for kind, answer in zip(kinds, answers, strict=True):
        if "error" in answer:
            message = answer["error"].get("message")
            raise RuntimeError(f"getProgramAccounts ({kind} markets) failed: {message}")
        result = answer["result"]
        found[kind] = int(result["context"]["slot"]), list(result["value"])
    return found


def _decode_markets(
    program: Any,
    kind: Literal["perp", "spot"],
    slot: int,
    raw: list[dict[str, Any]],
    *,
    unavailable: dict[int, str],
    records: dict[int, AccountRecord],
) -> list[DataAndSlot]:
    by_pda = _index_by_pda(program.program_id, kind)
    decoded: list[DataAndSlot] = []
    for item in raw:
        pubkey = Pubkey.from_string(item["pubkey"])
        index = by_pda.get(pubkey)
        data = base64.b64decode(item["account"]["data"][0])
        if index is not None:
            records[index] = AccountRecord(item["pubkey"], kind, slot, data)
        try:
            account = program.coder.accounts.decode(data)
        except Exception as exc:  # any decoder failure makes just this market unavailable
            reason = f"cannot decode {kind} market account {pubkey}: {exc!r}"
            log.warning("%s; serving the other markets", reason)
            if kind == "perp" and index is not None:
                unavailable[index] = reason
            continue
        decoded.append(DataAndSlot(slot, account))
    return decoded


async def _oracles_and_state(
    program: Any, sources: dict[Pubkey, Any], records: list[AccountRecord]
) -> tuple[list[FullOracleWrapper], DataAndSlot | None]:
    """Every oracle and the State account, in getMultipleAccounts calls of at most 100 keys."""
    state_key = get_state_public_key(program.program_id)
    keys = [state_key, *sources]
    wrappers: list[FullOracleWrapper] = []
    state: DataAndSlot | None = None
    for start in range(0, len(keys), KEYS_PER_CALL):
        chunk = keys[start : start + KEYS_PER_CALL]
        resp = await program.provider.connection.get_multiple_accounts(chunk, encoding="base64")
        slot = resp.context.slot
        for pubkey, account in zip(chunk, resp.value, strict=True):
            if pubkey == state_key:
                if account is not None:
                    data = bytes(account.data)
                    state = DataAndSlot(slot, program.coder.accounts.decode(data))
                    records.append(AccountRecord(str(pubkey), "state", slot, data))
                continue
            if account is None:
                log.warning("oracle account %s not found", pubkey)
                continue
            data = bytes(account.data)
            try:
                price = decode_oracle(data, sources[pubkey])
            except Exception as exc:  # one unreadable oracle must not hide the others
                log.warning("cannot decode oracle %s: %r", pubkey, exc)
                continue
            source = type(sources[pubkey]).__name__
            records.append(AccountRecord(str(pubkey), "oracle", slot, data, source))
            wrappers.append(FullOracleWrapper(pubkey, sources[pubkey], DataAndSlot(slot, price)))
    return wrappers, state


async def discover_markets(program: Any, perp_subset: Sequence[int] | None = None) -> Discovery:
    """Every perp and spot market of ``program`` (or the ``perp_subset``), decoded one by one.

    Two HTTP requests for a program of up to 100 oracles: the markets, then the oracles and
    the State account.
    """
    unavailable: dict[int, str] = {}
    perp_records: dict[int, AccountRecord] = {}
    spot_records: dict[int, AccountRecord] = {}
    raw = await _program_accounts(program)
    perp = _decode_markets(
        program, "perp", *raw["perp"], unavailable=unavailable, records=perp_records
    )
    spot = _decode_markets(
        program, "spot", *raw["spot"], unavailable=unavailable, records=spot_records
    )
    if perp_subset is not None:
        wanted = set(perp_subset)
        on_chain = sorted({ds.data.market_index for ds in perp} | set(unavailable))
        perp = [ds for ds in perp if ds.data.market_index in wanted]
        unavailable = {i: r for i, r in unavailable.items() if i in wanted}
        missing = sorted(wanted - {ds.data.market_index for ds in perp} - set(unavailable))
        for index in missing:
            unavailable[index] = (
                f"DRIFT_PERP_MARKETS names perp market {index}, which does not exist on chain"
            )
        if missing:
            log.warning(
                "DRIFT_PERP_MARKETS names perp market %s, which does not exist on chain "
                "(it has %d perp markets%s)",
                ", ".join(map(str, missing)),
                len(on_chain),
                f", indexes {on_chain[0]} to {on_chain[-1]}" if on_chain else "",
            )
    sources: dict[Pubkey, Any] = {}
    for ds in perp:
        sources[ds.data.amm.oracle] = ds.data.amm.oracle_source
    for ds in spot:
        sources[ds.data.oracle] = ds.data.oracle_source
    sources.pop(Pubkey.default(), None)
    # The accounts subscribed to: the kept markets, decodable or not, and their oracles.
    kept = {ds.data.market_index for ds in perp} | set(unavailable)
    records = [r for i, r in perp_records.items() if i in kept]
    records.extend(spot_records[ds.data.market_index] for ds in spot)
    oracles, state = await _oracles_and_state(program, sources, records)
    slot = max(raw["perp"][0], raw["spot"][0])
    return Discovery(slot, perp, spot, oracles, unavailable, state, records)


def newest_data_slot(subscriber: Any) -> int | None:
    """The newest slot among a driftpy subscriber's market and oracle data; None before any."""
    try:
        slots = [ds.slot for ds in subscriber.get_market_accounts_and_slots() if ds is not None]
    except Exception:  # driftpy's subscribers raise before they have subscribed
        return None
    oracles = getattr(subscriber, "oracle", None)  # polling keeps oracles here
    if oracles is None:
        oracles = getattr(getattr(subscriber, "oracle_subscriber", None), "data_map", {})
    slots.extend(ds.slot for ds in oracles.values() if ds is not None)
    return max(slots, default=None)


class AccountTap:
    """Where the subscribers report each account they read: raw bytes and slot, into a ledger.

    Only the accounts subscribed to are recorded (discovery's, whose records it applies
    first). ``on_reconnect`` is called when a driftpy subscription opens its WebSocket
    again: notifications sent during the gap are lost, so the caller re-fetches.

    A tap made ``active=False`` (for a subscriber that will replace one still serving) holds
    what it hears until :meth:`activate`: the ledger must describe the accounts being served,
    or the old subscriber's values would be dated by the new one's reads.
    """

    def __init__(
        self,
        ledger: AccountLedger,
        records: Sequence[AccountRecord],
        *,
        active: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.on_reconnect: Callable[[], None] | None = None
        self._kinds: dict[str, tuple[AccountKind, str | None]] = {}
        self._clock = clock
        self._held: list[tuple[AccountRecord, float]] | None = None if active else []
        for record in records:
            self._kinds[record.pubkey] = (record.kind, record.oracle_source)
            self._apply(record)

    def activate(self) -> None:
        """Write what was heard while inactive to the ledger, dated when it was read, and
        every later report straight through."""
        held, self._held = self._held, None
        for record, read_at in held or ():
            self.ledger.apply(record, confirmed_at=read_at)

    def _apply(self, record: AccountRecord) -> None:
        if self._held is None:
            self.ledger.apply(record)
        else:
            self._held.append((record, self._clock()))

    def record(self, pubkey: str, data: bytes, slot: int) -> None:
        self.ledger.observe_chain_slot(slot)
        known = self._kinds.get(pubkey)
        if known is not None:
            self._apply(AccountRecord(pubkey, known[0], slot, bytes(data), known[1]))

    def confirm(self, pubkey: str, data: bytes, slot: int) -> None:
        """Confirm ``pubkey`` at ``slot`` if ``data`` is what the ledger holds for it."""
        self.ledger.observe_chain_slot(slot)
        if self._held is not None:
            self.record(pubkey, data, slot)  # the bytes read at that slot: a record as good
            return
        entry = self.ledger.get(pubkey)
        if pubkey in self._kinds and entry is not None and entry.record.data == data:
            self.ledger.confirm(pubkey, slot)

    def pubkeys(self) -> list[str]:
        """Every subscribed account's address."""
        return list(self._kinds)

    def watch(self, pubkey: str, kind: AccountKind) -> None:
        """Record ``pubkey`` (subscribed after discovery) as ``kind`` from now on."""
        self._kinds[pubkey] = (kind, None)

    def unwatch(self, pubkey: str) -> None:
        """Stop recording ``pubkey``: it is no longer subscribed."""
        self._kinds.pop(pubkey, None)

    def reconnected(self) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect()


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


class _TolerantDecoder:
    """Decode one kind of market account; never raise.

    An account that turns undecodable keeps its last good value (a market account starts
    with its own address, so it is still recognised while those 40 bytes are intact) and is
    listed in ``unavailable``; one not recognised gives None, and the caller, who knows
    which market it is, calls :meth:`unreadable`. ``last_raw`` is the account data of the
    latest call, for the tap.
    """

    def __init__(self, program: Any, unavailable: dict[int, str] | None) -> None:
        self._decode: Callable[[bytes], Any] = program.coder.accounts.decode
        self._last: dict[bytes, Any] = {}
        self._unavailable = unavailable
        self.last_raw = b""

    def __call__(self, data: bytes) -> Any:
        self.last_raw = data
        key = bytes(data[8:40])
        try:
            decoded = self._decode(data)
        except Exception as exc:  # a bad account must not end the subscription it arrived on
            last = self._last.get(key)
            if last is not None and self._unavailable is not None:
                if last.market_index not in self._unavailable:
                    log.warning(
                        "market %s became undecodable: %r; serving it as stale",
                        last.market_index,
                        exc,
                    )
                self._unavailable[last.market_index] = f"cannot decode market account: {exc!r}"
            return last
        self._last[key] = decoded
        if self._unavailable is not None:
            self._unavailable.pop(decoded.market_index, None)
        return decoded

    def unreadable(self, market_index: int) -> None:
        """Report market ``market_index`` unavailable: its newest account could not be read."""
        if self._unavailable is not None and market_index not in self._unavailable:
            log.warning("market %s became unreadable; serving it as stale", market_index)
            self._unavailable[market_index] = "cannot decode market account"


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
        self._decoders: dict[str, _TolerantDecoder] = {}

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
        decoder = self._decoders[kind] = _TolerantDecoder(self.program, unavailable)
        by_pda = _index_by_pda(self.program.program_id, kind)
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


class _PollConfirmations:
    """A BulkAccountLoader's connection that reads each answer for the tap first.

    driftpy's loader reports only changed accounts; an unchanged one in an answer is
    confirmed current at the answer's slot here, so polling needs no extra reads.
    """

    def __init__(self, connection: Any, tap: AccountTap) -> None:
        self._connection = connection
        self._tap = tap

    @property
    def _provider(self) -> _PollConfirmations:
        return self  # driftpy posts through connection._provider.session

    @property
    def session(self) -> _PollConfirmations:
        return self

    @property
    def endpoint_uri(self) -> str:
        uri: str = self._connection._provider.endpoint_uri
        return uri

    async def post(self, url: str, **kwargs: Any) -> Any:
        response = await self._connection._provider.session.post(url, **kwargs)
        try:
            self._confirm(kwargs.get("json"), response.json())
        except Exception as exc:  # untrusted answer: driftpy's own parsing reports it
            log.debug("cannot read a polling answer for confirmations: %r", exc)
        return response

    def _confirm(self, requests: Any, answers: Any) -> None:
        keys_by_id = {r["id"]: r["params"][0] for r in requests}
        for answer in answers:
            keys = keys_by_id.get(answer.get("id"))
            if keys is None:
                continue
            try:
                slot, accounts = multiple_accounts(keys, answer)
            except ValueError:
                continue  # an error answer: driftpy's own parsing reports it
            for pubkey, data in accounts:
                self._tap.confirm(pubkey, data, slot)


class ResilientLoader(BulkAccountLoader):  # type: ignore[misc]
    """driftpy's BulkAccountLoader whose polling loop survives a failed load.

    driftpy's loop ends on the first exception (an RPC error, a malformed answer), which
    would silently stop every polled account for good.
    """

    failures = 0
    task: asyncio.Task[None] | None
    connection: Any
    tap: AccountTap | None = None
    """Told every changed account's raw bytes and slot, and every unchanged one's slot."""

    def attach(self, tap: AccountTap) -> None:
        """Report every account read to ``tap``: changes with their bytes, the rest as
        confirmations."""
        self.tap = tap
        self.connection = _PollConfirmations(self.connection, tap)

    def handle_callbacks(self, account_to_load: Any, buffer: bytes | None, slot: int) -> None:
        super().handle_callbacks(account_to_load, buffer, slot)
        if buffer is not None and self.tap is not None:
            self.tap.record(str(account_to_load.pubkey), buffer, slot)

    def inject(self, record: AccountRecord) -> None:
        """Apply ``record`` as if a poll had read it."""
        account = self.accounts_to_load.get(record.pubkey)
        current = self.buffer_and_slot_map.get(record.pubkey)
        if account is None or (current is not None and current.slot > record.slot):
            return
        self.buffer_and_slot_map[record.pubkey] = BufferAndSlot(record.slot, record.data)
        self.handle_callbacks(account, record.data, record.slot)

    def _start_loading(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._poll_forever(), name="driftshare-poll")

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.load()
            except Exception as exc:  # keep polling; the next round may succeed
                self.failures += 1
                log.debug("polling round failed: %r", exc)
            await asyncio.sleep(self.frequency)


def _ignore(buffer: bytes | None, slot: int) -> None:
    """A watched account's loader callback: its reader is the tap."""


class PollingSubscriber(PollingDriftClientAccountSubscriber):  # type: ignore[misc]
    """driftpy's polling subscriber over one BulkAccountLoader, without per-oracle waits."""

    def __init__(self, program: Any, loader: ResilientLoader, discovery: Discovery) -> None:
        super().__init__(
            program,
            loader,
            discovery.perp_indexes,
            discovery.spot_indexes,
            discovery.oracle_infos(),
            False,
        )
        self._decoder = _TolerantDecoder(program, discovery.unavailable)
        self._watched: dict[str, int] = {}
        """Watched account → its loader callback id."""

    def inject(self, record: AccountRecord) -> None:
        """Apply ``record`` as if a poll had read it (it reaches the tap too)."""
        self.bulk_account_loader.inject(record)

    async def watch_account(self, record: AccountRecord) -> None:
        """Poll ``record``'s account too, in the same batched reads, starting from
        ``record``; its updates reach the tap, which must watch it."""
        if record.pubkey in self._watched:
            return
        loader = self.bulk_account_loader
        loader.buffer_and_slot_map[record.pubkey] = BufferAndSlot(record.slot, record.data)
        callback = loader.add_account(Pubkey.from_string(record.pubkey), _ignore)
        self._watched[record.pubkey] = callback

    async def unwatch_account(self, pubkey: str) -> None:
        """Stop polling an account :meth:`watch_account` added."""
        callback = self._watched.pop(pubkey, None)
        if callback is not None:
            self.bulk_account_loader.remove_account(Pubkey.from_string(pubkey), callback)
            self.bulk_account_loader.buffer_and_slot_map.pop(pubkey, None)

    async def unsubscribe(self) -> None:
        await super().unsubscribe()
        # The loader stops polling only once no account is left in it.
        for pubkey in list(self._watched):
            await self.unwatch_account(pubkey)

    async def subscribe(self) -> None:
        if len(self.callbacks) != 0:
            return
        await self.update_accounts_to_poll()
        await self.bulk_account_loader.load()
        if self.state is None:
            raise RuntimeError("state account not found while polling")
        await self._set_perp_oracle_map()
        await self._set_spot_oracle_map()

    async def add_oracle(self, oracle: Pubkey, oracle_source: Any) -> bool:
        # driftpy waits up to three poll intervals per oracle here; one load after
        # registering every account serves them all.
        oracle_id = get_oracle_id(oracle, oracle_source)
        if oracle == Pubkey.default() or oracle_id in self.oracle_callbacks:
            return True
        decode = get_oracle_decode_fn(oracle_source)

        def on_oracle(buffer: bytes | None, slot: int) -> None:
            if buffer is None:
                return
            try:
                self.oracle[oracle_id] = DataAndSlot(slot, decode(buffer))
            except Exception as exc:
                log.debug("cannot decode oracle %s: %r", oracle, exc)

        self.oracle_callbacks[oracle_id] = self.bulk_account_loader.add_account(oracle, on_oracle)
        return True

    def _get_perp_market_callback(self, market_index: int) -> Callable[[bytes | None, int], None]:
        def on_market(buffer: bytes | None, slot: int) -> None:
            if buffer is None:
                return
            decoded = self._decoder(buffer)
            if decoded is None:
                self._decoder.unreadable(market_index)
            else:
                self.perp_markets[market_index] = DataAndSlot(slot, decoded)

        return on_market
