"""Every subscribed account over one Yellowstone Geyser gRPC stream (``DRIFT_SUBSCRIPTION=grpc``).

driftpy's own gRPC mode opens a channel and a ``Subscribe`` stream per account, requires
TLS and falls back to nothing. Here one channel and one stream carry every account: the
accounts are set (and later changed) by writing a new ``SubscribeRequest`` on the same
stream. Updates go to the :class:`~driftshare._data.tap.AccountTap`, so into the same
ledger as the WebSocket path, and a :class:`~driftshare._data.ledger_subscriber.LedgerSubscriber`
serves the DriftClient from that ledger.

The stream's health is visible: it asks for slot updates and pings every third of
``grpc_stall_s``. A stream that ends, stays silent (no pong) or gets no slot update while
the chain moves on (``GetSlot``) is opened again with backoff, and the tap is told, so every
account is re-read with batched ``getMultipleAccounts``. After repeated failures the owner
is told to fall back (:attr:`GeyserStream.on_give_up`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import grpc
from driftpy.accounts.grpc.geyser_codegen import geyser_pb2, geyser_pb2_grpc
from solders.pubkey import Pubkey

from driftshare._data.discovery import Discovery, index_by_pda
from driftshare._data.ledger import AccountLedger, AccountRecord, LedgerEntry
from driftshare._data.ledger_subscriber import LedgerSubscriber
from driftshare._data.tap import AccountTap
from driftshare._tasks import cancel_all
from driftshare.config import redact_text, redact_url

__all__ = ["FAILURES_BEFORE_FALLBACK", "GeyserStream", "GrpcSubscriber", "grpc_works"]

log = logging.getLogger(__name__)

FAILURES_BEFORE_FALLBACK = 3
"""Stream failures in a row, without a slot or account update between them, before the
owner falls back to WebSocket."""
_BACKOFF_S = 0.25
_BACKOFF_CAP_S = 5.0
_FILTER = "driftshare"
_MAX_MESSAGE_BYTES = 64 << 20
"""Solana accounts reach 10 MiB; gRPC's default limit is 4 MiB."""
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


class _StreamFailed(Exception):
    """The stream ended, went silent or stalled; the message says which."""


def _target(url: str) -> tuple[str, bool]:
    """``host:port`` of a gRPC URL and whether it uses TLS (any scheme but ``http``)."""
    parts = urlsplit(url)
    tls = parts.scheme != "http"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or (443 if tls else 80)}", tls


def open_channel(url: str) -> grpc.aio.Channel:
    """One channel to ``url``: TLS with the system's roots, plaintext for ``http://``."""
    target, tls = _target(url)
    if tls:
        return grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS
        )
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("x-token", token),)


class GeyserStream:
    """One channel and one ``Subscribe`` stream for every account in :meth:`watch`.

    :meth:`run` keeps the stream open until cancelled; :attr:`ready` is set at the first
    pong. ``on_account(pubkey, data, slot)`` gets every account update, ``on_reconnect``
    every reopening after the first, ``on_give_up`` the :data:`FAILURES_BEFORE_FALLBACK`-th
    failure in a row.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        stall_s: float,
        on_account: Callable[[str, bytes, int], None],
        on_reconnect: Callable[[], None] = lambda: None,
        on_give_up: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._metadata = _metadata(token)
        self._channel = open_channel(url)
        self._stub = geyser_pb2_grpc.GeyserStub(self._channel)
        self._stall_s = stall_s
        self.on_account = on_account
        self.on_reconnect = on_reconnect
        self.on_give_up = on_give_up
        self._clock = clock
        self._wanted: tuple[str, ...] = ()
        self._call: Any = None
        self._write_lock = asyncio.Lock()
        self._rng = random.Random()
        self.ready = asyncio.Event()
        self.given_up = asyncio.Event()
        """Set at the :data:`FAILURES_BEFORE_FALLBACK`-th failure in a row."""
        self.connected = False
        self.opened = 0
        """Streams opened (1 + reconnections)."""
        self.failures = 0
        """Failures in a row; reset by a slot or account update."""
        self.failures_total = 0
        self.updates = 0
        self.slot = 0
        """The newest slot the stream reported (or GetSlot at its opening)."""
        self.last_slot_at: float | None = None
        self.last_message_at: float | None = None
        self.last_error: str | None = None
        self._pings = 0
        self._slot_heard_at = clock()

    async def watch(self, pubkeys: Iterable[str]) -> None:
        """Carry exactly ``pubkeys`` from now on: a new request on the open stream."""
        self._wanted = tuple(sorted(set(pubkeys)))
        if self._call is not None:
            await self._write(self._request())

    def _request(self) -> Any:
        return geyser_pb2.SubscribeRequest(
            accounts={_FILTER: geyser_pb2.SubscribeRequestFilterAccounts(account=self._wanted)},
            slots={_FILTER: geyser_pb2.SubscribeRequestFilterSlots(filter_by_commitment=True)},
            commitment=geyser_pb2.CONFIRMED,
        )

    async def _write(self, request: Any) -> None:
        # gRPC allows one write at a time on a stream.
        async with self._write_lock:
            call = self._call
            if call is not None:
                await call.write(request)

    async def run(self) -> None:
        """Keep the stream open (cancel to stop), reopening it with backoff."""
        while True:
            try:
                await self._serve()
            except Exception as exc:  # any failure of this stream: count it and reopen
                self._failed(_describe(exc))
            finally:
                self.connected = False
                self._end_call()
            cap = min(_BACKOFF_CAP_S, _BACKOFF_S * 2 ** min(self.failures, 10))
            await asyncio.sleep(self._rng.uniform(cap / 2, cap))

    def _end_call(self) -> None:
        # No reference to a call may outlive it: gRPC keeps the connection of a closed
        # channel open while any of its calls is still referenced.
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def _failed(self, reason: str) -> None:
        self.last_error = redact_text(reason)
        self.failures += 1
        self.failures_total += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        shown = redact_url(self.url)
        log.log(level, "gRPC stream to %s failed (%s); reopening", shown, self.last_error)
        if self.failures == FAILURES_BEFORE_FALLBACK:
            self.given_up.set()
            self.on_give_up()

    async def _serve(self) -> None:
        chain = await self._stub.GetSlot(
            geyser_pb2.GetSlotRequest(commitment=geyser_pb2.CONFIRMED),
            metadata=self._metadata,
            timeout=self._stall_s,
        )
        self.slot = max(self.slot, chain.slot)
        self._slot_heard_at = self._clock()
        self._call = self._stub.Subscribe(metadata=self._metadata)
        self.opened += 1
        await self._write(self._request())
        await self._ping()
        raise _StreamFailed(await self._until_failure())

    async def _until_failure(self) -> str:
        """Read and watch the open stream until either fails; why.

        A string, not the exception: its traceback would keep the call referenced."""
        tasks = [
            asyncio.create_task(self._read(), name="driftshare-grpc-read"),
            asyncio.create_task(self._watch_health(), name="driftshare-grpc-health"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_all(list(tasks))
        failures = [t.exception() for t in done if not t.cancelled()]
        return "; ".join(_describe(exc) for exc in failures if exc is not None) or "ended"

    async def _ping(self) -> None:
        self._pings += 1
        await self._write(
            geyser_pb2.SubscribeRequest(ping=geyser_pb2.SubscribeRequestPing(id=self._pings))
        )

    async def _read(self) -> None:
        while True:
            update = await self._call.read()
            if update is grpc.aio.EOF:
                raise _StreamFailed("the server ended the stream")
            self.last_message_at = self._clock()
            kind = update.WhichOneof("update_oneof")
            if kind == "account":
                self._healthy()
                info = update.account.account
                self.updates += 1
                self.on_account(str(Pubkey.from_bytes(info.pubkey)), info.data, update.account.slot)
            elif kind == "slot":
                self._healthy()
                self.slot = max(self.slot, update.slot.slot)
                self.last_slot_at = self._slot_heard_at = self.last_message_at
            elif kind == "pong" and not self.connected:
                self.connected = True
                if self.opened > 1:
                    self.on_reconnect()
                self.ready.set()
            elif kind == "ping":
                await self._ping()  # as Yellowstone's clients answer the server's pings

    def _healthy(self) -> None:
        self.failures = 0
        self.last_error = None

    async def _watch_health(self) -> None:
        """Ping every third of ``stall_s``; end the stream if its slots stop while the
        chain's do not."""
        every = self._stall_s / 3
        while True:
            await asyncio.sleep(every)
            await self._ping()
            # Heard at the stream's opening (or a slot update) at the latest.
            silent = self._clock() - max(self.last_message_at or 0.0, self._slot_heard_at)
            if silent >= self._stall_s:
                raise _StreamFailed(f"no message (not even a pong) for {silent:.1f} s")
            if self._clock() - self._slot_heard_at < self._stall_s:
                continue
            chain = await self._stub.GetSlot(
                geyser_pb2.GetSlotRequest(commitment=geyser_pb2.CONFIRMED),
                metadata=self._metadata,
                timeout=self._stall_s,
            )
            if chain.slot > self.slot:
                raise _StreamFailed(
                    f"no slot update for {self._stall_s:g} s while the chain reached "
                    f"slot {chain.slot} (stream at {self.slot})"
                )

    async def close(self) -> None:
        self._end_call()
        await self._channel.close()

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "url": redact_url(self.url),
            "connected": self.connected,
            "streams_opened": self.opened,
            "accounts": len(self._wanted),
            "failures": self.failures,
            "failures_total": self.failures_total,
            "updates": self.updates,
            "slot": self.slot,
            "slot_age_s": None if self.last_slot_at is None else now - self.last_slot_at,
            "last_message_age_s": (
                None if self.last_message_at is None else now - self.last_message_at
            ),
            "last_error": self.last_error,
        }


class GrpcSubscriber(LedgerSubscriber):
    """A DriftClient's accounts from one :class:`GeyserStream`, served from the ledger.

    Updates reach the ``tap`` (so the ledger); the DriftClient reads the ledger as a
    :class:`LedgerSubscriber` does. A perp market whose newest bytes cannot be decoded keeps
    its last value and is listed in ``discovery.unavailable`` (served stale), as in the
    WebSocket mode.

    A subscriber replacing one whose stream runs (a resubscription) takes that stream over
    (:meth:`take_over`): its accounts change by a new request on the same stream.
    """

    def __init__(
        self,
        program: Any,
        ledger: AccountLedger,
        discovery: Discovery,
        tap: AccountTap,
        stream: GeyserStream,
    ) -> None:
        super().__init__(program, ledger)
        self._tap = tap
        self._markets_unavailable = discovery.unavailable
        self._perp_index = {
            str(key): index for key, index in index_by_pda(program.program_id, "perp").items()
        }
        self.stream = stream
        stream.on_account = tap.record
        stream.on_reconnect = tap.reconnected
        self._task: asyncio.Task[None] | None = None
        self._owns_stream = True

    def take_over(self, previous: GrpcSubscriber) -> None:
        """Serve on ``previous``'s running stream; ``previous`` will not close it."""
        self._task, previous._task = previous._task, None
        previous._owns_stream = False

    async def subscribe(self) -> None:
        """Carry every account of the tap on the stream; open it and wait for it to answer
        unless it runs already."""
        self.follow()
        await self.stream.watch(self._tap.pubkeys())
        if self._task is not None:
            return
        self._task = asyncio.create_task(self.stream.run(), name="driftshare-grpc-stream")
        ready = asyncio.ensure_future(self.stream.ready.wait())
        given_up = asyncio.ensure_future(self.stream.given_up.wait())
        try:
            await asyncio.wait([ready, given_up], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_all([ready, given_up])
        if not self.stream.ready.is_set():
            raise ConnectionError(f"gRPC stream did not open: {self.stream.last_error}")

    async def unsubscribe(self) -> None:
        """Close the stream and its channel (unless handed over); the decoded accounts stay
        readable."""
        self.unfollow()
        task, self._task = self._task, None
        await cancel_all([task])
        if self._owns_stream:
            await self.stream.close()

    async def watch_account(self, record: AccountRecord) -> None:
        """Carry ``record``'s account (a signer's User or UserStats) on the same stream too:
        one new request; its updates reach the tap, which must watch it."""
        await self.stream.watch({*self._tap.pubkeys(), record.pubkey})

    async def unwatch_account(self, pubkey: str) -> None:
        """Stop carrying an account :meth:`watch_account` added: one new request."""
        await self.stream.watch(set(self._tap.pubkeys()) - {pubkey})

    def inject(self, record: Any) -> None:
        """Apply a record read elsewhere (a confirmation's repair) through the tap."""
        self._tap.record(record.pubkey, record.data, record.slot)

    def _on_entry(self, entry: LedgerEntry, changed: bool) -> None:
        super()._on_entry(entry, changed)
        pubkey = entry.record.pubkey
        index = self._perp_index.get(pubkey)
        if index is not None and pubkey not in self.unavailable:
            self._markets_unavailable.pop(index, None)

    def _drop(self, pubkey: str, reason: str) -> None:
        index = self._perp_index.get(pubkey)
        if index is None or index not in self.perp_markets:
            super()._drop(pubkey, reason)
            return
        # Keep serving its last value, stale, as the WebSocket mode does.
        if pubkey not in self.unavailable:
            log.warning("market %s became undecodable (%s); serving it as stale", index, reason)
        self.unavailable[pubkey] = reason
        self._markets_unavailable[index] = reason


async def grpc_works(url: str, token: str | None, stall_s: float) -> bool:
    """Whether a short stream at ``url`` answers a ping and reports a new slot in time."""
    async with open_channel(url) as channel:
        return await _answers(channel, token, stall_s)


async def _answers(channel: grpc.aio.Channel, token: str | None, stall_s: float) -> bool:
    # Every outcome is settled here, so no traceback keeps the call past the channel's close.
    call = geyser_pb2_grpc.GeyserStub(channel).Subscribe(metadata=_metadata(token))
    try:
        async with asyncio.timeout(stall_s):
            await call.write(
                geyser_pb2.SubscribeRequest(
                    slots={
                        _FILTER: geyser_pb2.SubscribeRequestFilterSlots(filter_by_commitment=True)
                    },
                    commitment=geyser_pb2.CONFIRMED,
                    ping=geyser_pb2.SubscribeRequestPing(id=1),
                )
            )
            kinds: set[str] = set()
            while not {"pong", "slot"} <= kinds:
                update = await call.read()
                if update is grpc.aio.EOF:
                    return False
                kinds.add(update.WhichOneof("update_oneof"))
            return True
    except Exception:  # unreachable, refused or silent: not yet
        return False
    finally:
        call.cancel()
