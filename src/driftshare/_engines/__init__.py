"""Read-only sample engines sharing one DriftClient: funding, LST, scalp and arb."""

from __future__ import annotations

from collections.abc import Iterable

from driftshare._engines.arb import ArbEngine
from driftshare._engines.base import Engine, EngineDataError, Signal
from driftshare._engines.funding import FundingEngine
from driftshare._engines.lst import LstEngine
from driftshare._engines.scalp import ScalpEngine

__all__ = [
    "ENGINES",
    "ArbEngine",
    "Engine",
    "EngineDataError",
    "FundingEngine",
    "LstEngine",
    "ScalpEngine",
    "Signal",
    "make_engines",
]

ENGINES: dict[str, type[Engine]] = {
    "funding": FundingEngine,
    "lst": LstEngine,
    "scalp": ScalpEngine,
    "arb": ArbEngine,
}


def make_engines(
    names: Iterable[str],
    *,
    network: str = "mainnet",
    use_singleton: bool = True,
    interval_s: float | None = None,
) -> list[Engine]:
    """One engine per name in ``names`` (keys of :data:`ENGINES`); ValueError for others."""
    engines: list[Engine] = []
    for name in names:
        try:
            cls = ENGINES[name]
        except KeyError:
            known = ", ".join(ENGINES)
            raise ValueError(f"unknown engine {name!r}; known: {known}") from None
        engines.append(cls(network=network, use_singleton=use_singleton, interval_s=interval_s))
    return engines
