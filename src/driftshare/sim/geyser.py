"""Yellowstone Geyser over gRPC: account and slot updates pushed from the store.

The service is the one ``geyser.proto`` describes, served with the stubs driftpy ships
(``driftpy.accounts.grpc.geyser_codegen``). ``Subscribe`` carries account filters by pubkey
or owner (with memcmp and datasize checks), slot updates, ping/pong and a commitment;
``GetLatestBlockhash``, ``GetSlot``, ``GetBlockHeight``, ``GetVersion`` and ``Ping`` answer
from the store. The simulated chain has no forks, so every write is final at once: the
commitment only changes which slot updates are sent (``filter_by_commitment``) and what
``GetSlot`` answers.

Each new ``SubscribeRequest`` on a stream replaces its filters, as Yellowstone does, except
a request carrying only a ping, which is answered with a pong and changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import based58
import grpc
from driftpy.accounts.grpc.geyser_codegen import geyser_pb2, geyser_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from solders.pubkey import Pubkey

from driftshare.sim.blocks import FINALITY_DEPTH, Blocks
from driftshare.sim.faults import Faults
from driftshare.sim.rpc import API_VERSION
from driftshare.sim.stats import GrpcStats
from driftshare.sim.store import Account, AccountStore

__all__ = ["GeyserServer", "TlsPair"]

_SERVER_PING_S = 15.0
"""Yellowstone pings every stream this often, so idle streams survive load balancers."""
_MAX_FILTER_ACCOUNTS = 10_000
_ACCEPTED_COMMITMENTS = frozenset(
    {geyser_pb2.PROCESSED, geyser_pb2.CONFIRMED, geyser_pb2.FINALIZED}
)
_UNSUPPORTED_FILTERS = (
    "transactions",
    "transactions_status",
    "blocks",
    "blocks_meta",
    "entry",
    "accounts_data_slice",
)


@dataclass(frozen=True)
class TlsPair:
    """A PEM certificate chain and its private key, for serving gRPC over TLS."""

    cert: bytes
    key: bytes


class _RequestError(Exception):
    """A SubscribeRequest the server refuses; the message says why."""


@dataclass(frozen=True)
class _AccountSpec:
    """One named accounts filter: an account matches by pubkey or owner, then every check."""

    name: str
    pubkeys: frozenset[Pubkey]
    owners: frozenset[Pubkey]
    checks: tuple[Callable[[bytes], bool], ...]

    def matches(self, pubkey: Pubkey, owner: Pubkey, data: bytes) -> bool:
        if pubkey not in self.pubkeys and owner not in self.owners:
            return False
        return all(check(data) for check in self.checks)


def _check(spec: Any) -> Callable[[bytes], bool]:
    """A ``SubscribeRequestFilterAccountsFilter`` as a predicate on account data."""
    kind = spec.WhichOneof("filter")
    if kind == "datasize":
        size = spec.datasize
        return lambda data: len(data) == size
    if kind == "memcmp":
        memcmp = spec.memcmp
        which = memcmp.WhichOneof("data")
        try:
            if which == "base58":
                wanted = based58.b58decode(memcmp.base58.encode())
            elif which == "base64":
                wanted = base64.b64decode(memcmp.base64, validate=True)
            else:
                wanted = memcmp.bytes
        except ValueError:
            raise _RequestError(f"memcmp filter: invalid {which} data") from None
        offset = memcmp.offset
        return lambda data: data[offset : offset + len(wanted)] == wanted
    raise _RequestError(f"{kind} filters are not served by this simulator")


@dataclass(frozen=True)
class _Filters:
    """One SubscribeRequest's account and slot filters."""

    accounts: tuple[_AccountSpec, ...]
    slots: tuple[str, ...]
    slots_by_commitment: bool
    commitment: geyser_pb2.CommitmentLevel

    @classmethod
    def parse(cls, request: Any) -> _Filters:
        for name in _UNSUPPORTED_FILTERS:
            if len(getattr(request, name)):
                raise _RequestError(f"{name} filters are not served by this simulator")
        specs = tuple(
            _AccountSpec(
                name,
                frozenset(_pubkey(text) for text in spec.account),
                frozenset(_pubkey(text) for text in spec.owner),
                tuple(_check(check) for check in spec.filters),
            )
            for name, spec in request.accounts.items()
        )
        if sum(len(spec.pubkeys) for spec in specs) > _MAX_FILTER_ACCOUNTS:
            raise _RequestError(f"at most {_MAX_FILTER_ACCOUNTS} accounts per stream")
        commitment = request.commitment if request.HasField("commitment") else geyser_pb2.PROCESSED
        if commitment not in _ACCEPTED_COMMITMENTS:
            raise _RequestError(f"commitment {commitment} is not served")
        by_commitment = any(spec.filter_by_commitment for spec in request.slots.values())
        return cls(specs, tuple(request.slots), by_commitment, commitment)

    @property
    def pubkeys(self) -> int:
        """Accounts named by pubkey."""
        return sum(len(spec.pubkeys) for spec in self.accounts)

    def names_for(self, pubkey: Pubkey, owner: Pubkey, data: bytes) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.accounts if spec.matches(pubkey, owner, data))


_NO_FILTERS = _Filters((), (), False, geyser_pb2.PROCESSED)


def _pubkey(text: str) -> Pubkey:
    try:
        return Pubkey.from_string(text)
    except ValueError:
        raise _RequestError(f"invalid pubkey {text[:64]!r}") from None


def _is_ping_only(request: Any) -> bool:
    return request.HasField("ping") and not any(
        len(getattr(request, name)) for name in ("accounts", "slots", *_UNSUPPORTED_FILTERS)
    )


@dataclass(frozen=True)
class _End:
    """Put in a stream's outbox: end it with this status."""

    code: grpc.StatusCode
    message: str


@dataclass(eq=False)
class _Stream:
    peer: str
    filters: _Filters = _NO_FILTERS
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    """SubscribeUpdates to write, or an :class:`_End`."""


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class GeyserServer:
    """The simulator's Yellowstone Geyser gRPC service on its own port."""

    def __init__(
        self,
        store: AccountStore,
        faults: Faults,
        stats: GrpcStats,
        *,
        host: str,
        port: int,
        blocks: Blocks,
        token: str | None = None,
        tls: TlsPair | None = None,
    ) -> None:
        self._store = store
        self._faults = faults
        self._stats = stats
        self.host = host
        self.port = port
        self._blocks = blocks
        self._token = token
        self._tls = tls
        self._streams: set[_Stream] = set()
        self._write_versions = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self._unlisten: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        """``host:port``, as gRPC clients (driftpy's ``GrpcConfig.endpoint``) take it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return ("https://" if self._tls is not None else "http://") + self.address

    async def start(self) -> None:
        """Listen and serve; port 0 picks a free one."""
        server = grpc.aio.server()
        geyser_pb2_grpc.add_GeyserServicer_to_server(_Servicer(self), server)
        target = f"{self.address.rsplit(':', 1)[0]}:{self.port}"
        if self._tls is None:
            port = server.add_insecure_port(target)
        else:
            credentials = grpc.ssl_server_credentials([(self._tls.key, self._tls.cert)])
            port = server.add_secure_port(target, credentials)
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {target}")
        self.port = port
        await server.start()
        self._server = server
        self._unlisten = self._store.listen(self._on_change)
        self._faults.grpc = self

    async def stop(self) -> None:
        """End every stream and stop listening."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self._faults.grpc = None
        await self.drop_streams("simulator stopping")
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None

    async def drop_streams(self, reason: str = "stream dropped by a fault") -> int:
        """End every open stream with UNAVAILABLE; how many were ended."""
        for stream in self._streams:
            stream.outbox.put_nowait(_End(grpc.StatusCode.UNAVAILABLE, reason))
        return len(self._streams)

    def notify_slot(self, slot: int) -> None:
        """Send the new tip to every stream with a slot filter."""
        if self._faults.stalled:
            return
        for stream in self._streams:
            filters = stream.filters
            if not filters.slots:
                continue
            statuses: dict[geyser_pb2.CommitmentLevel, int] = {
                geyser_pb2.PROCESSED: slot,
                geyser_pb2.CONFIRMED: slot,
                geyser_pb2.FINALIZED: max(0, slot - FINALITY_DEPTH),
            }
            if filters.slots_by_commitment:
                statuses = {filters.commitment: statuses[filters.commitment]}
            for status, at in statuses.items():
                if at < 1:
                    continue  # nothing finalized yet
                update = geyser_pb2.SubscribeUpdate(
                    filters=filters.slots,
                    slot=geyser_pb2.SubscribeUpdateSlot(
                        slot=at, parent=max(0, at - 1), status=status
                    ),
                    created_at=_now(),
                )
                stream.outbox.put_nowait(update)

    def _on_change(self, pubkey: Pubkey, stored: Account) -> None:
        if not self._streams or self._faults.stalled:
            return
        account = self._faults.serve(pubkey, stored)
        if account is None:
            return  # hidden: the node lost track of it
        update_account: Any = None
        for stream in self._streams:
            names = stream.filters.names_for(pubkey, stored.owner, account.data)
            if not names:
                continue
            if update_account is None:
                info = geyser_pb2.SubscribeUpdateAccountInfo(
                    pubkey=bytes(pubkey),
                    lamports=account.lamports,
                    owner=bytes(account.owner),
                    executable=account.executable,
                    rent_epoch=account.rent_epoch,
                    data=account.data,
                    write_version=next(self._write_versions),
                )
                update_account = geyser_pb2.SubscribeUpdateAccount(
                    account=info, slot=self._store.slot
                )
            stream.outbox.put_nowait(
                geyser_pb2.SubscribeUpdate(filters=names, account=update_account, created_at=_now())
            )

    # -- calls ----------------------------------------------------------------------------

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        """Count the call; abort it for a bad token or a refusal fault."""
        self._stats.calls[method] += 1
        if self._token is not None:
            sent = dict(context.invocation_metadata() or ()).get("x-token")
            if not isinstance(sent, str) or not hmac.compare_digest(sent, self._token):
                self._stats.refused["UNAUTHENTICATED"] += 1
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid x-token")
        refusal = self._faults.take_grpc_refusal()
        if refusal is not None:
            self._stats.refused[refusal] += 1
            await context.abort(grpc.StatusCode[refusal], f"refused by a fault: {refusal}")

    @contextlib.contextmanager
    def connected(self, peer: str) -> Any:
        """Count ``peer``'s call as in progress on its connection while the block runs."""
        self._stats.peers_seen.add(peer)
        self._stats.calls_by_peer[peer] += 1
        try:
            yield
        finally:
            self._stats.calls_by_peer[peer] -= 1
            if self._stats.calls_by_peer[peer] <= 0:
                del self._stats.calls_by_peer[peer]

    async def subscribe(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Run one Subscribe stream until the client leaves or a fault ends it."""
        stream = _Stream(context.peer())
        self._streams.add(stream)
        self._stats.streams_open += 1
        self._stats.streams_total += 1
        reader = asyncio.create_task(self._read(stream, requests))
        pinger = asyncio.create_task(self._ping(stream))
        try:
            while True:
                item = await stream.outbox.get()
                if isinstance(item, _End):
                    self._stats.ended[item.code.name] += 1
                    await context.abort(item.code, item.message)
                await context.write(item)
                self._stats.updates[item.WhichOneof("update_oneof") or "other"] += 1
        finally:
            pinger.cancel()
            # Cancelled, not awaited: a task reading the request stream ends only with the call.
            reader.cancel()
            self._streams.discard(stream)
            self._stats.streams_open -= 1
            self._stats.filters_active -= stream.filters.pubkeys

    async def _ping(self, stream: _Stream) -> None:
        while True:
            await asyncio.sleep(_SERVER_PING_S)
            stream.outbox.put_nowait(
                geyser_pb2.SubscribeUpdate(
                    filters=(), ping=geyser_pb2.SubscribeUpdatePing(), created_at=_now()
                )
            )

    async def _read(self, stream: _Stream, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                if request.HasField("ping"):
                    stream.outbox.put_nowait(
                        geyser_pb2.SubscribeUpdate(
                            filters=(),
                            pong=geyser_pb2.SubscribeUpdatePong(id=request.ping.id),
                            created_at=_now(),
                        )
                    )
                if _is_ping_only(request):
                    continue
                filters = _Filters.parse(request)
                self._stats.filters_active += filters.pubkeys - stream.filters.pubkeys
                stream.filters = filters
        except _RequestError as exc:
            stream.outbox.put_nowait(_End(grpc.StatusCode.INVALID_ARGUMENT, str(exc)))
        except grpc.aio.AioRpcError:
            return  # the client went away: the writer ends with the call

    @property
    def block_height(self) -> int:
        return self._blocks.height

    def get_slot(self, commitment: int) -> int:
        slot = self._store.slot
        return max(0, slot - FINALITY_DEPTH) if commitment == geyser_pb2.FINALIZED else slot

    def latest_blockhash(self) -> Any:
        blockhash, last_valid = self._blocks.latest()
        return geyser_pb2.GetLatestBlockhashResponse(
            slot=self._store.slot, blockhash=str(blockhash), last_valid_block_height=last_valid
        )


class _Servicer(geyser_pb2_grpc.GeyserServicer):  # type: ignore[misc]
    """The generated service's methods, each admitted and counted by the server."""

    def __init__(self, server: GeyserServer) -> None:
        self._server = server

    async def Subscribe(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
        with self._server.connected(context.peer()):
            await self._server.admit(context, "Subscribe")
            await self._server.subscribe(request_iterator, context)

    async def _unary(self, context: Any, method: str, answer: Callable[[], Any]) -> Any:
        with self._server.connected(context.peer()):
            await self._server.admit(context, method)
            return answer()

    async def Ping(self, request: Any, context: Any) -> Any:
        return await self._unary(
            context, "Ping", lambda: geyser_pb2.PongResponse(count=request.count)
        )

    async def GetSlot(self, request: Any, context: Any) -> Any:
        return await self._unary(
            context,
            "GetSlot",
            lambda: geyser_pb2.GetSlotResponse(slot=self._server.get_slot(request.commitment)),
        )

    async def GetBlockHeight(self, request: Any, context: Any) -> Any:
        return await self._unary(
            context,
            "GetBlockHeight",
            lambda: geyser_pb2.GetBlockHeightResponse(block_height=self._server.block_height),
        )

    async def GetLatestBlockhash(self, request: Any, context: Any) -> Any:
        return await self._unary(
            context,
            "GetLatestBlockhash",
            self._server.latest_blockhash,
        )

    async def GetVersion(self, request: Any, context: Any) -> Any:
        version = json.dumps({"version": {"solana": API_VERSION}, "extra": {"simulator": True}})
        return await self._unary(
            context, "GetVersion", lambda: geyser_pb2.GetVersionResponse(version=version)
        )
