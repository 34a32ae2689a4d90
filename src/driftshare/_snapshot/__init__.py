"""Snapshots of an AccountLedger on disk, so a restarted process serves its last-known accounts.

:mod:`.format` is the file (encoding and validation), :mod:`.storage` its atomic write,
:mod:`.keeper` a shared client's load, chain check and periodic write, and :mod:`.warm` the
stale source that serves the loaded accounts until the client is ready.
"""

from driftshare._snapshot.format import (
    FORMAT_VERSION,
    KNOWN_PROGRAM_IDS,
    SnapshotContents,
    SnapshotError,
    SnapshotIdentity,
    encode_snapshot,
    read_snapshot,
    snapshot_file,
)
from driftshare._snapshot.keeper import SnapshotKeeper, snapshot_keeper
from driftshare._snapshot.storage import write_snapshot
from driftshare._snapshot.warm import WarmSource

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
