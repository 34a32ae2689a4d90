"""Drift account (de)serialisation with the anchorpy coder driftpy itself uses."""

from __future__ import annotations

import copyreg
from functools import cache
from typing import Any

from anchorpy.program.common import NamedInstruction as AccountToSerialize
from anchorpy_core.idl import IdlTypeDefinitionTyEnum
from driftpy.accounts.oracle import DRIFT_CODER, DRIFT_IDL
from driftpy.constants.config import DRIFT_PROGRAM_ID
from solders.pubkey import Pubkey

__all__ = [
    "DRIFT_PROGRAM_ID",
    "account_name",
    "blank",
    "decode",
    "encode",
    "rent_exempt_lamports",
    "variant",
    "variant_name",
]

# anchorpy encodes through dataclasses.asdict, which deep-copies every leaf; solders' Pubkey
# cannot be deep-copied until it is made picklable.
copyreg.pickle(Pubkey, lambda p: (Pubkey.from_bytes, (bytes(p),)))

_DISCRIMINATOR_TO_NAME: dict[bytes, str] = DRIFT_CODER.accounts.discriminator_to_acc_name
_ENUM_VARIANTS: dict[str, list[str]] = {
    t.name: [v.name for v in t.ty.variants]
    for t in DRIFT_IDL.types
    if isinstance(t.ty, IdlTypeDefinitionTyEnum) and all(v.fields is None for v in t.ty.variants)
}
_BLANK_BYTES = 16_384
_RENT_EXEMPT_OVERHEAD = 128
_LAMPORTS_PER_BYTE_YEAR = 3480
_EXEMPTION_YEARS = 2


def encode(name: str, obj: Any) -> bytes:
    """Serialise a Drift account object, discriminator first, as the program lays it out."""
    return bytes(DRIFT_CODER.accounts.build(AccountToSerialize(data=obj, name=name)))


def decode(data: bytes) -> Any:
    """Deserialise Drift account bytes into the object driftpy's own coder returns."""
    return DRIFT_CODER.accounts.decode(data)


def account_name(data: bytes) -> str | None:
    """The Drift account type the discriminator names, or None for a foreign account."""
    return _DISCRIMINATOR_TO_NAME.get(bytes(data[:8]))


@cache
def _blank_bytes(name: str) -> bytes:
    disc: bytes = DRIFT_CODER.accounts.acc_name_to_discriminator[name]
    return disc + bytes(_BLANK_BYTES)


@cache
def blank(name: str) -> Any:
    """An all-zero ``name`` account object: every field set, enums at their first variant.

    Shared between callers: derive accounts with ``dataclasses.replace``, never mutate it.
    """
    return decode(_blank_bytes(name))


@cache
def variant(enum: str, name: str) -> Any:
    """The coder's value of a field-less IDL enum variant: ``variant("MarketStatus", "Active")``.

    Raises ValueError for an unknown enum or variant.
    """
    names = _ENUM_VARIANTS.get(enum)
    if names is None or name not in names:
        raise ValueError(f"unknown Drift enum variant {enum}.{name}")
    return DRIFT_CODER.types.decode(enum, bytes([names.index(name)]))


def variant_name(value: object) -> str:
    """The variant name of a driftpy or anchorpy enum value, e.g. ``PythLazer``."""
    return type(value).__name__


def rent_exempt_lamports(size: int) -> int:
    """The rent-exempt minimum balance Solana requires for an account of ``size`` bytes."""
    return (size + _RENT_EXEMPT_OVERHEAD) * _LAMPORTS_PER_BYTE_YEAR * _EXEMPTION_YEARS
