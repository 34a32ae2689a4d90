"""The real mainnet PerpMarket accounts in ``tests/fixtures/mainnet`` (see its README).

The file list comes from ``SHA256SUMS``, never from globbing the folder: a missing or altered
fixture fails the tests that use it instead of shrinking their parametrization.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

DIR = Path(__file__).resolve().parent / "fixtures" / "mainnet"
SHA256 = dict(
    reversed(line.split()) for line in (DIR / "SHA256SUMS").read_text().splitlines() if line
)
"""File name -> its SHA-256 as copied."""
FILES = tuple(sorted(SHA256))


def path(name: str) -> Path:
    """The fixture ``name``; :class:`FileNotFoundError` if it is not in the repository."""
    found = DIR / name
    if not found.is_file():
        raise FileNotFoundError(f"mainnet fixture {name} is missing from {DIR}")
    return found


def document(name: str) -> dict[str, Any]:
    """The fixture's JSON (``solana account --output json``)."""
    doc: dict[str, Any] = json.loads(path(name).read_text())
    return doc


def raw(name: str) -> bytes:
    """The account bytes of fixture ``name``."""
    return base64.b64decode(document(name)["account"]["data"][0])


def digest(name: str) -> str:
    return hashlib.sha256(path(name).read_bytes()).hexdigest()
