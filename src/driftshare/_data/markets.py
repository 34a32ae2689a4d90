"""Perp market symbols and indexes.

A :class:`MarketResolver` knows every market of one network from driftpy's bundled market
configs and, once :meth:`MarketResolver.update` has seen them, the markets' on-chain names. A
market is found by index (``0``, ``"0"``), full symbol (``"SOL-PERP"``) or base asset
(``"sol"``), ignoring case and spaces. On-chain names win over the configs: they are what the
program calls the market now, so a config naming that index differently is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from driftpy.constants.perp_markets import (
    PerpMarketConfig,
    devnet_perp_market_configs,
    mainnet_perp_market_configs,
)
from driftpy.types import PerpMarketAccount

from driftshare.config import Network
from driftshare.models import market_name

__all__ = ["MarketResolver", "UnknownMarketError", "normalize_symbol"]

logger = logging.getLogger(__name__)

_CONFIGS: dict[str, list[PerpMarketConfig]] = {
    "mainnet": mainnet_perp_market_configs,
    "devnet": devnet_perp_market_configs,
}
_PERP_SUFFIX = "-PERP"


class UnknownMarketError(LookupError):
    """No market of the network has the requested index."""


_RESOLVED_MAX = 1024


def normalize_symbol(text: str) -> str:
    """Canonical spelling of a market symbol: trimmed, inner spaces removed, upper case."""
    return "".join(text.split()).upper()


class MarketResolver:
    """Symbol ↔ index lookup for the perp markets of one network."""

    def __init__(
        self, network: Network = "mainnet", markets: Iterable[PerpMarketAccount] = ()
    ) -> None:
        if network not in _CONFIGS:
            raise ValueError(f"unknown network {network!r}; expected one of {sorted(_CONFIGS)}")
        self.network: Network = network
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._symbols: dict[int, str] = {}
        self._aliases: dict[str, int] = {}
        self._resolved: dict[str | int, int] = {}
        """Arguments already resolved (a cached read resolves on every call)."""
        self._config_symbols = {
            c.market_index: normalize_symbol(c.symbol) for c in _CONFIGS[network]
        }
        self._config_bases = {
            c.market_index: normalize_symbol(c.base_asset_symbol) for c in _CONFIGS[network]
        }
        self._onchain: dict[int, str] = {}
        self.update(markets)

    def update(self, markets: Iterable[PerpMarketAccount]) -> None:
        """Learn (or relearn) the on-chain names of ``markets``."""
        names = {m.market_index: normalize_symbol(market_name(m)) for m in markets}
        with self._lock:
            self._onchain.update({i: n for i, n in names.items() if n})
            self._rebuild()

    def _rebuild(self) -> None:
        # A config whose index now carries another on-chain name is out of date: drop it.
        configs = {
            index: symbol
            for index, symbol in self._config_symbols.items()
            if self._onchain.get(index, symbol) == symbol
        }
        symbols = {**configs, **self._onchain}
        aliases: dict[str, int] = {}
        # Later entries win: base assets, then full symbols.
        for index in configs:
            aliases[self._config_bases[index]] = index
        for index, symbol in symbols.items():
            if symbol.endswith(_PERP_SUFFIX):
                aliases[symbol.removesuffix(_PERP_SUFFIX)] = index
        for index, symbol in symbols.items():
            aliases[symbol] = index
        self._symbols = symbols
        self._aliases = aliases
        self._resolved = {}

    @property
    def indexes(self) -> list[int]:
        """Every known market index, ascending."""
        return sorted(self._symbols)

    def known(self, market: object) -> int | None:
        """The index of ``market`` if it was resolved before; None otherwise. Never raises."""
        # Exact types only: True == 1 and 1.0 == 1 share a key with 1 but are no index.
        if type(market) is int or type(market) is str:
            return self._resolved.get(market)
        return None

    def resolve(self, market: str | int) -> int | None:
        """The index of ``market``, or None (logged once per unknown name) if there is none."""
        found = self.known(market)
        if found is not None:
            return found
        if isinstance(market, bool) or not isinstance(market, int | str):
            raise TypeError(f"market must be a symbol or an index, got {type(market).__name__}")
        if isinstance(market, int):
            key = str(market)
            index: int | None = market if market in self._symbols else None
        else:
            key = normalize_symbol(market)
            index = self._aliases.get(key)
            if index is None and key.isdigit() and int(key) in self._symbols:
                index = int(key)
        if index is None:
            self._warn_once(key, market)
        elif len(self._resolved) < _RESOLVED_MAX:  # spellings come from callers: bounded
            self._resolved[market] = index
        return index

    def _warn_once(self, key: str, market: str | int) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning("unknown %s perp market %r", self.network, market)

    def symbol(self, index: int) -> str:
        """The market's symbol, its on-chain name when known."""
        try:
            return self._symbols[index]
        except KeyError:
            raise UnknownMarketError(f"no {self.network} perp market with index {index}") from None
