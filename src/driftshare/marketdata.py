"""Cached market data read from subscribed accounts: never an RPC request per read."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from driftshare.cache import Cached, TTLCache
from driftshare.config import Network, Settings
from driftshare.markets import MarketResolver
from driftshare.models import (
    FundingRateData,
    MarketData,
    MarketMathError,
    funding_rate_from_market,
    market_data_from_market,
)

__all__ = ["ClientSource", "MarketDataReader", "MarketSource", "SourceProvider"]

log = logging.getLogger(__name__)

_T = TypeVar("_T", FundingRateData, MarketData)


class MarketSource(Protocol):
    """Where decoded market accounts come from.

    A subscribed DriftClient in this process today; a cross-process backend (Redis) can
    implement the same three methods and sit behind the same reader.
    """

    def perp_markets(self) -> list[Any]:
        """Every subscribed PerpMarketAccount."""

    def perp_market(self, market_index: int) -> Any | None:
        """One subscribed PerpMarketAccount, or None."""

    def oracle_price_data(self, market_index: int) -> Any | None:
        """The market's OraclePriceData, or None."""


@runtime_checkable
class StaleSource(MarketSource, Protocol):
    """A source whose every value is stale (a snapshot), with the true age of its data."""

    stale: bool

    def data_age(self, market_index: int) -> float | None:
        """Seconds since the market's accounts were last known current."""


def _aged(source: MarketSource, index: int, value: _T) -> _T:
    """``value`` marked stale with its data's age when ``source`` is a :class:`StaleSource`."""
    if not isinstance(source, StaleSource):
        return value
    return dataclasses.replace(value, stale=True, age_s=source.data_age(index) or 0.0)


def _restamped(value: _T, cached: Cached[Any]) -> _T:
    # A value computed stale (from a snapshot) stays stale, and ages from its data's age.
    return dataclasses.replace(
        value, stale=value.stale or cached.stale, age_s=value.age_s + cached.age_s
    )


SourceProvider = Callable[[], Awaitable[MarketSource | None]]
"""Returns the source, or None while upstream is unavailable."""


class ClientSource:
    """A :class:`MarketSource` over a subscribed driftpy DriftClient."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def perp_markets(self) -> list[Any]:
        return list(self._client.get_perp_market_accounts())

    def perp_market(self, market_index: int) -> Any | None:
        try:
            return self._client.get_perp_market_account(market_index)
        except (KeyError, ValueError):
            return None

    def oracle_price_data(self, market_index: int) -> Any | None:
        try:
            return self._client.get_oracle_price_data_for_perp_market(market_index)
        except (KeyError, ValueError, AttributeError):
            return None


class MarketDataReader:
    """Funding, prices and open interest with one TTL per kind, single flight and stale values.

    Values come from the source's subscribed accounts; a read within its TTL costs a dict
    lookup. While the source is unavailable the last value is served with ``stale=True``
    for up to ``max_staleness_s``, then ``None``.
    """

    def __init__(
        self,
        source: SourceProvider,
        *,
        settings: Settings,
        network: Network = "mainnet",
        cache: TTLCache | None = None,
    ) -> None:
        self._source = source
        self._settings = settings
        self.cache = (
            cache if cache is not None else TTLCache(max_staleness_s=settings.max_staleness_s)
        )
        self.resolver = MarketResolver(network)
        self._missing_warned: set[int] = set()

    async def _current(self) -> MarketSource | None:
        source = await self._source()
        if source is not None and not self.resolver.indexes:
            self.resolver.update(source.perp_markets())
        return source

    async def _index(self, market: str | int) -> int | None:
        try:
            index = self.resolver.resolve(market)
        except TypeError:
            log.warning("market must be a symbol or an index, got %r", market)
            return None
        if index is None:
            # A market listed after driftpy's bundled configs is known only by its on-chain name.
            source = await self._current()
            if source is not None:
                self.resolver.update(source.perp_markets())
                index = self.resolver.resolve(market)
        return index

    def _warn_missing(self, index: int) -> None:
        if index not in self._missing_warned:
            self._missing_warned.add(index)
            log.warning("perp market %d is not subscribed or not available", index)

    def _warn_unpriceable(self, index: int, exc: MarketMathError) -> None:
        if index not in self._missing_warned:
            self._missing_warned.add(index)
            log.warning("perp market %d left out: %s", index, exc)

    @staticmethod
    def _marked(cached: Cached[_T] | None) -> _T | None:
        if cached is None:
            return None
        return _restamped(cached.value, cached)

    async def _one_market(self, index: int, kind: str) -> MarketData | None:
        async def compute() -> MarketData | None:
            source = await self._current()
            if source is None:
                return None
            market = source.perp_market(index)
            if market is None:
                self._warn_missing(index)
                return None
            data = market_data_from_market(
                market, oracle_price_data=source.oracle_price_data(index)
            )
            return _aged(source, index, data)

        ttl = self._settings.cache_ttl_oi if kind == "oi" else self._settings.cache_ttl_price
        return self._marked(
            await self.cache.get((kind, index), ttl=ttl, compute=compute, kind=kind)
        )

    async def get_funding_rate(self, market: str | int) -> FundingRateData | None:
        """Funding of one market (``SOL-PERP``, ``sol``, ``0``…), or None."""
        index = await self._index(market)
        if index is None:
            return None

        async def compute() -> FundingRateData | None:
            source = await self._current()
            if source is None:
                return None
            perp = source.perp_market(index)
            if perp is None:
                self._warn_missing(index)
                return None
            rate = funding_rate_from_market(perp, oracle_price_data=source.oracle_price_data(index))
            return _aged(source, index, rate)

        cached = await self.cache.get(
            ("funding", index),
            ttl=self._settings.cache_ttl_funding,
            compute=compute,
            kind="funding",
        )
        return self._marked(cached)

    async def get_all_perp_markets(self) -> list[MarketData]:
        """Every subscribed perp market, by index."""

        async def compute() -> list[MarketData] | None:
            source = await self._current()
            if source is None:
                return None
            markets = source.perp_markets()
            self.resolver.update(markets)
            rows: list[MarketData] = []
            for m in sorted(markets, key=lambda m: m.market_index):
                try:
                    data = market_data_from_market(
                        m, oracle_price_data=source.oracle_price_data(m.market_index)
                    )
                except MarketMathError as exc:
                    # One market that cannot be priced must not hide the others.
                    self._warn_unpriceable(m.market_index, exc)
                    continue
                rows.append(_aged(source, m.market_index, data))
            return rows

        cached = await self.cache.get(
            ("markets",), ttl=self._settings.cache_ttl_markets, compute=compute, kind="markets"
        )
        if cached is None:
            return []
        return [_restamped(m, cached) for m in cached.value]

    async def get_all_funding_rates(self) -> list[FundingRateData]:
        """Funding of every subscribed perp market, by index."""
        markets = await self.get_all_perp_markets()
        rates = [await self.get_funding_rate(m.market_index) for m in markets]
        return [r for r in rates if r is not None]

    async def get_market(self, market: str | int) -> MarketData | None:
        """Prices and open interest of one market, or None."""
        index = await self._index(market)
        if index is None:
            return None
        return await self._one_market(index, "market")

    async def get_mark_price(self, market: str | int) -> float | None:
        """The AMM bid/ask mid of one market, or None."""
        index = await self._index(market)
        if index is None:
            return None
        data = await self._one_market(index, "mark")
        return None if data is None else data.mark_price

    async def get_open_interest(self, market: str | int) -> float | None:
        """Open interest of one market in USD at the oracle price (long + |short|), or None."""
        index = await self._index(market)
        if index is None:
            return None
        data = await self._one_market(index, "oi")
        return None if data is None else data.open_interest_usd
