"""Accounts saved with ``solana account <ADDRESS> --output json``, loaded for replay, and what
the world adopts from them: Drift markets and State, and the prices their oracles decode to."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from driftpy.accounts.oracle import decode_oracle
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID, variant
from driftshare.sim.store import Account

__all__ = ["decode_drift_account", "load_account_files", "replayed_oracle_prices"]

log = logging.getLogger(__name__)

_ADOPTED = ("PerpMarket", "SpotMarket", "State")

_RENT_EXEMPT_EPOCH = 2**64 - 1


def load_account_files(paths: list[Path]) -> list[tuple[Pubkey, Account]]:
    """Read account files, or every ``*.json`` file of a folder, as frozen accounts.

    The format is what ``solana account <ADDRESS> --output json`` prints (and what
    ``solana-test-validator --account`` loads)::

        {"pubkey": "...", "account": {"lamports": 1, "data": ["<base64>", "base64"],
         "owner": "...", "executable": false, "rentEpoch": 0, "space": 1216}}

    Raises ValueError naming the file for a missing path, an empty folder or a malformed file.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if p.is_file())
            if not found:
                raise ValueError(f"{path}: folder has no .json account files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return [_load(file) for file in files]


def decode_drift_account(pubkey: Pubkey, account: Account) -> tuple[str, Any] | None:
    """The Drift perp market, spot market or State in a replayed account, decoded.

    None for any other account, and (with a warning) for one of those that does not decode:
    the world then serves its bytes as they are and simulates nothing in its place.
    """
    if account.owner != DRIFT_PROGRAM_ID:
        return None
    name = _codec.account_name(account.data)
    if name not in _ADOPTED:
        return None
    try:
        return name, _codec.decode(account.data)
    except Exception:  # construct raises many unrelated error types for bad bytes
        log.warning("replayed %s %s does not decode; serving it as is", name, pubkey)
        return None


def replayed_oracle_prices(pubkey: Pubkey, data: bytes, sources: Iterable[str]) -> dict[str, int]:
    """What driftpy decodes from the replayed oracle account ``data``, by each oracle source
    reading it; a source it does not decode as is left out, with a warning."""
    prices: dict[str, int] = {}
    for source in sorted(set(sources)):
        try:
            prices[source] = int(decode_oracle(data, variant("OracleSource", source)).price)
        except Exception:  # driftpy's decoders raise struct, construct and value errors alike
            log.warning("replayed oracle %s does not decode as %s", pubkey, source)
    return prices


def _load(file: Path) -> tuple[Pubkey, Account]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        return _parse(doc)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, _FormatError) as exc:
        raise ValueError(f"{file}: not a `solana account --output json` file: {exc}") from None


class _FormatError(Exception):
    pass


def _parse(doc: Any) -> tuple[Pubkey, Account]:
    if not isinstance(doc, dict) or not isinstance(doc.get("account"), dict):
        raise _FormatError("expected an object with 'pubkey' and 'account'")
    acc = doc["account"]
    pubkey = _pubkey(doc.get("pubkey"), "pubkey")
    owner = _pubkey(acc.get("owner"), "account.owner")
    data = _data(acc.get("data"))
    lamports = _uint(acc.get("lamports"), "account.lamports")
    rent_epoch = _uint(acc.get("rentEpoch", _RENT_EXEMPT_EPOCH), "account.rentEpoch")
    executable = acc.get("executable", False)
    if not isinstance(executable, bool):
        raise _FormatError("account.executable must be true or false")
    space = acc.get("space")
    if space is not None and _uint(space, "account.space") != len(data):
        raise _FormatError(f"account.space is {space} but data has {len(data)} bytes")
    account = Account(
        data=data,
        owner=owner,
        lamports=lamports,
        executable=executable,
        rent_epoch=rent_epoch,
        frozen=True,
    )
    return pubkey, account


def _pubkey(value: object, field: str) -> Pubkey:
    if not isinstance(value, str):
        raise _FormatError(f"{field} must be a base58 string")
    try:
        return Pubkey.from_string(value)
    except ValueError:
        raise _FormatError(f"{field} is not a valid public key: {value!r}") from None


def _uint(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _FormatError(f"{field} must be a non-negative integer")
    return value


def _data(value: object) -> bytes:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
    ):
        raise _FormatError('account.data must be ["<base64>", "base64"]')
    payload, encoding = value
    if encoding != "base64":
        raise _FormatError(f"account.data encoding {encoding!r} is not supported, use base64")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise _FormatError(f"account.data is not valid base64: {exc}") from None
