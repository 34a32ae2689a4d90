"""DriftClientManager: one shared, lazily created, reference-counted DriftClient per network.

This module is the public registry. A client's life (references, read leases, start-up,
close) is in :mod:`driftshare._client.lifecycle`, one generation's tasks and resources in
:mod:`driftshare._client.generation`, its health checks and rebuilds in
:mod:`driftshare._client.health`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from driftpy.addresses import get_user_account_public_key
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.drift_client import DriftClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from driftshare._accounts import AccountMissing, AccountUnavailable, SubAccount
from driftshare._accounts.reads import missing_status
from driftshare._client.health import reconnect
from driftshare._client.keypair import load_keypair
from driftshare._client.lifecycle import SharedClient
from driftshare._data.marketdata import OPEN_INTEREST_DEPRECATION, MarketDataReader, MarketSource
from driftshare.config import (
    PUBLIC_RPC_URLS,
    Settings,
    load_settings,
    redact_url,
    split_rpc_urls,
)
from driftshare.models import (
    AccountInfo,
    AccountStatus,
    FundingRateData,
    MarketData,
    OrderInfo,
    PositionInfo,
)

__all__ = ["DriftClientManager", "configured_signer"]

log = logging.getLogger(__name__)


def configured_signer(settings: Settings) -> Keypair | None:
    """``DRIFT_KEYPAIR``, or None when it is not set (ValueError when it is unreadable)."""
    return None if settings.keypair is None else load_keypair(settings)


class DriftClientManager:
    """The process-wide registry of shared DriftClients, one per (network, RPC URL).

    Every method is a classmethod: engines call ``await DriftClientManager.get_client()``
    and ``await DriftClientManager.release_client()``, or use :meth:`session`.

    Several event loops: asyncio sockets and tasks belong to one loop, so each running
    event loop (each thread running one) gets its own shared client per (network, RPC URL),
    counted and closed on its own. Calls made inside a loop act on that loop's client;
    synchronous calls outside any loop (:meth:`stats`, :meth:`is_initialized`) report the
    newest one. A client whose loop has closed is forgotten: its sockets died with it.
    """

    _settings: ClassVar[Settings | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _shared: ClassVar[dict[tuple[str, str, asyncio.AbstractEventLoop], SharedClient]] = {}
    _readers: ClassVar[dict[tuple[str, str], MarketDataReader]] = {}
    _keys: ClassVar[dict[tuple[str | None, str | None], tuple[str, str]]] = {}
    """``_url``'s answers under ``_keys_of`` (every cached read asks again)."""
    _keys_of: ClassVar[Settings | None] = None
    _problems: ClassVar[dict[tuple[str, str, int], str]] = {}
    """Why :meth:`open_account` last failed, by (network, authority, sub-account), until it
    opens; :meth:`shutdown` forgets them."""

    @classmethod
    def configure(cls, settings: Settings | None = None, **overrides: Any) -> Settings:
        """Set the settings for clients created from now on (connects nothing) and return
        them: ``settings``, or :func:`load_settings` of ``DRIFT_*`` with ``overrides``, which
        raises :class:`ConfigError` naming the variable of a bad value."""
        cls._settings = settings if settings is not None else load_settings(**overrides)
        return cls._settings

    @classmethod
    def settings(cls) -> Settings:
        """The settings in force: the last :meth:`configure`'s, else read from ``DRIFT_*``
        now (:class:`ConfigError` naming the variable of a bad value)."""
        if cls._settings is None:
            cls._settings = load_settings()
        return cls._settings

    @classmethod
    def _url(cls, network: str | None, rpc_url: str | None) -> tuple[str, str]:
        settings = cls.settings()
        if cls._keys_of is not settings:
            cls._keys, cls._keys_of = {}, settings
        key = cls._keys.get((network, rpc_url))
        if key is None:
            key = cls._keys[(network, rpc_url)] = cls._resolve_url(settings, network, rpc_url)
        return key

    @classmethod
    def _resolve_url(
        cls, settings: Settings, network: str | None, rpc_url: str | None
    ) -> tuple[str, str]:
        network = network or settings.network
        if network not in PUBLIC_RPC_URLS:
            raise ValueError(
                f"unknown network {network!r}; expected one of {list(PUBLIC_RPC_URLS)}"
            )
        if rpc_url is None:
            rpc_url = settings.rpc_url if network == settings.network and settings.rpc_url else None
        # A list of endpoints is one shared client, however it is spaced.
        return network, ",".join(split_rpc_urls(rpc_url or "")) or PUBLIC_RPC_URLS[network]

    @classmethod
    def _find(cls, network: str | None, rpc_url: str | None) -> SharedClient | None:
        """This loop's shared client; outside any loop, the newest one of any loop."""
        try:
            network, url = cls._url(network, rpc_url)
        except ValueError:
            return None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with cls._lock:
            if loop is not None:
                return cls._shared.get((network, url, loop))
            found = [s for (n, u, _), s in cls._shared.items() if (n, u) == (network, url)]
        return found[-1] if found else None

    @classmethod
    def _shared_for(cls, network: str | None, rpc_url: str | None) -> SharedClient:
        """This loop's shared client, created (once, whatever the threads) on first use."""
        network, url = cls._url(network, rpc_url)
        settings = cls.settings()
        loop = asyncio.get_running_loop()
        with cls._lock:
            for key in [k for k in cls._shared if k[2].is_closed()]:
                del cls._shared[key]
            shared = cls._shared.get((network, url, loop))
            if shared is None:
                shared = cls._shared[(network, url, loop)] = SharedClient(network, url, settings)
        return shared

    @classmethod
    async def get_client(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> DriftClient | None:
        """The shared client, created and subscribed on first use; adds one reference.

        ``None`` when it cannot be had now (it keeps trying in the background while
        references are held); never an exception.
        """
        try:
            shared = cls._shared_for(network, rpc_url)
        except ValueError as exc:
            log.error("cannot get a DriftClient: %s", exc)
            return None
        client: DriftClient | None = await shared.acquire()
        return client

    @classmethod
    async def release_client(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Drop one reference; the last one unsubscribes and closes everything."""
        shared = cls._find(network, rpc_url)
        if shared is None:
            log.info("release_client(%r) with no reference held: ignored", network)
            return
        await shared.release()

    @classmethod
    @asynccontextmanager
    async def session(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> AsyncIterator[DriftClient | None]:
        """``async with DriftClientManager.session() as client:`` pairs get and release."""
        client = await cls.get_client(network, rpc_url=rpc_url)
        try:
            yield client
        finally:
            await cls.release_client(network, rpc_url=rpc_url)

    @classmethod
    def is_initialized(cls, network: str | None = None, *, rpc_url: str | None = None) -> bool:
        """Whether this loop's shared client of ``network`` is started and subscribed now."""
        shared = cls._find(network, rpc_url)
        return shared is not None and shared.initialized

    @classmethod
    async def force_reconnect(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> bool:
        """Rebuild the connection and subscriptions under the same references, inside the
        same ``DriftClient`` object; whether it is subscribed again (False when no reference
        holds the client, or the rebuild could not finish now)."""
        shared = cls._find(network, rpc_url)
        return False if shared is None else await reconnect(shared)

    @classmethod
    def stats(cls, network: str | None = None, *, rpc_url: str | None = None) -> dict[str, Any]:
        """A plain snapshot of the shared client: references, mode, health, RPC, cache."""
        try:
            key = cls._url(network, rpc_url)
        except ValueError as exc:
            return {"network": network, "references": 0, "initialized": False, "error": str(exc)}
        shared = cls._find(*key)
        if shared is None:
            from driftshare._fleet import standalone_stats  # on use: see _lifecycle

            snapshot: dict[str, Any] = {
                "network": key[0],
                "rpc_url": redact_url(split_rpc_urls(key[1])[0]),
                "references": 0,
                "initialized": False,
                "initializations": 0,
                "fleet": standalone_stats(),
            }
        else:
            snapshot = shared.snapshot()
        reader = cls._readers.get(key)
        snapshot["cache"] = reader.cache.stats() if reader else {"hits": {}, "misses": {}}
        return snapshot

    # -- cached market data (no RPC request per read) -----------------------------------------

    @classmethod
    def market_data(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> MarketDataReader:
        """The cached reader over the shared client (ValueError for an unknown network).

        Reads take no reference: while engines hold the client they keep it open, and once
        the last one has released it closes. A read while none holds it starts the client
        if needed, which then closes ``DRIFT_IDLE_CLOSE_S`` after the last such read, or at
        :meth:`release_market_data` or :meth:`shutdown`.
        """
        # Every cached read comes here: _url's memo read inline while the settings are the same.
        key = cls._keys.get((network, rpc_url)) if cls._keys_of is cls._settings else None
        if key is None:
            key = cls._url(network, rpc_url)
        reader = cls._readers.get(key)  # one dict read, atomic: the lock only for creation
        if reader is not None:
            return reader
        with cls._lock:
            reader = cls._readers.get(key)
            if reader is None:
                source = functools.partial(cls._read_source, *key)
                reader = MarketDataReader(source, settings=cls.settings(), network=key[0])  # type: ignore[arg-type]
                cls._readers[key] = reader
        return reader

    @classmethod
    async def _read_source(cls, network: str, rpc_url: str) -> MarketSource | None:
        return await cls._shared_for(network, rpc_url).read()

    @classmethod
    async def release_market_data(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Forget the cached reader of ``network``; end its read lease (in this loop)."""
        key = cls._find_key(network, rpc_url)
        if key is None:
            return
        with cls._lock:
            cls._readers.pop(key, None)
        shared = cls._find(*key)
        closing = None if shared is None else shared.drop_lease()
        if closing is not None:
            await asyncio.shield(closing)

    @classmethod
    def _find_key(cls, network: str | None, rpc_url: str | None) -> tuple[str, str] | None:
        try:
            return cls._url(network, rpc_url)
        except ValueError as exc:
            log.warning("%s", exc)
            return None

    @classmethod
    def _reader(cls, network: str | None) -> MarketDataReader | None:
        try:
            return cls.market_data(network)
        except ValueError as exc:
            log.warning("%s", exc)
            return None

    @classmethod
    async def get_funding_rate(
        cls, market: str | int, network: str | None = None
    ) -> FundingRateData | None:
        """Funding of one perp market from the shared client, cached; never raises."""
        reader = cls._reader(network)
        if reader is None:
            return None
        hit = reader.funding_hit(market)  # a hit makes no coroutine of the reader's
        return hit if hit is not None else await reader.get_funding_rate(market)

    @classmethod
    async def get_all_perp_markets(cls, network: str | None = None) -> list[MarketData]:
        """Every subscribed perp market from the shared client, cached; never raises."""
        reader = cls._reader(network)
        return [] if reader is None else await reader.get_all_perp_markets()

    @classmethod
    async def get_market(cls, market: str | int, network: str | None = None) -> MarketData | None:
        """Prices and open interest of one market, cached; never raises."""
        reader = cls._reader(network)
        return None if reader is None else await reader.get_market(market)

    @classmethod
    async def get_mark_price(cls, market: str | int, network: str | None = None) -> float | None:
        """The AMM bid/ask mid of one market, cached; never raises."""
        reader = cls._reader(network)
        return None if reader is None else await reader.get_mark_price(market)

    @classmethod
    async def get_open_interest(cls, market: str | int, network: str | None = None) -> float | None:
        """Deprecated: :meth:`get_open_interest_usd`, whose name says the unit."""
        warnings.warn(OPEN_INTEREST_DEPRECATION, DeprecationWarning, stacklevel=2)
        return await cls.get_open_interest_usd(market, network)

    @classmethod
    async def get_open_interest_usd(
        cls, market: str | int, network: str | None = None
    ) -> float | None:
        """Open interest of one market in USD at the oracle price, cached; never raises.

        ``MarketData.open_interest`` is the same in base units.
        """
        reader = cls._reader(network)
        return None if reader is None else await reader.get_open_interest_usd(market)

    # -- signers' sub-accounts: registered once, read with no RPC request -------------------

    @classmethod
    async def open_account(
        cls,
        wallet: Keypair | None = None,
        sub_account: int = 0,
        network: str | None = None,
        *,
        rpc_url: str | None = None,
    ) -> SubAccount | None:
        """Register ``wallet``'s ``sub_account`` (``DRIFT_KEYPAIR`` without a wallet) on the
        shared client, holding one client reference until :meth:`close_account`.

        Every engine opening the same sub-account shares one subscription of its User
        account. None (logged, nothing held) when it cannot be registered now, e.g. its
        User account does not exist: :meth:`verify_account` then says how to create it.
        """
        try:
            signer = wallet if wallet is not None else configured_signer(cls.settings())
        except ValueError as exc:
            log.error("cannot open a sub-account: %s", exc)
            return None
        if signer is None:
            log.error("cannot open a sub-account: no wallet given and DRIFT_KEYPAIR is not set")
            return None
        client = await cls.get_client(network, rpc_url=rpc_url)
        shared = cls._find(network, rpc_url)
        if client is not None and shared is not None:
            problem = (network or cls.settings().network, str(signer.pubkey()), sub_account)
            try:
                opened = await shared.accounts.open(signer, sub_account)
            except (AccountMissing, AccountUnavailable) as exc:
                cls._problems[problem] = str(exc)
                log.warning("cannot open sub-account %d: %s", sub_account, exc)
            else:
                cls._problems.pop(problem, None)  # an old failure is no longer why
                return opened
        await cls.release_client(network, rpc_url=rpc_url)
        return None

    @classmethod
    async def close_account(
        cls, account: SubAccount, network: str | None = None, *, rpc_url: str | None = None
    ) -> None:
        """Drop what :meth:`open_account` took: the registration and its client reference."""
        shared = cls._find(network, rpc_url)
        if shared is not None:
            await shared.accounts.close(account)
        await cls.release_client(network, rpc_url=rpc_url)

    @classmethod
    def account(
        cls,
        authority: Pubkey | str,
        sub_account: int = 0,
        network: str | None = None,
        *,
        rpc_url: str | None = None,
    ) -> SubAccount | None:
        """The registered ``(authority, sub_account)`` of this loop's shared client, or None."""
        shared = cls._find(network, rpc_url)
        if shared is None:
            return None
        key = authority if isinstance(authority, Pubkey) else Pubkey.from_string(authority)
        return shared.accounts.find(key, sub_account)

    @classmethod
    async def get_account_info(
        cls, authority: Pubkey | str, sub_account: int = 0, network: str | None = None
    ) -> AccountInfo | None:
        """A registered sub-account's collateral, margin and PnL; None if not registered."""
        account = cls.account(authority, sub_account, network)
        return None if account is None else account.account_info()

    @classmethod
    async def get_positions(
        cls, authority: Pubkey | str, sub_account: int = 0, network: str | None = None
    ) -> list[PositionInfo]:
        """A registered sub-account's open perp positions; [] if not registered."""
        account = cls.account(authority, sub_account, network)
        return (None if account is None else account.positions()) or []

    @classmethod
    async def get_open_orders(
        cls, authority: Pubkey | str, sub_account: int = 0, network: str | None = None
    ) -> list[OrderInfo]:
        """A registered sub-account's open orders; [] if not registered."""
        account = cls.account(authority, sub_account, network)
        return (None if account is None else account.open_orders()) or []

    @classmethod
    async def verify_account(
        cls, authority: Pubkey | str, sub_account: int = 0, network: str | None = None
    ) -> AccountStatus:
        """Whether a sub-account can trade; for one not registered, why not."""
        account = cls.account(authority, sub_account, network)
        if account is not None:
            return account.status()
        key = authority if isinstance(authority, Pubkey) else Pubkey.from_string(authority)
        problem = (network or cls.settings().network, str(key), sub_account)
        message = cls._problems.get(problem) or (
            "not registered: open it with DriftClientManager.open_account(wallet, sub_account)"
        )
        return missing_status(
            authority=str(key),
            sub_account_id=sub_account,
            user_account=str(get_user_account_public_key(DRIFT_PROGRAM_ID, key, sub_account)),
            message=message,
        )

    @classmethod
    def shared_state(
        cls, network: str | None = None, *, rpc_url: str | None = None
    ) -> SharedClient | None:
        """The internal state of one shared client (for the market-data layer and tests)."""
        return cls._find(network, rpc_url)

    @classmethod
    async def shutdown(cls) -> None:
        """Close this loop's shared clients regardless of references (process exit, tests)."""
        loop = asyncio.get_running_loop()
        with cls._lock:
            cls._readers.clear()
            cls._problems.clear()
            mine = [(k, s) for k, s in cls._shared.items() if k[2] is loop or k[2].is_closed()]
        for key, shared in mine:
            if key[2] is loop:
                closing = shared.close_now()
                if closing is not None:
                    await asyncio.shield(closing)
            with cls._lock:
                cls._shared.pop(key, None)
