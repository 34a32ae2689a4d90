"""Oracle accounts in the byte formats driftpy's ``decode_oracle`` reads, one per oracle source."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from driftpy.accounts.oracle import convert_pyth_price
from driftpy.constants.numeric_constants import PRICE_PRECISION
from pythclient.utils import get_key  # type: ignore[import-untyped]
from solders.pubkey import Pubkey

from driftshare.sim._codec import DRIFT_PROGRAM_ID, blank, encode

__all__ = [
    "PYTH_PROGRAM_ID",
    "PYTH_RECEIVER_PROGRAM_ID",
    "SUPPORTED_SOURCES",
    "EncodedOracle",
    "OracleQuote",
    "encode_oracle",
    "oracle_owner",
    "price_multiple",
    "read_price",
]

PYTH_PROGRAM_ID = Pubkey.from_string(get_key("mainnet", "program"))
"""Owner of legacy Pyth v2 price accounts (``Pyth``, ``Pyth1K``, ``Pyth1M``, ``PythStableCoin``)."""
PYTH_RECEIVER_PROGRAM_ID = Pubkey.from_string("rec5EKMGg6MxZYaMdyBfgwp4d5rB9T1VQH5pJv5LtFJ")
"""Owner of Pyth pull ``PriceUpdateV2`` accounts (``PythPull`` and its 1K/1M/StableCoin forms)."""

_LAZER = frozenset({"PythLazer", "PythLazer1K", "PythLazer1M", "PythLazerStableCoin"})
_PULL = frozenset({"PythPull", "Pyth1KPull", "Pyth1MPull", "PythStableCoinPull"})
_LEGACY = frozenset({"Pyth", "Pyth1K", "Pyth1M", "PythStableCoin"})
SUPPORTED_SOURCES = _LAZER | _PULL | _LEGACY | {"Prelaunch"}
"""Oracle source names this module can encode."""

_LEGACY_SIZE = 3312
_LEGACY_MAGIC = 0xA1B2C3D4
_LEGACY_VERSION = 2
_LEGACY_PRICE_ACCOUNT = 3
_LEGACY_PRICE_TYPE = 1
_LEGACY_TRADING = 1
_PULL_SIZE = 134
_PULL_FULL_VERIFICATION = 1
_STABLE_SNAP_MAX = 500
"""driftpy reads a stablecoin within min(confidence, 5 bps) of $1 as exactly $1."""
_ONE_DOLLAR: int = PRICE_PRECISION

_Decoder = Callable[[int, int, int], int]


@dataclass(frozen=True, slots=True)
class OracleQuote:
    """One oracle update, in driftpy's units."""

    price: int
    """PRICE_PRECISION (1e6), per 1K/1M tokens for the ``1K``/``1M`` sources."""
    confidence: int
    """PRICE_PRECISION, same unit as ``price``."""
    slot: int
    timestamp: float
    """Unix seconds."""


@dataclass(frozen=True, slots=True)
class EncodedOracle:
    """An oracle account's bytes and owner, and the price driftpy decodes from them."""

    source: str
    """The oracle source the account was encoded for."""
    data: bytes
    owner: Pubkey
    raw: int
    raw_confidence: int
    exponent: int
    price: int
    """What driftpy decodes when reading the account as ``source``."""


def price_multiple(source: str) -> int:
    """How many tokens one unit of a source's price is for: 1, 1_000 or 1_000_000."""
    if "1M" in source:
        return 1_000_000
    if "1K" in source:
        return 1_000
    return 1


def oracle_owner(source: str) -> Pubkey:
    """The program that owns oracle accounts of ``source`` on mainnet.

    Raises ValueError for a source this module cannot encode.
    """
    if source in _LAZER or source == "Prelaunch":
        return DRIFT_PROGRAM_ID
    if source in _PULL:
        return PYTH_RECEIVER_PROGRAM_ID
    if source in _LEGACY:
        return PYTH_PROGRAM_ID
    raise ValueError(f"unsupported oracle source {source!r}")


def encode_oracle(
    source: str, quote: OracleQuote, *, market_index: int = 0, feed_id: bytes = bytes(32)
) -> EncodedOracle:
    """Encode ``quote`` as an oracle account of ``source``.

    The raw integer is chosen so that driftpy's decoder yields ``quote.price`` exactly when its
    float arithmetic allows; ``EncodedOracle.price`` is what it yields in any case.
    Raises ValueError for a source this module cannot encode or a non-positive price.
    """
    owner = oracle_owner(source)
    if quote.price <= 0:
        raise ValueError(f"oracle price must be > 0, got {quote.price}")
    if source == "Prelaunch":
        data = _prelaunch(quote, market_index)
        return EncodedOracle(source, data, owner, quote.price, quote.confidence, -6, quote.price)
    multiple = price_multiple(source)
    decoded = _lazer_decoded if source in _LAZER else _pyth_decoded
    raw, exponent, scale = _raw_for(quote.price, len(str(multiple)) - 1, decoded)
    raw_conf = quote.confidence * scale
    if source in _LAZER:
        data = _lazer(quote, raw, raw_conf, exponent)
    elif source in _PULL:
        data = _pull(quote, raw, raw_conf, exponent, feed_id)
    else:
        data = _legacy(quote, raw, raw_conf, exponent)
    encoded = EncodedOracle(source, data, owner, raw, raw_conf, exponent, 0)
    return dataclasses.replace(encoded, price=read_price(source, encoded))


def _family(source: str) -> frozenset[str]:
    for family in (_LAZER, _PULL, _LEGACY):
        if source in family:
            return family
    return frozenset({source})


def read_price(source: str, oracle: EncodedOracle) -> int:
    """The price driftpy decodes from ``oracle`` when a market reads it as ``source``.

    Markets may share one oracle account under different sources (``PUMP-PERP`` reads it as
    ``PythLazer``, ``1KPUMP-PERP`` as ``PythLazer1K``). Raises ValueError when ``source`` cannot
    read an account of the format ``oracle`` was encoded in.
    """
    if source not in _family(oracle.source):
        raise ValueError(f"a {source} market cannot read a {oracle.source} oracle account")
    if source == "Prelaunch":
        return oracle.raw
    multiple = price_multiple(source)
    decoded = _lazer_decoded if source in _LAZER else _pyth_decoded
    price = decoded(oracle.raw, oracle.exponent, multiple)
    if source == "PythLazerStableCoin":
        price = _stable_snapped(price, decoded(oracle.raw_confidence, oracle.exponent, multiple))
    return price


def _lazer_decoded(raw: int, exponent: int, multiple: int) -> int:
    # Mirrors driftpy's decode_pyth_lazer_price_info, float rounding included.
    return int(convert_pyth_price(raw / 10 ** abs(exponent), multiple))


def _pyth_decoded(raw: int, exponent: int, multiple: int) -> int:
    # Mirrors driftpy's decode_pyth_price_info / decode_pyth_pull_price_info.
    value = raw / 10 ** (abs(exponent) - 6)
    if multiple != 1:
        value *= float(multiple)
    return int(value)


def _stable_snapped(price: int, confidence: int) -> int:
    if abs(price - _ONE_DOLLAR) < min(confidence, _STABLE_SNAP_MAX):
        return _ONE_DOLLAR
    return price


def _raw_for(price: int, digits: int, decoded: _Decoder) -> tuple[int, int, int]:
    """A raw integer, exponent and raw-per-price scale that decode to exactly ``price``.

    driftpy decodes through floats, so some integers are unreachable at one exponent; a couple of
    extra decimal digits always find one.
    """
    for extra in (0, 2, 1, 3):
        exponent = -(6 + digits + extra)
        scale = 10**extra
        base = price * scale
        for raw in (base, base + 1, base - 1, base + 2, base - 2):
            if raw > 0 and decoded(raw, exponent, 10**digits) == price:
                return raw, exponent, scale
    return price, -(6 + digits), 1


@cache
def _template(name: str) -> Any:
    return blank(name)


def _lazer(quote: OracleQuote, raw: int, raw_conf: int, exponent: int) -> bytes:
    obj = dataclasses.replace(
        _template("PythLazerOracle"),
        price=raw,
        publish_time=int(quote.timestamp * 1_000_000),
        posted_slot=quote.slot,
        exponent=exponent,
        conf=raw_conf,
    )
    return encode("PythLazerOracle", obj)


def _prelaunch(quote: OracleQuote, market_index: int) -> bytes:
    obj = dataclasses.replace(
        _template("PrelaunchOracle"),
        price=quote.price,
        max_price=max(quote.price * 10, PRICE_PRECISION),
        confidence=quote.confidence,
        last_update_slot=quote.slot,
        amm_last_update_slot=quote.slot,
        perp_market_index=market_index,
    )
    return encode("PrelaunchOracle", obj)


_PULL_DISCRIMINATOR = hashlib.sha256(b"account:PriceUpdateV2").digest()[:8]
# Hand-packed: no installed library encodes Pyth's PriceUpdateV2 or legacy price accounts.
_PULL_LAYOUT = struct.Struct("<8s32sB32sqQiqqqQQ")
_LEGACY_HEADER = struct.Struct("<IIIIIiIIQQ6q")
_LEGACY_AGGREGATE = struct.Struct("<qQIIQ")
_LEGACY_AGGREGATE_OFFSET = 208


def _pull(quote: OracleQuote, raw: int, raw_conf: int, exponent: int, feed_id: bytes) -> bytes:
    publish = int(quote.timestamp)
    data = _PULL_LAYOUT.pack(
        _PULL_DISCRIMINATOR,
        bytes(32),
        _PULL_FULL_VERIFICATION,
        feed_id,
        raw,
        raw_conf,
        exponent,
        publish,
        publish - 1,
        raw,
        raw_conf,
        quote.slot,
    )
    return data.ljust(_PULL_SIZE, b"\0")


def _legacy(quote: OracleQuote, raw: int, raw_conf: int, exponent: int) -> bytes:
    # pythclient's EmaType: EMA_PRICE_VALUE is derivation 1, EMA_CONFIDENCE_VALUE derivation 4.
    derivations = (raw, 0, 0, raw_conf, 0, 0)
    buf = bytearray(_LEGACY_SIZE)
    _LEGACY_HEADER.pack_into(
        buf,
        0,
        _LEGACY_MAGIC,
        _LEGACY_VERSION,
        _LEGACY_PRICE_ACCOUNT,
        _LEGACY_SIZE,
        _LEGACY_PRICE_TYPE,
        exponent,
        1,
        1,
        quote.slot,
        quote.slot,
        *derivations,
    )
    _LEGACY_AGGREGATE.pack_into(
        buf, _LEGACY_AGGREGATE_OFFSET, raw, raw_conf, _LEGACY_TRADING, 0, quote.slot
    )
    return bytes(buf)
