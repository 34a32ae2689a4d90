"""The fleet's wire format: one signed message per account update or confirmation.

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
from dataclasses import dataclass
from typing import Any, Literal, get_args

from solders.pubkey import Pubkey

from driftshare._data.ledger import AccountKind, AccountRecord

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Chain",
    "Message",
    "RecordError",
    "Signer",
    "decode",
    "digest",
    "encode",
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
"""``r``: an account's data at a slot; ``c``: a confirmation that this data is current."""


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


def digest(data: bytes) -> str:
    """A short SHA-256 of account data: what a confirmation names."""
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


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


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise RecordError(what)


def decode(text: str | bytes, signer: Signer) -> Message:
    """Check and parse one message; :class:`RecordError` says what is wrong with it."""
    raw_bytes = text.encode(errors="surrogateescape") if isinstance(text, str) else text
    _require(len(raw_bytes) <= MAX_MESSAGE_BYTES, "message too large")
    signature, dot, payload = raw_bytes.partition(b".")
    _require(bool(dot) and len(signature) <= 64, "not a fleet message")
    _require(signer.verify(payload, signature), "bad signature")
    _require(payload.count(b"{") + payload.count(b"[") <= _MAX_BRACKETS, "nested JSON")
    try:
        return _parse(json.loads(payload))
    except RecordError:
        raise
    except Exception:  # any other failure on untrusted input is one malformed message
        raise RecordError("malformed message") from None


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
    _require(type(wall) in (int, float) and math.isfinite(wall), "bad time")
    _require(isinstance(member, str) and len(member) <= 200, "bad member")
    pubkey = raw.get("p")
    try:
        _require(isinstance(pubkey, str) and str(Pubkey.from_string(pubkey)) == pubkey, "")
    except ValueError:
        raise RecordError("bad pubkey") from None
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
