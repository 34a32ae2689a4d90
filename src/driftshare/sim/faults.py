"""Provider failures the simulator can put on, from Python, HTTP or start-up specs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from solders.pubkey import Pubkey

from driftshare.sim.blocks import MAX_PROCESSING_AGE
from driftshare.sim.rpc import validation_problems
from driftshare.sim.store import Account

__all__ = [
    "FAIL_STATUSES",
    "GRPC_REFUSALS",
    "CorruptMode",
    "FaultError",
    "Faults",
    "GrpcHooks",
    "GrpcRefusal",
    "LostReply",
    "ServerHooks",
    "check_spec",
    "parse_spec",
]

FAIL_STATUSES = (429, 500, 503)
CorruptMode = Literal["truncate", "garble"]
GrpcRefusal = Literal["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
GRPC_REFUSALS: tuple[GrpcRefusal, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
LostReply = Literal["429", "timeout"]


class FaultError(ValueError):
    """A fault request the simulator cannot carry out; the message says why."""


class ServerHooks(Protocol):
    """What a fault needs the running server to do."""

    async def drop_ws(self) -> int: ...

    async def go_down(self) -> None: ...

    async def come_up(self) -> None: ...


class GrpcHooks(Protocol):
    """What a fault needs the Geyser gRPC server to do."""

    async def drop_streams(self) -> int: ...


class _Fail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal[429, 500, 503] = 429
    count: int = Field(1, ge=1)


class _GrpcRefuse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: GrpcRefusal = "UNAVAILABLE"
    count: int = Field(1, ge=1)


class _Corrupt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pubkey: str
    mode: CorruptMode = "truncate"


class _LostReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: LostReply = "429"
    count: int = Field(1, ge=1)


class _FaultRequest(BaseModel):
    """Body of ``POST /_sim/faults``; every key is optional and ``clear`` is applied first."""

    model_config = ConfigDict(extra="forbid")
    clear: bool = False
    fail: _Fail | None = None
    latency_ms: float | None = Field(None, ge=0, le=60_000)
    stall: bool | None = None
    down_s: float | None = Field(None, gt=0, le=3600)
    drop_ws: bool = False
    drop_grpc: bool = False
    grpc_refuse: _GrpcRefuse | None = None
    malformed: int | None = Field(None, ge=0)
    corrupt: _Corrupt | None = None
    hide: str | None = None
    restore: str | None = None
    drop_tx: int | None = Field(None, ge=0)
    lost_reply: _LostReply | None = None
    land_delay_s: float | None = Field(None, ge=0, le=600)
    blockhash_max_age: int | None = Field(None, ge=0, le=MAX_PROCESSING_AGE)
    spec: list[str] = []


def _pubkey(text: Pubkey | str) -> Pubkey:
    if isinstance(text, Pubkey):
        return text
    try:
        return Pubkey.from_string(text)
    except ValueError as exc:
        raise FaultError(f"invalid pubkey {text!r}: {exc}") from None


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultError(f"{name} needs a number, got {text!r}") from None


def _count(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FaultError(f"{name} needs a whole number, got {text!r}") from None


def parse_spec(spec: str) -> dict[str, object]:
    """Turn a start-up spec such as ``fail=429:5`` into a ``POST /_sim/faults`` body.

    Specs: ``fail=STATUS[:N]``, ``latency=MS``, ``stall[=on|off]``, ``down=SECONDS``,
    ``drop-ws``, ``malformed[=N]``, ``corrupt=PUBKEY[:truncate|garble]``, ``restore=PUBKEY``,
    ``clear``; for transactions ``drop-tx=N``, ``lost-reply=429|timeout[:N]``,
    ``land-delay=SECONDS``, ``blockhash-age=BLOCKS``; for gRPC ``drop-grpc``,
    ``grpc-refuse=UNAVAILABLE|RESOURCE_EXHAUSTED[:N]``.
    """
    name, _, arg = spec.strip().partition("=")
    name = name.strip().lower()
    arg = arg.strip()
    if name == "fail":
        status, _, count = arg.partition(":")
        return {"fail": {"status": _count("fail", status), "count": _count("fail", count or "1")}}
    if name == "latency":
        return {"latency_ms": _number("latency", arg)}
    if name == "stall":
        if arg.lower() not in ("", "on", "off", "true", "false", "1", "0"):
            raise FaultError(f"stall takes on or off, got {arg!r}")
        return {"stall": arg.lower() not in ("off", "false", "0")}
    if name == "down":
        return {"down_s": _number("down", arg)}
    if name == "drop-ws" and not arg:
        return {"drop_ws": True}
    if name == "drop-grpc" and not arg:
        return {"drop_grpc": True}
    if name == "grpc-refuse":
        status, _, count = arg.partition(":")
        return {
            "grpc_refuse": {"status": status.upper(), "count": _count("grpc-refuse", count or "1")}
        }
    if name == "malformed":
        return {"malformed": _count("malformed", arg or "1")}
    if name == "corrupt":
        key, _, mode = arg.partition(":")
        return {"corrupt": {"pubkey": key, "mode": mode or "truncate"}}
    if name == "hide":
        return {"hide": arg}
    if name == "restore":
        return {"restore": arg}
    if name == "clear" and not arg:
        return {"clear": True}
    if name == "drop-tx":
        return {"drop_tx": _count("drop-tx", arg or "1")}
    if name == "lost-reply":
        mode, _, count = arg.partition(":")
        return {"lost_reply": {"mode": mode or "429", "count": _count("lost-reply", count or "1")}}
    if name == "land-delay":
        return {"land_delay_s": _number("land-delay", arg)}
    if name == "blockhash-age":
        return {"blockhash_max_age": _count("blockhash-age", arg)}
    raise FaultError(
        f"unknown fault spec {spec!r}; expected fail=STATUS[:N], latency=MS, stall[=on|off], "
        "down=SECONDS, drop-ws, malformed[=N], corrupt=PUBKEY[:truncate|garble], "
        "hide=PUBKEY, restore=PUBKEY, drop-tx=N, lost-reply=429|timeout[:N], "
        "land-delay=SECONDS, blockhash-age=BLOCKS, drop-grpc, grpc-refuse=STATUS[:N] or clear"
    )


def check_spec(spec: str) -> None:
    """Raise :class:`FaultError` unless ``spec`` is a valid start-up fault spec."""
    _check_pubkeys(_validate(parse_spec(spec)))


def _check_pubkeys(request: _FaultRequest) -> None:
    """Raise :class:`FaultError` unless every pubkey ``request`` names parses."""
    if request.corrupt is not None:
        _pubkey(request.corrupt.pubkey)
    for key in (request.hide, request.restore):
        if key is not None:
            _pubkey(key)


def _validate(body: Mapping[str, object]) -> _FaultRequest:
    try:
        return _FaultRequest.model_validate(body)
    except ValidationError as exc:
        problems = validation_problems(exc, "body")
        raise FaultError(f"invalid fault request: {problems}") from None


@dataclasses.dataclass
class _State:
    fail_status: int = 429
    fail_remaining: int = 0
    latency_ms: float = 0.0
    stalled: bool = False
    malformed_remaining: int = 0
    corrupted: dict[Pubkey, CorruptMode] = dataclasses.field(default_factory=dict)
    hidden: set[Pubkey] = dataclasses.field(default_factory=set)
    grpc_refusal: GrpcRefusal = "UNAVAILABLE"
    grpc_refuse_remaining: int = 0
    drop_tx_remaining: int = 0
    lost_reply_mode: LostReply = "429"
    lost_reply_remaining: int = 0
    land_delay_s: float = 0.0
    blockhash_max_age: int = MAX_PROCESSING_AGE


class Faults:
    """The simulator's fault switches; every change takes effect on the next request."""

    def __init__(self, hooks: ServerHooks) -> None:
        self._hooks = hooks
        self._state = _State()
        self._down_task: asyncio.Task[None] | None = None
        self.grpc: GrpcHooks | None = None
        """The Geyser server, when the simulator serves gRPC."""

    def fail_next(self, count: int, status: int = 429) -> None:
        """Answer the next ``count`` HTTP requests with ``status`` (429, 500 or 503)."""
        if status not in FAIL_STATUSES:
            raise FaultError(f"fail status must be one of {FAIL_STATUSES}, got {status}")
        if count < 0:
            raise FaultError(f"fail count must be >= 0, got {count}")
        self._state.fail_status = status
        self._state.fail_remaining = count

    def set_latency(self, ms: float) -> None:
        """Delay every HTTP answer by ``ms`` milliseconds (0 turns it off)."""
        if not 0 <= ms <= 60_000:
            raise FaultError(f"latency must be 0..60000 ms, got {ms}")
        self._state.latency_ms = float(ms)

    def set_stall(self, stalled: bool) -> None:
        """Stop (or resume) WebSocket notifications and Geyser account and slot updates;
        subscribing (and a Geyser ping's pong) still works."""
        self._state.stalled = stalled

    def malform_next(self, count: int) -> None:
        """Answer the next ``count`` HTTP requests with a body that is not valid JSON."""
        if count < 0:
            raise FaultError(f"malformed count must be >= 0, got {count}")
        self._state.malformed_remaining = count

    def corrupt(self, pubkey: Pubkey | str, mode: CorruptMode = "truncate") -> None:
        """Serve ``pubkey``'s data cut in half (``truncate``) or bit-flipped (``garble``)."""
        if mode not in ("truncate", "garble"):
            raise FaultError(f"corrupt mode must be truncate or garble, got {mode!r}")
        key = _pubkey(pubkey)
        self._state.corrupted[key] = mode

    def hide(self, pubkey: Pubkey | str) -> None:
        """Stop serving ``pubkey`` (no notifications, null in reads) while it keeps changing:
        a node that lost track of one account."""
        self._state.hidden.add(_pubkey(pubkey))

    def restore(self, pubkey: Pubkey | str) -> None:
        """Serve ``pubkey``'s real data again."""
        key = _pubkey(pubkey)
        self._state.corrupted.pop(key, None)
        self._state.hidden.discard(key)

    def drop_transactions(self, count: int) -> None:
        """Accept the next ``count`` transactions (answering their signatures) and never land
        them, as a leader that never got them."""
        if count < 0:
            raise FaultError(f"drop_tx must be >= 0, got {count}")
        self._state.drop_tx_remaining = count

    def lose_replies(self, count: int, mode: LostReply = "429") -> None:
        """Land the next ``count`` sent transactions, then answer their sends with HTTP 429
        (``"429"``) or no answer at all (``"timeout"``): landed, and the client cannot know."""
        if mode not in ("429", "timeout"):
            raise FaultError(f"lost_reply mode must be 429 or timeout, got {mode!r}")
        if count < 0:
            raise FaultError(f"lost_reply count must be >= 0, got {count}")
        self._state.lost_reply_mode = mode
        self._state.lost_reply_remaining = count

    def delay_landing(self, seconds: float) -> None:
        """Land accepted transactions ``seconds`` later (0 turns it off); one whose blockhash
        expires meanwhile never lands."""
        if not 0 <= seconds <= 600:
            raise FaultError(f"land delay must be 0..600 s, got {seconds}")
        self._state.land_delay_s = float(seconds)

    def expire_blockhashes(self, blocks: int) -> None:
        """Accept blockhashes only ``blocks`` blocks old (150 is the normal validity), while
        ``getLatestBlockhash`` keeps promising 150."""
        if not 0 <= blocks <= MAX_PROCESSING_AGE:
            raise FaultError(f"blockhash_max_age must be 0..{MAX_PROCESSING_AGE}, got {blocks}")
        self._state.blockhash_max_age = blocks

    async def drop_ws(self) -> int:
        """Cut every open WebSocket now; returns how many were cut."""
        return await self._hooks.drop_ws()

    async def drop_grpc(self) -> int:
        """End every Geyser stream now with UNAVAILABLE; returns how many were ended."""
        return 0 if self.grpc is None else await self.grpc.drop_streams()

    def refuse_grpc(self, count: int, status: GrpcRefusal = "UNAVAILABLE") -> None:
        """Refuse the next ``count`` gRPC calls (streams included) with ``status``."""
        if status not in GRPC_REFUSALS:
            raise FaultError(f"gRPC refusal must be one of {GRPC_REFUSALS}, got {status!r}")
        if count < 0:
            raise FaultError(f"gRPC refusal count must be >= 0, got {count}")
        self._state.grpc_refusal = status
        self._state.grpc_refuse_remaining = count

    def take_grpc_refusal(self) -> GrpcRefusal | None:
        """The status to refuse this gRPC call with, consuming one; UNAVAILABLE while down."""
        if self.is_down:
            return "UNAVAILABLE"
        if self._state.grpc_refuse_remaining <= 0:
            return None
        self._state.grpc_refuse_remaining -= 1
        return self._state.grpc_refusal

    async def down(self, seconds: float) -> None:
        """Refuse all connections (HTTP and WebSocket; gRPC calls with UNAVAILABLE) for
        ``seconds``, then come back."""
        if not 0 < seconds <= 3600:
            raise FaultError(f"down needs 0 < seconds <= 3600, got {seconds}")
        if self._down_task is not None:
            self._down_task.cancel()
        else:
            await self._hooks.go_down()
        self._down_task = asyncio.create_task(self._come_up_after(seconds))
        await self.drop_grpc()

    async def _come_up_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._down_task = None
        await self._hooks.come_up()

    @property
    def is_down(self) -> bool:
        return self._down_task is not None

    async def clear(self) -> None:
        """Turn every fault off, bringing the server back up now if it is down."""
        self._state = _State()
        if self.cancel_down():
            await self._hooks.come_up()

    def cancel_down(self) -> bool:
        """Forget a pending come-back (the server is stopping); True if there was one."""
        task, self._down_task = self._down_task, None
        if task is None:
            return False
        task.cancel()
        return True

    async def apply_spec(self, spec: str) -> None:
        """Apply one start-up spec such as ``fail=503:2`` (see :func:`parse_spec`)."""
        await self.apply(parse_spec(spec))

    async def apply(self, body: Mapping[str, object]) -> None:
        """Apply a ``POST /_sim/faults`` body; nothing changes if any part is invalid."""
        request = _validate(body)
        for spec in request.spec:
            check_spec(spec)
        _check_pubkeys(request)
        for part in (request, *(_validate(parse_spec(spec)) for spec in request.spec)):
            await self._apply(part)

    async def _apply(self, request: _FaultRequest) -> None:
        if request.clear:
            await self.clear()
        if request.fail is not None:
            self.fail_next(request.fail.count, request.fail.status)
        if request.latency_ms is not None:
            self.set_latency(request.latency_ms)
        if request.stall is not None:
            self.set_stall(request.stall)
        if request.malformed is not None:
            self.malform_next(request.malformed)
        if request.corrupt is not None:
            self.corrupt(request.corrupt.pubkey, request.corrupt.mode)
        if request.hide is not None:
            self.hide(request.hide)
        if request.restore is not None:
            self.restore(request.restore)
        if request.grpc_refuse is not None:
            self.refuse_grpc(request.grpc_refuse.count, request.grpc_refuse.status)
        if request.drop_tx is not None:
            self.drop_transactions(request.drop_tx)
        if request.lost_reply is not None:
            self.lose_replies(request.lost_reply.count, request.lost_reply.mode)
        if request.land_delay_s is not None:
            self.delay_landing(request.land_delay_s)
        if request.blockhash_max_age is not None:
            self.expire_blockhashes(request.blockhash_max_age)
        if request.drop_ws:
            await self.drop_ws()
        if request.drop_grpc:
            await self.drop_grpc()
        if request.down_s is not None:
            await self.down(request.down_s)

    def state(self) -> dict[str, object]:
        """The current switches, as ``GET /_sim/faults`` shows them."""
        s = self._state
        return {
            "fail": {"status": s.fail_status, "remaining": s.fail_remaining},
            "latency_ms": s.latency_ms,
            "stall": s.stalled,
            "down": self.is_down,
            "malformed_remaining": s.malformed_remaining,
            "corrupted": {str(k): v for k, v in s.corrupted.items()},
            "hidden": sorted(str(k) for k in s.hidden),
            "grpc_refuse": {"status": s.grpc_refusal, "remaining": s.grpc_refuse_remaining},
            "drop_tx_remaining": s.drop_tx_remaining,
            "lost_reply": {"mode": s.lost_reply_mode, "remaining": s.lost_reply_remaining},
            "land_delay_s": s.land_delay_s,
            "blockhash_max_age": s.blockhash_max_age,
        }

    @property
    def latency_s(self) -> float:
        return self._state.latency_ms / 1000

    @property
    def stalled(self) -> bool:
        return self._state.stalled

    def take_failure(self) -> int | None:
        """The status to fail this request with, consuming one, or None."""
        if self._state.fail_remaining <= 0:
            return None
        self._state.fail_remaining -= 1
        return self._state.fail_status

    def take_malformed(self) -> bool:
        """True if this request's answer must be malformed, consuming one."""
        if self._state.malformed_remaining <= 0:
            return False
        self._state.malformed_remaining -= 1
        return True

    @property
    def land_delay_s(self) -> float:
        return self._state.land_delay_s

    @property
    def blockhash_max_age(self) -> int:
        return self._state.blockhash_max_age

    def take_tx_drop(self) -> bool:
        """True if this transaction must be dropped, consuming one."""
        if self._state.drop_tx_remaining <= 0:
            return False
        self._state.drop_tx_remaining -= 1
        return True

    def take_lost_reply(self) -> LostReply | None:
        """How this landed transaction's send must be answered instead, consuming one."""
        if self._state.lost_reply_remaining <= 0:
            return None
        self._state.lost_reply_remaining -= 1
        return self._state.lost_reply_mode

    def serve(self, pubkey: Pubkey, account: Account) -> Account | None:
        """``account`` as clients are to see it: corrupted or hidden (None) if a fault says so."""
        if pubkey in self._state.hidden:
            return None
        mode = self._state.corrupted.get(pubkey)
        if mode is None:
            return account
        if mode == "truncate":
            data = account.data[: len(account.data) // 2]
        else:
            data = bytes(b ^ 0xFF for b in account.data)
        return dataclasses.replace(account, data=data)
