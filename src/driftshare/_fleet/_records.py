"""The fleet's wire format: one signed message per account update or confirmation, the
leader's blockhash and fee, and each member's list of the sub-accounts it uses.

A message is ``<signature>.<JSON>``. The signature (HMAC-SHA256, empty without a secret)
covers the JSON text as sent and the group's context: the group, the network, the chain's
genesis hash and the Drift program id. Everything read back from Redis is untrusted:
:func:`decode` checks the size, then the signature, and only then parses, so with a secret
nothing unsigned is ever parsed; any parse failure is one :class:`RecordError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args

from solders.pubkey import Pubkey

from driftshare._data.ledger import AccountKind, AccountRecord

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_PAIRS",
    "MAX_PAIRS_BYTES",
    "Chain",
    "Message",
    "Pair",
    "RecordError",
    "Signer",
    "TxMessage",
    "decode",
    "decode_pairs",
    "decode_update",
    "digest",
    "encode",
    "encode_pairs",
    "encode_tx",
    "local_time",
    "wall_time",
]

MAX_MESSAGE_BYTES = 1 << 20
"""Larger than any Drift account (a few KiB) base64-encoded; anything bigger is refused."""

_VERSION = 2
_KINDS: tuple[str, ...] = get_args(AccountKind)
_MAX_SOURCE_LEN = 64
_MAX_BRACKETS = 4
"""A message is one flat JSON object: more brackets than this is nesting, refused unparsed
(deeply nested JSON exhausts the parser's recursion)."""
_MAX_INT = (1 << 63) - 1
"""Slots and epochs are u64 on chain and in Redis's Lua; anything larger is made up."""
_DIGEST_CHARS = 32

MessageType = Literal["r", "c"]
"""``r``: an account's data at a slot; ``c``: a confirmation that this data is current
(``b``, the leader's blockhash and fee, is a :class:`TxMessage`)."""

Pair = tuple[str, int]
"""An (authority, sub-account id) a member trades on: the authority in base58."""
MAX_PAIRS = 64
"""The most sub-accounts one member asks the leader to share; a longer list is refused."""
MAX_PAIRS_BYTES = 8192
"""Larger than any list of :data:`MAX_PAIRS` pairs; a longer entry is refused unread."""
_MAX_SUB_ACCOUNT = 65535
"""Drift's sub-account ids are u16."""


class RecordError(ValueError):
    """A message that is malformed or fails verification; the message says which."""


@dataclass(frozen=True, slots=True)
class Chain:
    """Which chain a fleet shares: records of another chain must never verify here."""

    network: str
    genesis_hash: str
    program_id: str


@dataclass(frozen=True, slots=True)
class Message:
    """One published update: a record (``type == "r"``) or a confirmation (``"c"``).

    A confirmation names the data it confirms (``data_slot`` and ``data_digest``): a
    follower or Redis holding other bytes for the account does not take it.
    """

    type: MessageType
    pubkey: str
    slot: int
    """The record's slot, or the slot a confirmation confirms the data at."""
    wall_time: float
    """``time.time()`` at the leader when the slot was learnt (for the account's age)."""
    epoch: int
    member: str
    record: AccountRecord | None = None
    """Set for ``type == "r"``."""
    data_slot: int = 0
    """The confirmed record's slot (a record's own slot for ``type == "r"``)."""
    data_digest: str = ""
    """:func:`digest` of the confirmed (or carried) data."""


@dataclass(frozen=True, slots=True)
class TxMessage:
    """The leader's recent blockhash (with its last valid block height, its slot and the
    chain's block height when it was fetched) and priority fee, for every member's sends."""

    blockhash: str
    last_valid_block_height: int
    slot: int
    block_height: int
    wall_time: float
    """``time.time()`` at the leader when the blockhash was fetched."""
    fee: int
    """Micro-lamports per compute unit."""
    fee_wall_time: float | None
    """``time.time()`` at the leader when the fee was fetched; None before it was."""
    epoch: int
    member: str


def digest(data: bytes) -> str:
    """A short SHA-256 of account data: what a confirmation names."""
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


def wall_time(monotonic: float) -> float:
    """``time.time()`` at a ``time.monotonic()`` instant: the time a message carries."""
    return time.time() - max(0.0, time.monotonic() - monotonic)


def local_time(wall: float) -> float:
    """A message's (the leader's) wall time on this process's monotonic clock.

    A record loaded from Redis keeps its real age (a dead leader's values are not fresh);
    a leader clock ahead of ours never makes a value younger than "now". Ages across hosts
    are only as good as their clocks' agreement: a leader clock behind by d ages every
    value by d, one ahead by d hides up to d of real age (keep hosts on NTP).
    """
    return time.monotonic() - max(0.0, time.time() - wall)


def record_message(record: AccountRecord, wall_time: float, epoch: int, member: str) -> Message:
    """The message carrying ``record``."""
    slot = record.slot
    return Message(
        "r", record.pubkey, slot, wall_time, epoch, member, record, slot, digest(record.data)
    )


class Signer:
    """HMAC-SHA256 over a message's text and the group's context; without a key, none."""

    def __init__(self, key: bytes | None, group: str, chain: Chain) -> None:
        self._key = key
        # Signed with every message: a record cannot be replayed into another group,
        # network or chain (Drift's addresses are the same on mainnet and devnet).
        self._context = json.dumps(
            [group, chain.network, chain.genesis_hash, chain.program_id], separators=(",", ":")
        ).encode()

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def sign(self, payload: bytes) -> str:
        if self._key is None:
            return ""
        return hmac.new(self._key, self._context + b"\n" + payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: bytes) -> bool:
        if self._key is None:
            return True
        return hmac.compare_digest(self.sign(payload).encode(), signature)


def encode(message: Message, signer: Signer) -> str:
    """``message`` as the text stored in Redis and published on the channel."""
    record = message.record
    raw: dict[str, Any] = {
        "v": _VERSION,
        "t": message.type,
        "p": message.pubkey,
        "s": message.slot,
        "w": message.wall_time,
        "e": message.epoch,
        "m": message.member,
    }
    if record is not None:
        raw |= {
            "k": record.kind,
            "o": record.oracle_source,
            "d": base64.b64encode(record.data).decode(),
        }
    else:
        raw |= {"ds": message.data_slot, "dh": message.data_digest}
    payload = json.dumps(raw, separators=(",", ":"))
    return signer.sign(payload.encode()) + "." + payload


def encode_tx(message: TxMessage, signer: Signer) -> str:
    """``message`` as the text stored in Redis and published on the channel."""
    raw = {
        "v": _VERSION,
        "t": "b",
        "h": message.blockhash,
        "lv": message.last_valid_block_height,
        "s": message.slot,
        "bh": message.block_height,
        "w": message.wall_time,
        "f": message.fee,
        "fw": message.fee_wall_time,
        "e": message.epoch,
        "m": message.member,
    }
    payload = json.dumps(raw, separators=(",", ":"))
    return signer.sign(payload.encode()) + "." + payload


def encode_pairs(member: str, pairs: Collection[Pair], signer: Signer) -> str:
    """The list of sub-accounts ``member`` trades on, as stored in the group's ``pairs``."""
    raw = {"v": _VERSION, "m": member, "p": sorted(pairs)}
    payload = json.dumps(raw, separators=(",", ":"))
    return signer.sign(payload.encode()) + "." + payload


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise RecordError(what)


def _verified(text: str | bytes, signer: Signer, limit: int, brackets: int) -> Any:
    """The JSON of a signed text, checked for size and signature before it is parsed."""
    raw_bytes = text.encode(errors="surrogateescape") if isinstance(text, str) else text
    _require(len(raw_bytes) <= limit, "message too large")
    signature, dot, payload = raw_bytes.partition(b".")
    _require(bool(dot) and len(signature) <= 64, "not a fleet message")
    _require(signer.verify(payload, signature), "bad signature")
    _require(payload.count(b"{") + payload.count(b"[") <= brackets, "nested JSON")
    try:
        return json.loads(payload)
    except Exception:  # any failure on untrusted input is one malformed message
        raise RecordError("malformed message") from None


def decode_update(text: str | bytes, signer: Signer) -> Message | TxMessage:
    """Check and parse one message of the channel; :class:`RecordError` says what is wrong."""
    raw = _verified(text, signer, MAX_MESSAGE_BYTES, _MAX_BRACKETS)
    try:
        if isinstance(raw, dict) and raw.get("t") == "b":
            return _parse_tx(raw)
        return _parse(raw)
    except RecordError:
        raise
    except Exception:  # any other failure on untrusted input is one malformed message
        raise RecordError("malformed message") from None


def decode(text: str | bytes, signer: Signer) -> Message:
    """Check and parse one account message; :class:`RecordError` says what is wrong with it."""
    message = decode_update(text, signer)
    _require(isinstance(message, Message), "not an account message")
    assert isinstance(message, Message)
    return message


def decode_pairs(text: str | bytes, member: str, signer: Signer) -> frozenset[Pair]:
    """Check and parse ``member``'s list of sub-accounts; :class:`RecordError` says what is
    wrong with it (with a secret, a list not signed for ``member`` is refused)."""
    raw = _verified(text, signer, MAX_PAIRS_BYTES, MAX_PAIRS + 2)
    _require(isinstance(raw, dict) and raw.get("v") == _VERSION, "unknown version")
    _require(raw.get("m") == member, "another member's list")
    pairs = raw.get("p")
    _require(isinstance(pairs, list), "not a list")
    _require(len(pairs) <= MAX_PAIRS, f"more than {MAX_PAIRS} sub-accounts")
    found = set()
    for pair in pairs:
        _require(isinstance(pair, list) and len(pair) == 2, "not a pair")
        authority, sub = pair
        _require(_is_pubkey(authority), "bad authority")
        _require(type(sub) is int and 0 <= sub <= _MAX_SUB_ACCOUNT, "bad sub-account id")
        found.add((authority, sub))
    return frozenset(found)


def _is_pubkey(value: object) -> bool:
    """Whether ``value`` is a base58 public key, written as solders writes it."""
    try:
        return isinstance(value, str) and str(Pubkey.from_string(value)) == value
    except ValueError:
        return False


def _is_int(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_INT


def _parse(raw: Any) -> Message:
    _require(isinstance(raw, dict), "not a JSON object")
    _require(raw.get("v") == _VERSION, "unknown version")
    kind = raw.get("t")
    slot, wall, epoch, member = raw.get("s"), raw.get("w"), raw.get("e"), raw.get("m")
    _require(kind in ("r", "c"), "unknown message type")
    _require(_is_int(slot), "bad slot")
    _require(_is_int(epoch), "bad epoch")
    _require(_is_time(wall), "bad time")
    _require(isinstance(member, str) and len(member) <= 200, "bad member")
    pubkey = raw.get("p")
    _require(_is_pubkey(pubkey), "bad pubkey")
    if kind == "c":
        data_slot, data_digest = raw.get("ds"), raw.get("dh")
        _require(_is_int(data_slot) and data_slot <= slot, "bad data slot")
        _require(isinstance(data_digest, str) and len(data_digest) == _DIGEST_CHARS, "bad digest")
        return Message("c", pubkey, slot, float(wall), epoch, member, None, data_slot, data_digest)
    account_kind, source = raw.get("k"), raw.get("o")
    _require(account_kind in _KINDS, "bad account kind")
    _require(
        source is None
        or (isinstance(source, str) and source.isalnum() and len(source) <= _MAX_SOURCE_LEN),
        "bad oracle source",
    )
    _require((source is not None) == (account_kind == "oracle"), "oracle source mismatch")
    try:
        data = base64.b64decode(raw.get("d"), validate=True)
    except Exception:
        raise RecordError("bad data") from None
    record = AccountRecord(pubkey, account_kind, slot, data, source)
    return record_message(record, float(wall), epoch, member)


def _parse_tx(raw: Any) -> TxMessage:
    _require(raw.get("v") == _VERSION, "unknown version")
    blockhash, member = raw.get("h"), raw.get("m")
    last_valid, slot, height = raw.get("lv"), raw.get("s"), raw.get("bh")
    wall, fee, fee_wall, epoch = raw.get("w"), raw.get("f"), raw.get("fw"), raw.get("e")
    _require(_is_pubkey(blockhash), "bad blockhash")  # a blockhash is 32 bytes in base58 too
    _require(all(_is_int(v) for v in (last_valid, slot, height, fee, epoch)), "bad number")
    # The chain's height when the blockhash was fetched is under its last valid height.
    _require(height <= last_valid, "bad block height")
    _require(_is_time(wall) and (fee_wall is None or _is_time(fee_wall)), "bad time")
    _require(isinstance(member, str) and len(member) <= 200, "bad member")
    return TxMessage(
        blockhash, last_valid, slot, height, float(wall), fee,
        None if fee_wall is None else float(fee_wall), epoch, member,
    )  # fmt: skip


def _is_time(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
