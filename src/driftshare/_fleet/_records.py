"""The fleet's wire format: one JSON message per account update or confirmation, signed.

Everything read back from Redis is untrusted: :func:`decode` checks every field and, with a
secret, the HMAC-SHA256 signature before anything reaches a ledger.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from solders.pubkey import Pubkey

from driftshare._ledger import AccountKind, AccountRecord

__all__ = ["MAX_MESSAGE_BYTES", "Message", "RecordError", "Signer", "decode", "encode"]

MAX_MESSAGE_BYTES = 1 << 20
"""Larger than any Drift account (a few KiB) base64-encoded; anything bigger is refused."""

_VERSION = 1
_KINDS: tuple[str, ...] = get_args(AccountKind)
_MAX_SOURCE_LEN = 64

MessageType = Literal["r", "c"]
"""``r``: an account's data at a slot; ``c``: a confirmation that the data is current."""


class RecordError(ValueError):
    """A message that is malformed or fails verification; the message says which."""


@dataclass(frozen=True, slots=True)
class Message:
    """One published update: a record (``type == "r"``) or a confirmation (``"c"``)."""

    type: MessageType
    pubkey: str
    slot: int
    wall_time: float
    """``time.time()`` at the leader when the slot was learnt (for the account's age)."""
    epoch: int
    member: str
    record: AccountRecord | None = None
    """Set for ``type == "r"``."""


class Signer:
    """HMAC-SHA256 over a message's fields and the group; without a key, signs nothing."""

    def __init__(self, key: bytes | None, group: str) -> None:
        self._key = key
        self._group = group

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def sign(self, fields: list[Any]) -> str | None:
        if self._key is None:
            return None
        # The group is signed too, so a record cannot be replayed into another group.
        canonical = json.dumps([self._group, *fields], separators=(",", ":")).encode()
        return hmac.new(self._key, canonical, hashlib.sha256).hexdigest()

    def verify(self, fields: list[Any], signature: object) -> bool:
        expected = self.sign(fields)
        if expected is None:
            return True
        return isinstance(signature, str) and hmac.compare_digest(expected, signature)


def _fields(raw: dict[str, Any]) -> list[Any]:
    return [raw["v"], raw["t"], raw["p"], raw["k"], raw["s"], raw["o"], raw["d"], raw["w"],
            raw["e"], raw["m"]]  # fmt: skip


def encode(message: Message, signer: Signer) -> str:
    """``message`` as the JSON text stored in Redis and published on the channel."""
    record = message.record
    raw: dict[str, Any] = {
        "v": _VERSION,
        "t": message.type,
        "p": message.pubkey,
        "k": record.kind if record else None,
        "s": message.slot,
        "o": record.oracle_source if record else None,
        "d": base64.b64encode(record.data).decode() if record else None,
        "w": message.wall_time,
        "e": message.epoch,
        "m": message.member,
    }
    raw["h"] = signer.sign(_fields(raw))
    return json.dumps(raw, separators=(",", ":"))


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise RecordError(what)


def decode(text: str | bytes, signer: Signer) -> Message:
    """Parse and verify one message; :class:`RecordError` says what is wrong with it."""
    _require(len(text) <= MAX_MESSAGE_BYTES, "message too large")
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise RecordError("not JSON") from None
    _require(isinstance(raw, dict), "not a JSON object")
    try:
        fields = _fields(raw)
    except KeyError as exc:
        raise RecordError(f"missing field {exc.args[0]!r}") from None
    _require(raw["v"] == _VERSION, "unknown version")
    _require(signer.verify(fields, raw.get("h")), "bad signature")
    kind, slot, wall, epoch = raw["k"], raw["s"], raw["w"], raw["e"]
    _require(raw["t"] in ("r", "c"), "unknown message type")
    _require(isinstance(slot, int) and not isinstance(slot, bool) and slot >= 0, "bad slot")
    _require(isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0, "bad epoch")
    _require(isinstance(wall, int | float) and not isinstance(wall, bool), "bad time")
    _require(isinstance(raw["m"], str) and len(raw["m"]) <= 200, "bad member")
    pubkey = raw["p"]
    try:
        _require(isinstance(pubkey, str) and str(Pubkey.from_string(pubkey)) == pubkey, "")
    except ValueError:
        raise RecordError("bad pubkey") from None
    record = None
    if raw["t"] == "r":
        _require(kind in _KINDS, "bad account kind")
        source = raw["o"]
        _require(
            source is None
            or (isinstance(source, str) and source.isalnum() and len(source) <= _MAX_SOURCE_LEN),
            "bad oracle source",
        )
        _require((source is not None) == (kind == "oracle"), "oracle source mismatch")
        try:
            data = base64.b64decode(raw["d"], validate=True)
        except (TypeError, binascii.Error):
            raise RecordError("bad data") from None
        record = AccountRecord(pubkey, kind, slot, data, source)
    return Message(raw["t"], pubkey, slot, float(wall), epoch, raw["m"], record)
