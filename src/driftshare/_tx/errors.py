"""Naming a transaction error: Drift's error name from its IDL, or the runtime's own name."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import driftpy

__all__ = ["error_code", "error_name"]


@cache
def _drift_errors() -> dict[int, str]:
    idl_path = Path(next(iter(driftpy.__path__))) / "idl" / "drift.json"
    errors = json.loads(idl_path.read_text())["errors"]
    return {int(e["code"]): str(e["name"]) for e in errors}


def error_code(err: Any) -> int | None:
    """The custom program error code in a transaction's ``err``, if it holds one."""
    if isinstance(err, dict):
        failed = err.get("InstructionError")
        if isinstance(failed, list) and len(failed) == 2 and isinstance(failed[1], dict):
            custom = failed[1].get("Custom")
            if isinstance(custom, int) and not isinstance(custom, bool):
                return custom
    return None


def error_name(err: Any) -> str:
    """A short name for a transaction's ``err`` (the JSON ``TransactionError`` of a status or
    of a preflight failure): Drift's IDL name for its custom errors (``"OrderAmountTooSmall"``),
    else the runtime's (``"InsufficientFundsForFee"``, ``"InvalidAccountData"``,
    ``"Custom(3012)"``)."""
    code = error_code(err)
    if code is not None:
        return _drift_errors().get(code) or f"Custom({code})"
    if isinstance(err, str):
        return err
    if isinstance(err, dict) and len(err) == 1:
        (kind, detail), *_ = err.items()
        if kind == "InstructionError" and isinstance(detail, list) and len(detail) == 2:
            inner = detail[1]
            return inner if isinstance(inner, str) else str(next(iter(inner), kind))
        return str(kind)
    return "UnknownError"
