"""The snapshot file's format: what it holds, its encoding, and its validation when read.

A snapshot file is one JSON header line, then one JSON body: the records (raw bytes, slot,
pubkey, kind, oracle source, confirmed wall time). The header names the format version and
the chain it belongs to (network, program and genesis hash), and the body's length and
SHA-256. It holds public chain data, never a key or an RPC URL.

The file is untrusted input: a file that is corrupt, truncated, oversized, from another
network or program, or of another format version is a :class:`SnapshotError` saying why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from driftpy.constants.config import DRIFT_PROGRAM_ID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from solders.pubkey import Pubkey

from driftshare._data.ledger import MARKET_KINDS, AccountRecord, LedgerEntry

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_PROGRAM_IDS",
    "MAX_RECORDS",
    "Restored",
    "SnapshotContents",
    "SnapshotError",
    "SnapshotIdentity",
    "encode_snapshot",
    "read_snapshot",
    "snapshot_file",
]

FORMAT = "driftshare-snapshot"
FORMAT_VERSION = 2
"""2: keyed by the chain's genesis hash (1 was keyed by a hash of the RPC URLs)."""
KNOWN_PROGRAM_IDS = frozenset({str(DRIFT_PROGRAM_ID)})
"""Drift's program, the same id on mainnet and devnet; snapshots are kept for it alone."""

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_RECORDS = 8192
MAX_ACCOUNT_BYTES = 16 * 1024
"""Far above Drift's largest market, oracle or State account (under 2 KiB today)."""
_MAX_HEADER_BYTES = 4096
_CLOCK_SKEW_S = 300.0
"""A file written this far in our future is refused: its ages would be lies."""


class SnapshotError(ValueError):
    """A snapshot that cannot be used; the message says why, never with a secret."""


@dataclass(frozen=True, slots=True)
class SnapshotIdentity:
    """Whose snapshot a file is: the chain (network, program, genesis hash) its accounts are of.

    Only a file of the same network and program is loaded; its genesis hash is checked once
    the RPC answers (None until then: nothing is written before).
    """

    network: str
    program_id: str
    genesis_hash: str | None = None

    @property
    def allowed(self) -> bool:
        """Whether snapshots are kept at all: Drift's own program, on mainnet or devnet."""
        return self.network in ("mainnet", "devnet") and self.program_id in KNOWN_PROGRAM_IDS


def snapshot_file(path: Path, identity: SnapshotIdentity) -> Path:
    """The file for ``identity``: ``path`` itself, or a file named after it in folder ``path``."""
    if path.is_dir():
        return path / f"driftshare-{identity.network}.snapshot"
    return path


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["driftshare-snapshot"]
    version: int
    network: str = Field(max_length=16)
    program_id: str = Field(max_length=64)
    genesis_hash: str = Field(min_length=1, max_length=64)
    written_at: float
    records: int = Field(ge=0, le=MAX_RECORDS)
    body_bytes: int = Field(ge=0, le=MAX_FILE_BYTES)
    body_sha256: str = Field(min_length=64, max_length=64)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pubkey: str = Field(min_length=32, max_length=44)
    kind: Literal["perp", "spot", "oracle", "state"]
    slot: int = Field(ge=0, lt=2**63)
    confirmed_slot: int = Field(ge=0, lt=2**63)
    confirmed_at: float
    oracle_source: Annotated[str, Field(max_length=32)] | None = None
    data: bytes

    @field_validator("pubkey")
    @classmethod
    def _base58_key(cls, value: str) -> str:
        Pubkey.from_string(value)  # ValueError for anything but a 32-byte base58 key
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _base64(cls, value: object) -> bytes:
        # Length is bounded before decoding, so a huge string costs nothing.
        if not isinstance(value, str) or len(value) > (MAX_ACCOUNT_BYTES * 4) // 3 + 4:
            raise ValueError(f"must be base64 of at most {MAX_ACCOUNT_BYTES} bytes")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {exc}") from None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    records: list[_Record] = Field(max_length=MAX_RECORDS)


@dataclass(frozen=True, slots=True)
class SnapshotContents:
    """What a snapshot file holds: the chain its accounts are of, and the accounts."""

    genesis_hash: str
    accounts: list[Restored]


@dataclass(frozen=True, slots=True)
class Restored:
    """One account read from a snapshot."""

    record: AccountRecord
    confirmed_slot: int
    confirmed_at: float
    """Wall time (``time.time()``) when the writing process last knew it current."""


def encode_snapshot(
    identity: SnapshotIdentity,
    entries: Iterable[LedgerEntry],
    wall_now: float,
    mono_now: float,
) -> bytes:
    """The file's bytes: the header line, then the body (SnapshotError for an unknown chain)."""
    if identity.genesis_hash is None:
        raise SnapshotError("the chain's genesis hash is not known yet")
    records = [
        {
            "pubkey": e.record.pubkey,
            "kind": e.record.kind,
            "slot": e.record.slot,
            "confirmed_slot": e.confirmed_slot,
            # The ledger keeps monotonic times; the file needs wall times another process can use.
            "confirmed_at": wall_now - (mono_now - e.confirmed_at),
            "oracle_source": e.record.oracle_source,
            "data": base64.b64encode(e.record.data).decode(),
        }
        for e in entries
        # A signer's own accounts are subscribed again by its engines, never served warm.
        if e.record.kind in MARKET_KINDS
    ]
    body = json.dumps({"records": records}, separators=(",", ":")).encode()
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "network": identity.network,
        "program_id": identity.program_id,
        "genesis_hash": identity.genesis_hash,
        "written_at": wall_now,
        "records": len(records),
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def read_snapshot(
    file: Path, identity: SnapshotIdentity, *, wall_now: float | None = None
) -> SnapshotContents:
    """The chain and accounts in ``file``, of ``identity``'s network and program;
    :class:`SnapshotError` saying why it cannot be used.

    Its genesis hash is returned, not compared: the RPC may not answer yet. FileNotFoundError
    when there is no file at all.
    """
    wall_now = time.time() if wall_now is None else wall_now
    with file.open("rb") as handle:
        content = handle.read(MAX_FILE_BYTES + 1)
    if len(content) > MAX_FILE_BYTES:
        raise SnapshotError(f"larger than {MAX_FILE_BYTES} bytes")
    line_end = content.find(b"\n", 0, _MAX_HEADER_BYTES)
    if line_end < 0:
        raise SnapshotError("no header line: not a driftshare snapshot, or truncated")
    header = _parse(_Header, content[:line_end], "header")
    if header.version != FORMAT_VERSION:
        raise SnapshotError(
            f"format version {header.version}, this driftshare reads {FORMAT_VERSION}"
        )
    if header.network != identity.network:
        raise SnapshotError(f"written for {header.network}, not {identity.network}")
    if header.program_id != identity.program_id:
        raise SnapshotError(f"written for program {header.program_id}")
    if not math.isfinite(header.written_at) or header.written_at > wall_now + _CLOCK_SKEW_S:
        raise SnapshotError("written in the future: the clocks disagree")
    body = content[line_end + 1 :]
    if len(body) != header.body_bytes:
        raise SnapshotError(f"truncated: {len(body)} of {header.body_bytes} body bytes")
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise SnapshotError("corrupt: the body does not match its checksum")
    records = _parse(_Body, body, "body").records
    if len(records) != header.records:
        raise SnapshotError(f"holds {len(records)} records, its header says {header.records}")
    restored = []
    for r in records:
        if not math.isfinite(r.confirmed_at) or r.confirmed_at > header.written_at:
            raise SnapshotError(f"account {r.pubkey} confirmed after the file was written")
        record = AccountRecord(r.pubkey, r.kind, r.slot, r.data, r.oracle_source)
        restored.append(Restored(record, max(r.slot, r.confirmed_slot), r.confirmed_at))
    return SnapshotContents(header.genesis_hash, restored)


def _parse(model: type[Any], raw: bytes, part: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or part
        raise SnapshotError(f"invalid {part} at {where}: {first['msg']}") from None
