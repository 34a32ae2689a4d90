"""Snapshots of an AccountLedger on disk, so a restarted process serves its last-known accounts.

A snapshot file is one JSON header line, then one JSON body: the records (raw bytes, slot,
pubkey, kind, oracle source, confirmed wall time). The header names the format version and
the chain it belongs to (network, program and genesis hash), and the body's length and
SHA-256. It holds public chain data, never a key or an RPC URL.

A snapshot is keyed by the chain, not by the RPC endpoint: a restart on a backup provider
answers from it at once. Its accounts are dropped as soon as the new endpoint answers with
another genesis hash.

The file is untrusted input: a file that is corrupt, truncated, oversized, from another
network or program, or of another format version is ignored with one warning.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from driftpy.constants.config import DRIFT_PROGRAM_ID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from solders.pubkey import Pubkey

from driftshare._data.ledger import MARKET_KINDS, AccountLedger, AccountRecord, LedgerEntry
from driftshare._data.ledger_subscriber import LedgerReads
from driftshare._data.marketdata import ClientSource
from driftshare.config import Settings

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_PROGRAM_IDS",
    "SnapshotContents",
    "SnapshotError",
    "SnapshotIdentity",
    "SnapshotKeeper",
    "WarmSource",
    "encode_snapshot",
    "read_snapshot",
    "snapshot_file",
    "snapshot_keeper",
    "write_snapshot",
]

log = logging.getLogger(__name__)

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


def write_snapshot(
    file: Path,
    identity: SnapshotIdentity,
    entries: Iterable[LedgerEntry],
    *,
    wall_now: float | None = None,
    mono_now: float | None = None,
) -> int:
    """Write ``entries`` to ``file`` atomically (temporary file, fsync, rename); bytes written.

    A crash at any point leaves the previous file whole. The file is readable by its owner
    only (mode 0600).
    """
    wall_now = time.time() if wall_now is None else wall_now
    mono_now = time.monotonic() if mono_now is None else mono_now
    entries = list(entries)
    if len(entries) > MAX_RECORDS:
        raise SnapshotError(f"{len(entries)} accounts: more than a snapshot may hold")
    content = encode_snapshot(identity, entries, wall_now, mono_now)
    # mkstemp creates the file with mode 0600, before any byte is written.
    fd, temp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, file)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(file.parent)
    return len(content)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder itself is on disk.
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_leftovers(file: Path, *, older_than_s: float = 60.0) -> None:
    """Delete temporary files a crashed writer of ``file`` left behind.

    Only those older than ``older_than_s``: a younger one may be another process's write.
    """
    cutoff = time.time() - older_than_s
    for leftover in file.parent.glob(f".{file.name}.*.tmp"):
        with suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


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


class SnapshotKeeper:
    """Loads one shared client's snapshot into its ledger, then keeps the file up to date.

    :meth:`apply` puts the accounts :meth:`read` found in the file into the ledger with
    their true confirmation times, so their age is the age of the data, and remembers them
    as :attr:`restored` until live data for the same account arrives (the ledger's slot rule
    decides which value is kept). :meth:`on_chain` tells it the chain the RPC serves: the
    accounts of a snapshot from another chain leave the ledger then, and writing starts.
    :meth:`start` writes the ledger at most every ``interval_s`` while it changes;
    :meth:`stop` writes once more, after any write still under way.
    """

    def __init__(
        self,
        ledger: AccountLedger,
        path: Path,
        identity: SnapshotIdentity,
        *,
        interval_s: float = 10.0,
        mono_clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.identity = identity
        """Network and program; the genesis hash once :meth:`on_chain` (or the caller) set it."""
        self.file = snapshot_file(path, identity)
        self.interval_s = interval_s
        self.restored: set[str] = set()
        """Pubkeys whose ledger entry still holds the snapshot's value, unconfirmed since."""
        self.loaded = 0
        self.dropped = 0
        """Accounts loaded from a snapshot of another chain, dropped when the RPC answered."""
        self.writes = 0
        self.last_write_bytes = 0
        self._loaded_chain: str | None = None
        self._mono = mono_clock
        self._wall = wall_clock
        self._dirty = False
        self._failing = False
        ledger.add_listener(self._on_entry)
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[bool] | None = None

    def _on_entry(self, entry: LedgerEntry, changed: bool) -> None:
        self.restored.discard(entry.record.pubkey)
        self._dirty = True

    def read(self) -> SnapshotContents | None:
        """The file's chain and accounts; None, with one warning, when it cannot be used.
        Never raises.

        It touches nothing but the file: it may run in any thread.
        """
        remove_leftovers(self.file)
        try:
            return read_snapshot(self.file, self.identity, wall_now=self._wall())
        except FileNotFoundError:
            return None
        except (OSError, SnapshotError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            log.warning(
                "ignoring the snapshot %s (%s); starting without it", self.file.name, reason
            )
            return None

    def apply(self, contents: SnapshotContents | None) -> int:
        """Apply :meth:`read`'s accounts to the ledger; how many are served from them.

        None when the RPC already said it serves another chain.
        """
        if contents is None or not contents.accounts:
            return 0
        known = self.identity.genesis_hash
        if known is not None and known != contents.genesis_hash:
            self._another_chain(contents.genesis_hash, len(contents.accounts))
            return 0
        mono, wall = self._mono(), self._wall()
        restored: set[str] = set()
        for account in contents.accounts:
            # The same age in this process's monotonic clock: now minus the data's true age.
            confirmed_at = mono - max(0.0, wall - account.confirmed_at)
            pubkey = account.record.pubkey
            self.ledger.apply(account.record, confirmed_at=confirmed_at)
            self.ledger.confirm(pubkey, account.confirmed_slot, confirmed_at=confirmed_at)
            entry = self.ledger.get(pubkey)
            if entry is not None and entry.record == account.record:
                restored.add(pubkey)
        self._dirty = False
        self._loaded_chain = contents.genesis_hash
        self.restored = restored
        self.loaded = len(restored)
        log.info(
            "serving %d accounts from the snapshot %s until live data",
            len(restored),
            self.file.name,
        )
        return self.loaded

    @property
    def chain_known(self) -> bool:
        """Whether the RPC's genesis hash is known (then snapshots are written)."""
        return self.identity.genesis_hash is not None

    def on_chain(self, genesis_hash: str) -> int:
        """The RPC serves the chain of ``genesis_hash``: drop the accounts a snapshot of
        another chain put in the ledger, and write snapshots of this one from now on.

        How many accounts were dropped.
        """
        self.identity = dataclasses.replace(self.identity, genesis_hash=genesis_hash)
        loaded, self._loaded_chain = self._loaded_chain, None
        if loaded is None or loaded == genesis_hash or not self.restored:
            return 0
        dropped = sum(self.ledger.get(pubkey) is not None for pubkey in self.restored)
        for pubkey in self.restored:
            self.ledger.discard(pubkey)
        self.restored = set()
        self._another_chain(loaded, dropped)
        return dropped

    def _another_chain(self, theirs: str, accounts: int) -> None:
        self.dropped += accounts
        log.warning(
            "the snapshot %s is of another chain (genesis %s, the RPC's is %s): "
            "dropped its %d accounts",
            self.file.name,
            theirs,
            self.identity.genesis_hash,
            accounts,
        )

    def stats(self) -> dict[str, Any]:
        """The file's name and chain, accounts loaded from it, still served from it and
        dropped as another chain's, and writes."""
        return {
            "file": self.file.name,
            "genesis_hash": self.identity.genesis_hash,
            "loaded": self.loaded,
            "restored": len(self.restored),
            "dropped": self.dropped,
            "writes": self.writes,
            "last_write_bytes": self.last_write_bytes,
        }

    def start(self) -> None:
        """Write in the background from now on (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="driftshare-snapshot")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.write_if_changed()

    async def write_if_changed(self) -> bool:
        """Write the ledger if it changed since the last write; True if written.

        Writes run one at a time, each in a task of its own: a caller cancelled meanwhile
        leaves the write to finish, and the next write starts only after it.
        """
        while self._writing is not None:
            await asyncio.wait([self._writing])
        if not self._dirty or len(self.ledger) == 0 or not self.chain_known:
            return False
        self._dirty = False
        # Copies: the writing thread must not see an entry the event loop is updating.
        entries = [LedgerEntry(e.record, e.confirmed_slot, e.confirmed_at) for e in self.ledger]
        writing = self._writing = asyncio.create_task(
            self._write(entries), name="driftshare-snapshot-write"
        )
        return await asyncio.shield(writing)

    async def _write(self, entries: list[LedgerEntry]) -> bool:
        mono, wall = self._mono(), self._wall()
        try:
            # Off the event loop: the fsync may take milliseconds on a busy disk.
            self.last_write_bytes = await asyncio.to_thread(
                write_snapshot, self.file, self.identity, entries, wall_now=wall, mono_now=mono
            )
        except (OSError, SnapshotError) as exc:
            self._dirty = True
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            # Once per failing spell: a read-only disk must not log every interval.
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "cannot write the snapshot %s: %s", self.file, reason)
            self._failing = True
            return False
        finally:
            self._writing = None
        self._failing = False
        self.writes += 1
        return True

    async def stop(self) -> None:
        """Stop writing in the background and write once more (a clean shutdown), after any
        write still under way. The caller's cancellation reaches the caller."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # raises only if the caller itself is cancelled
            if not task.cancelled():
                task.result()  # a failure the background writer met is the caller's to see
        await self.write_if_changed()


def snapshot_keeper(
    ledger: AccountLedger, settings: Settings, network: str, url: str
) -> SnapshotKeeper | None:
    """The keeper of the shared client of ``network`` at ``url`` (one URL or a comma-separated
    list), or None when none is kept.

    None without ``DRIFT_SNAPSHOT_PATH``, for a network without Drift's program, and, when
    the path is a single file, for any shared client but the configured one (two clients
    must never take turns overwriting one file). In a folder the file is the network's:
    clients of one network at other endpoints read the same chain.
    """
    path = settings.snapshot_path
    if path is None:
        return None
    path = path.expanduser()
    identity = SnapshotIdentity(network, str(DRIFT_PROGRAM_ID))
    if not identity.allowed:
        return None
    try:
        if not path.is_dir() and (network, url) != (
            settings.network,
            settings.effective_rpc_url(),
        ):
            return None
        return SnapshotKeeper(ledger, path, identity, interval_s=settings.snapshot_interval_s)
    except OSError as exc:
        # An unreadable DRIFT_SNAPSHOT_PATH costs the warm start, never the client.
        log.warning("DRIFT_SNAPSHOT_PATH %s is unusable (%s): no snapshots", path, exc.strerror)
        return None


class WarmSource(ClientSource):
    """The ledger as a :class:`MarketSource` while the shared client is not ready.

    Its accounts are the snapshot's, replaced one by one by live data as it arrives; none
    is confirmed by a running subscription, so every market counts as unavailable: every
    value is stale, with the age of the accounts it is computed from. It is current (its
    cached values reusable while their accounts are unchanged) until :meth:`close`.
    """

    def __init__(self, ledger: AccountLedger) -> None:
        reads = LedgerReads(ledger)
        super().__init__(reads, ledger, current=self._serving)
        self._subscriber = reads.account_subscriber
        self._closed = False

    def _serving(self) -> bool:
        return not self._closed

    def unavailable(self, market_index: int) -> bool:
        # No value from here is current, however young its data: each one is served stale.
        return True

    def close(self) -> None:
        """Stop decoding the ledger's updates: the live client serves from now on."""
        self._closed = True
        self._subscriber.unfollow()
