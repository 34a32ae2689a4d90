"""Writing a snapshot file to disk atomically, and clearing what a crashed writer left."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from driftshare._data.ledger import LedgerEntry
from driftshare._snapshot.format import (
    MAX_RECORDS,
    SnapshotError,
    SnapshotIdentity,
    encode_snapshot,
)

__all__ = ["remove_leftovers", "write_snapshot"]


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
