"""The keeper of one shared client's snapshot: loads it into the ledger, checks its chain, and
keeps the file up to date.

A snapshot is keyed by the chain, not by the RPC endpoint: a restart on a backup provider
answers from it at once. Its accounts are dropped as soon as the new endpoint answers with
another genesis hash. A file that cannot be used is ignored with one warning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftpy.constants.config import DRIFT_PROGRAM_ID

from driftshare._data.ledger import AccountLedger, LedgerEntry
from driftshare._snapshot.format import (
    SnapshotContents,
    SnapshotError,
    SnapshotIdentity,
    read_snapshot,
    snapshot_file,
)
from driftshare._snapshot.storage import remove_leftovers, write_snapshot
from driftshare.config import Settings

__all__ = ["SnapshotKeeper", "snapshot_keeper"]

log = logging.getLogger(__name__)


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
