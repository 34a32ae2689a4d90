"""The errors a Drift instruction fails with, as the real program reports them.

Drift's own codes come from driftpy's IDL and Anchor's framework codes from anchorpy, so a client
maps ``{"Custom": code}`` back to the same name it would on mainnet.
"""

from __future__ import annotations

from anchorpy.error import _LangErrorCode as AnchorCode  # anchorpy's only table of them
from driftpy.accounts.oracle import DRIFT_IDL

from driftshare.sim.programs import InstructionFailed

__all__ = [
    "ACCOUNT_IN_USE",
    "UNSUPPORTED",
    "anchor_error",
    "drift_error",
    "unsupported",
]

_DRIFT_CODES: dict[str, int] = {error.name: error.code for error in DRIFT_IDL.errors}

UNSUPPORTED = "InvalidInstructionData"
"""The builtin error of what the simulator does not implement: it names no Drift error, so no
client mistakes it for a rule of the real program."""

ACCOUNT_IN_USE: dict[str, int] = {"Custom": 0}
"""The system program's ``AccountAlreadyInUse``: what Anchor's ``init`` of an existing account
fails with."""


def drift_error(name: str, message: str = "") -> InstructionFailed:
    """Drift's error ``name`` (e.g. ``InsufficientCollateral``), as ``{"Custom": code}``."""
    return InstructionFailed(
        {"Custom": _DRIFT_CODES[name]}, f"Error Code: {name}. {message}".strip()
    )


def anchor_error(name: str, message: str = "") -> InstructionFailed:
    """Anchor's framework error ``name`` (e.g. ``AccountNotSigner``), as ``{"Custom": code}``."""
    code = int(AnchorCode[name])
    return InstructionFailed({"Custom": code}, f"AnchorError: {name}. {message}".strip())


def unsupported(what: str) -> InstructionFailed:
    """The failure of an instruction or variant the simulator does not implement."""
    return InstructionFailed(UNSUPPORTED, f"unsupported instruction: {what} (driftshare sim)")
