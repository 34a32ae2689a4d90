"""The simulated Drift program state: State, spot and perp markets and their oracles."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from driftpy.addresses import get_spot_market_public_key, get_state_public_key
from driftpy.constants.perp_markets import mainnet_perp_market_configs
from driftpy.constants.spot_markets import mainnet_spot_market_configs
from driftpy.math.amm import calculate_price
from driftpy.types import PerpMarketAccount, SpotMarketAccount, StateAccount
from solders.pubkey import Pubkey

from driftshare.sim import _codec
from driftshare.sim._codec import DRIFT_PROGRAM_ID, variant_name
from driftshare.sim._history import PRICE, confidence
from driftshare.sim._perps import NO_FUNDING, new_perp_market, repriced
from driftshare.sim._spots import new_spot_market, repriced_spot
from driftshare.sim._state import state_account
from driftshare.sim.drift import DriftProgram
from driftshare.sim.oracles import (
    SUPPORTED_SOURCES,
    EncodedOracle,
    OracleQuote,
    encode_oracle,
    price_multiple,
    read_price,
)
from driftshare.sim.replay import (
    decode_drift_account,
    load_account_files,
    replayed_oracle_prices,
)
from driftshare.sim.store import Account, AccountStore

__all__ = ["World"]

log = logging.getLogger(__name__)

_MAX_MARKETS = 65_535

# Approximate USD prices late 2025, in each market's unit (per 1K/1M tokens for 1K*/1M* markets).
PRICES: dict[str, float] = {
    "USDC": 1.0, "SOL": 150.0, "BTC": 95_000.0, "ETH": 3_300.0, "APT": 8.0, "1MBONK": 20.0,
    "POL": 0.4, "ARB": 0.6, "DOGE": 0.3, "BNB": 650.0, "SUI": 3.5, "1MPEPE": 10.0, "OP": 1.5,
    "RENDER": 6.0, "XRP": 2.3, "HNT": 4.0, "INJ": 20.0, "LINK": 20.0, "RLB": 0.08, "PYTH": 0.3,
    "TIA": 4.0, "JTO": 2.5, "SEI": 0.35, "AVAX": 30.0, "WIF": 1.5, "JUP": 0.8, "DYM": 1.2,
    "TAO": 400.0, "W": 0.25, "KMNO": 0.08, "TNSR": 0.3, "DRIFT": 0.8, "CLOUD": 0.2, "IO": 2.0,
    "ZEX": 0.05, "POPCAT": 0.5, "1KWEN": 0.1, "TON": 5.0, "MOTHER": 0.05, "MOODENG": 0.2,
    "DBR": 0.02, "1KMEW": 4.0, "MICHI": 0.1, "GOAT": 0.3, "FWOG": 0.2, "PNUT": 0.4, "RAY": 4.0,
    "HYPE": 25.0, "LTC": 100.0, "ME": 2.0, "PENGU": 0.03, "AI16Z": 0.5, "TRUMP": 15.0,
    "MELANIA": 1.0, "BERA": 5.0, "KAITO": 1.5, "IP": 5.0, "FARTCOIN": 1.0, "ADA": 0.8,
    "PAXG": 3_300.0, "LAUNCHCOIN": 0.1, "PUMP": 0.005, "ASTER": 1.5, "XPL": 1.0, "2Z": 0.3,
    "ZEC": 50.0, "MNT": 1.0, "1KPUMP": 5.0, "MET": 0.5, "1KMON": 0.05, "LIT": 1.0,
}  # fmt: skip
_SLOT_SIGMA = 3e-4
"""Relative stdev of one slot's oracle move: about 2.8% an hour at 400 ms slots."""
_PROBABILITY_SIGMA = 2_000
_PROBABILITY_RANGE = (0.05, 0.95)
"""Where prediction-market oracles walk: Drift's AMM quotes asks from 0.05 and bids up to 0.95
(driftpy's ``get_quote_asset_reserve_prediction_market_bounds``), so there its mark follows them.
One put outside (a replayed settled market's, or by ``set_oracle_price``) moves no further out."""
_STABLE_SIGMA = 30
_PREMIUM_REVERSION = 0.95
_PREMIUM_SIGMA = 1e-4
_PREMIUM_CAP = 0.004
_REPEG_BAND = 0.0015
"""Relative mark drift from its target that makes the AMM re-peg (and the market re-encode)."""
_STABLE_CONF = 50
"""A stablecoin's confidence (1e6 precision): within it of $1, driftpy reads exactly $1."""
_SIM_FEED_BASE = 10_000

_OracleKind = Literal["walk", "stable", "probability"]


@dataclass(slots=True)
class _Oracle:
    pubkey: Pubkey
    source: str
    kind: _OracleKind
    target: int
    """The walked price in PRICE_PRECISION, in ``source``'s unit."""
    market_index: int
    feed_id: bytes
    encoded: EncodedOracle | None = None
    replayed_price: dict[str, int] | None = None
    """For a replayed oracle: what driftpy decodes from it, by the source reading it."""
    frozen: bool = False


@dataclass(slots=True)
class _Perp:
    pubkey: Pubkey
    market: Any
    premium_bias: float = 0.0
    premium: float = 0.0
    frozen: bool = False
    written: bytes = b""
    """The bytes the world last wrote: different bytes in the store were written by a
    transaction (a fill, a settled PnL) and are adopted before the market evolves further."""


@dataclass(slots=True)
class _Spot:
    pubkey: Pubkey
    market: Any
    frozen: bool = False
    written: bytes = b""


class World:
    """Drift's program state on a simulated chain, written into an :class:`AccountStore`.

    The world creates the State account, spot markets 0 (USDC) and 1 (SOL), ``markets`` perp
    markets named and indexed as on mainnet (``SIM{n}-PERP`` beyond driftpy's configs) and an
    oracle account for every market, each in its oracle source's format, and writes them all on
    construction. :meth:`step` advances one slot and fills resting orders. Randomness comes only
    from ``seed``, time only from ``clock``, so equal arguments give equal bytes.

    :attr:`program` is Drift's program over these accounts, for the transaction runner; what its
    instructions change in the markets and the State is kept as the world evolves them.
    ``fill_spread_bps`` is the half-spread its market quotes takers around the oracle.
    """

    def __init__(
        self,
        store: AccountStore,
        *,
        seed: int = 0,
        markets: int = 30,
        funding_period_s: float = 60.0,
        fill_spread_bps: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(markets, bool) or not isinstance(markets, int):
            raise ValueError(f"markets must be an integer, got {markets!r}")
        if not 1 <= markets <= _MAX_MARKETS:
            raise ValueError(f"markets must be 1..{_MAX_MARKETS}, got {markets}")
        if not math.isfinite(funding_period_s) or funding_period_s <= 0:
            raise ValueError(f"funding_period_s must be > 0, got {funding_period_s}")
        if not math.isfinite(fill_spread_bps) or fill_spread_bps < 0:
            raise ValueError(f"fill_spread_bps must be >= 0, got {fill_spread_bps}")
        self.program = DriftProgram(fill_spread_bps=fill_spread_bps)
        self._store = store
        self._rng = random.Random(seed)
        self._clock = clock
        self._funding_period_s = float(funding_period_s)
        self._funding_period = max(1, round(funding_period_s))
        self._oracles: dict[Pubkey, _Oracle] = {}
        self._perps: dict[int, _Perp] = {}
        self._spots: dict[int, _Spot] = {}
        self._state_pubkey = get_state_public_key(DRIFT_PROGRAM_ID)
        self._state: Any = None
        self._state_written = b""
        self._state_frozen = False

        now = self._clock()
        for spot_index in (0, 1):
            self._add_spot_oracle(spot_index)
        for perp_index in range(markets):
            self._add_perp_oracle(perp_index)
        for oracle in self._oracles.values():
            self._write_oracle(oracle, now)
        for spot_index in (0, 1):
            self._create_spot(spot_index, now)
        for perp_index in range(markets):
            self._create_perp(perp_index, now)
        self._write_state()

    # ground truth

    @property
    def store(self) -> AccountStore:
        """The store the world writes to."""
        return self._store

    @property
    def state_pubkey(self) -> Pubkey:
        """Address of Drift's State account."""
        return self._state_pubkey

    def state(self) -> StateAccount:
        """The State account as last written (or replayed)."""
        self._sync_state()
        return self._state

    def perp_indexes(self) -> list[int]:
        """Indexes of every perp market, simulated or replayed, ascending."""
        return sorted(self._perps)

    def spot_indexes(self) -> list[int]:
        """Indexes of every spot market, ascending."""
        return sorted(self._spots)

    def perp_market(self, index: int) -> PerpMarketAccount:
        """The perp market account last written (or replayed) at ``index``; KeyError if none."""
        perp = self._perp(index)
        self._sync(perp)
        return perp.market

    def perp_market_pubkey(self, index: int) -> Pubkey:
        """Address of the perp market account at ``index``; KeyError if none."""
        return self._perp(index).pubkey

    def spot_market(self, index: int) -> SpotMarketAccount:
        """The spot market account last written (or replayed) at ``index``; KeyError if none."""
        spot = self._spot(index)
        self._sync(spot)
        return spot.market

    def oracle_price(self, index: int) -> float:
        """The price driftpy decodes from perp market ``index``'s oracle account, in USD.

        KeyError if there is no such market, LookupError if its oracle cannot be priced.
        """
        market = self._perp(index).market
        return self._market_price(market.amm.oracle, variant_name(market.amm.oracle_source)) / PRICE

    def spot_oracle_price(self, index: int) -> float:
        """The price driftpy decodes from spot market ``index``'s oracle account, in USD."""
        market = self._spot(index).market
        return self._market_price(market.oracle, variant_name(market.oracle_source)) / PRICE

    # evolution

    def step(self) -> None:
        """Advance one slot: move every oracle, re-peg drifting AMMs, settle due funding, then
        fill the resting orders the new oracle prices reach."""
        self._store.slot += 1
        now = self._clock()
        for oracle in self._oracles.values():
            if not oracle.frozen:
                self._walk(oracle)
                self._write_oracle(oracle, now)
        for index in sorted(self._perps):
            perp = self._perps[index]
            if not perp.frozen:
                perp.premium = self._next_premium(perp)
                self._refresh_perp(index, now, force=False)
        for index in sorted(self._spots):
            self._refresh_spot(index, now, force=False)
        self.program.fill_resting(self._store, int(now))

    def set_oracle_price(self, index: int, price: float) -> None:
        """Move perp market ``index``'s oracle to ``price`` (in the market's unit) now.

        Markets reading that oracle are updated as a step would update them. KeyError for an
        unknown market, ValueError for a non-positive price or a replayed (frozen) oracle.
        """
        if (
            isinstance(price, bool)
            or not isinstance(price, int | float)
            or not math.isfinite(price)
        ):
            raise ValueError(f"price must be a finite number, got {price!r}")
        if price <= 0:
            raise ValueError(f"price must be > 0, got {price}")
        market = self._perp(index).market
        oracle = self._oracles.get(market.amm.oracle)
        if oracle is None or oracle.frozen:
            raise ValueError(f"perp market {index}'s oracle is replayed and cannot be moved")
        self._move_oracle(oracle, price * PRICE, variant_name(market.amm.oracle_source))

    def _move_oracle(self, oracle: _Oracle, price: float, source: str) -> None:
        """Write ``oracle`` at ``price`` (1e6 precision, read as ``source``), then its readers."""
        unit_ratio = price_multiple(oracle.source) / price_multiple(source)
        oracle.target = max(1, round(price * unit_ratio))
        now = self._clock()
        self._write_oracle(oracle, now)
        for perp_index in sorted(self._perps):
            perp = self._perps[perp_index]
            if not perp.frozen and perp.market.amm.oracle == oracle.pubkey:
                self._refresh_perp(perp_index, now, force=True)
        for spot_index in sorted(self._spots):
            if self._spots[spot_index].market.oracle == oracle.pubkey:
                self._refresh_spot(spot_index, now, force=True)

    # replay

    def replay(self, paths: Sequence[Path]) -> list[Pubkey]:
        """Serve the accounts of ``solana account --output json`` files (or folders) as frozen.

        They add to or replace the world's accounts and are never evolved. Decodable perp and
        spot markets and the State replace the world's at their index; a replayed perp market
        whose oracle account is absent gets one synthesized at its last oracle price. Raises
        ValueError naming the file for a malformed file. Returns the replayed addresses.
        """
        accounts = load_account_files(list(paths))
        for pubkey, account in accounts:
            self._store.put(pubkey, account, force=True)
        replayed_perps: list[int] = []
        for pubkey, account in accounts:
            self._adopt(pubkey, account, replayed_perps)
        for index in replayed_perps:
            self._ensure_oracle(self._perps[index].market)
        if not self._state_frozen:
            self._write_state()
        return [pubkey for pubkey, _ in accounts]

    # construction

    def _add_spot_oracle(self, index: int) -> None:
        config = mainnet_spot_market_configs[index]
        source = variant_name(config.oracle_source)
        kind: _OracleKind = "stable" if "StableCoin" in source else "walk"
        self._add_oracle(config.oracle, source, kind, self._initial_price(config.symbol), index)

    def _add_perp_oracle(self, index: int) -> None:
        pubkey, source, symbol = self._perp_config(index)
        kind: _OracleKind = "probability" if self._is_prediction(index) else "walk"
        if kind == "probability":
            price = round(self._rng.uniform(*_PROBABILITY_RANGE) * PRICE)
        else:
            price = self._initial_price(symbol)
        self._add_oracle(pubkey, source, kind, price, index)

    def _add_oracle(
        self, pubkey: Pubkey, source: str, kind: _OracleKind, price: int, index: int
    ) -> None:
        if pubkey in self._oracles:
            return
        feed_id = bytes(pubkey)
        self._oracles[pubkey] = _Oracle(pubkey, source, kind, price, index, feed_id)

    def _initial_price(self, symbol: str) -> int:
        base = symbol.removesuffix("-PERP")
        if base in PRICES:
            usd = PRICES[base] * (1.0 if base == "USDC" else self._rng.uniform(0.97, 1.03))
        else:
            usd = 10 ** self._rng.uniform(-2.0, 3.0)
        return max(1, round(usd * PRICE))

    @staticmethod
    def _perp_config(index: int) -> tuple[Pubkey, str, str]:
        if index < len(mainnet_perp_market_configs):
            config = mainnet_perp_market_configs[index]
            return config.oracle, variant_name(config.oracle_source), config.symbol
        # Seeds like Drift's own Pyth Lazer oracle PDAs, with feed ids no real feed uses.
        feed = (_SIM_FEED_BASE + index).to_bytes(4, "little")
        oracle = Pubkey.find_program_address([b"pyth_lazer", feed], DRIFT_PROGRAM_ID)[0]
        return oracle, "PythLazer", f"SIM{index}-PERP"

    @staticmethod
    def _is_prediction(index: int) -> bool:
        if index >= len(mainnet_perp_market_configs):
            return False
        config = mainnet_perp_market_configs[index]
        return variant_name(config.oracle_source) == "Prelaunch" and not config.symbol.endswith(
            "-PERP"
        )

    def _create_perp(self, index: int, now: float) -> None:
        oracle_pubkey, source, symbol = self._perp_config(index)
        market, bias = new_perp_market(
            index,
            oracle_pubkey=oracle_pubkey,
            source=source,
            symbol=symbol,
            prediction=self._is_prediction(index),
            price=self._read(oracle_pubkey, source),
            now=now,
            slot=self._store.slot,
            funding_period=self._funding_period,
            rng=self._rng,
        )
        perp = _Perp(market.pubkey, market, bias, bias)
        self._perps[index] = perp
        perp.written = self._put_drift(market.pubkey, "PerpMarket", market)

    def _create_spot(self, index: int, now: float) -> None:
        config = mainnet_spot_market_configs[index]
        price = self._read(config.oracle, variant_name(config.oracle_source))
        market = new_spot_market(index, config, price=price, now=now, rng=self._rng)
        spot = _Spot(get_spot_market_public_key(DRIFT_PROGRAM_ID, index), market)
        self._spots[index] = spot
        spot.written = self._put_drift(market.pubkey, "SpotMarket", market)

    # evolution helpers

    def _walk(self, oracle: _Oracle) -> None:
        rng = self._rng
        if oracle.kind == "walk":
            oracle.target = max(1, round(oracle.target * math.exp(rng.gauss(0.0, _SLOT_SIGMA))))
        elif oracle.kind == "stable":
            drift = (oracle.target - PRICE) * 0.9 + rng.gauss(0.0, _STABLE_SIGMA)
            oracle.target = max(1, round(PRICE + drift))
        else:
            moved = oracle.target + rng.gauss(0.0, _PROBABILITY_SIGMA)
            low = min(_PROBABILITY_RANGE[0] * PRICE, oracle.target)
            high = max(_PROBABILITY_RANGE[1] * PRICE, oracle.target)
            oracle.target = round(min(max(moved, low), high))

    def _next_premium(self, perp: _Perp) -> float:
        moved = perp.premium_bias + (perp.premium - perp.premium_bias) * _PREMIUM_REVERSION
        moved += self._rng.gauss(0.0, _PREMIUM_SIGMA)
        return min(max(moved, -_PREMIUM_CAP), _PREMIUM_CAP)

    def _write_oracle(self, oracle: _Oracle, now: float) -> None:
        conf = _STABLE_CONF if oracle.kind == "stable" else confidence(oracle.target)
        quote = OracleQuote(oracle.target, conf, self._store.slot, now)
        encoded = encode_oracle(
            oracle.source, quote, market_index=oracle.market_index, feed_id=oracle.feed_id
        )
        oracle.encoded = encoded
        account = Account(
            encoded.data, encoded.owner, _codec.rent_exempt_lamports(len(encoded.data))
        )
        self._store.put(oracle.pubkey, account)

    def _read(self, pubkey: Pubkey, source: str) -> int:
        """What driftpy decodes from the world's oracle ``pubkey`` read as ``source``."""
        oracle = self._oracles.get(pubkey)
        if oracle is None:
            raise LookupError(f"no oracle account {pubkey}")
        if oracle.replayed_price is not None:
            if source not in oracle.replayed_price:
                raise LookupError(f"replayed oracle {pubkey} does not decode as {source}")
            return oracle.replayed_price[source]
        if oracle.encoded is None:
            raise LookupError(f"oracle {pubkey} was never written")
        return read_price(source, oracle.encoded)

    def _market_price(self, pubkey: Pubkey, source: str) -> int:
        try:
            return self._read(pubkey, source)
        except ValueError as exc:
            raise LookupError(str(exc)) from None

    def _refresh_perp(self, index: int, now: float, *, force: bool) -> None:
        perp = self._perps[index]
        self._sync(perp)
        market = perp.market
        amm = market.amm
        try:
            price = self._read(amm.oracle, variant_name(amm.oracle_source))
        except (LookupError, ValueError):
            return  # a replayed oracle that does not decode: the market keeps its last state
        if price <= 0:
            return  # nor can an AMM be pegged to a replayed oracle's non-positive price
        status = variant_name(market.status)
        due = status not in NO_FUNDING and now - amm.last_funding_rate_ts >= self._funding_period_s
        mark = calculate_price(amm.base_asset_reserve, amm.quote_asset_reserve, amm.peg_multiplier)
        target = price * (1.0 + perp.premium)
        if not (force or due or abs(mark / target - 1.0) > _REPEG_BAND):
            return
        perp.market = repriced(
            market,
            premium=perp.premium,
            price=price,
            now=int(now),
            slot=self._store.slot,
            settle=due,
        )
        perp.written = self._put_drift(perp.pubkey, "PerpMarket", perp.market)

    def _refresh_spot(self, index: int, now: float, *, force: bool) -> None:
        spot = self._spots[index]
        if spot.frozen:
            return
        self._sync(spot)
        try:
            price = self._read(spot.market.oracle, variant_name(spot.market.oracle_source))
        except (LookupError, ValueError):
            return
        market = repriced_spot(spot.market, price=price, now=now, force=force)
        if market is not None:
            spot.market = market
            spot.written = self._put_drift(spot.pubkey, "SpotMarket", market)

    def _write_state(self) -> None:
        state = state_account(
            perp_markets=len(self._perps),
            number_of_markets=max(self._perps, default=-1) + 1,
            number_of_spot_markets=max(self._spots, default=-1) + 1,
        )
        if self._state is not None:
            self._sync_state()
            # Users and authorities are counted by the program's instructions, not the world.
            state = dataclasses.replace(
                state,
                number_of_authorities=self._state.number_of_authorities,
                number_of_sub_accounts=self._state.number_of_sub_accounts,
            )
            if state == self._state:
                return
        self._state = state
        self._state_written = self._put_drift(self._state_pubkey, "State", state)

    def _put_drift(self, pubkey: Pubkey, name: str, obj: Any) -> bytes:
        """Write ``obj`` as the ``name`` account at ``pubkey``; returns the bytes written."""
        data = _codec.encode(name, obj)
        self._store.put(
            pubkey, Account(data, DRIFT_PROGRAM_ID, _codec.rent_exempt_lamports(len(data)))
        )
        return data

    def _sync(self, item: _Perp | _Spot) -> None:
        """Adopt a market a transaction rewrote since the world last wrote it."""
        data = None if item.frozen else self._rewritten(item.pubkey, item.written)
        if data is not None:
            item.market = _codec.decode(data)
            item.written = data

    def _sync_state(self) -> None:
        if self._state_frozen:
            return
        data = self._rewritten(self._state_pubkey, self._state_written)
        if data is not None:
            self._state = _codec.decode(data)
            self._state_written = data

    def _rewritten(self, pubkey: Pubkey, written: bytes) -> bytes | None:
        """The bytes at ``pubkey`` if something other than the world wrote them last."""
        stored = self._store.get(pubkey)
        return stored.data if stored is not None and stored.data != written else None

    # replay helpers

    def _adopt(self, pubkey: Pubkey, account: Account, replayed_perps: list[int]) -> None:
        oracle = self._oracles.get(pubkey)
        if oracle is not None:
            oracle.frozen = True
            oracle.replayed_price = self._replayed_prices(pubkey, account.data)
            return
        decoded = decode_drift_account(pubkey, account)
        if decoded is None:
            self._forget(pubkey)
            return
        name, obj = decoded
        if name == "PerpMarket":
            self._perps[obj.market_index] = _Perp(pubkey, obj, frozen=True)
            replayed_perps.append(obj.market_index)
        elif name == "SpotMarket":
            self._spots[obj.market_index] = _Spot(pubkey, obj, frozen=True)
        elif pubkey == self._state_pubkey:
            self._state = obj
            self._state_frozen = True

    def _forget(self, pubkey: Pubkey) -> None:
        """Stop simulating whatever market or State lived at ``pubkey``: the replay replaced it."""
        self._perps = {i: p for i, p in self._perps.items() if p.pubkey != pubkey}
        self._spots = {i: s for i, s in self._spots.items() if s.pubkey != pubkey}
        if pubkey == self._state_pubkey:
            self._state_frozen = True

    def _replayed_prices(self, pubkey: Pubkey, data: bytes) -> dict[str, int]:
        """The prices of replayed oracle ``pubkey`` as each market reading it decodes them."""
        readers = [
            variant_name(p.market.amm.oracle_source)
            for p in self._perps.values()
            if p.market.amm.oracle == pubkey
        ]
        readers += [
            variant_name(s.market.oracle_source)
            for s in self._spots.values()
            if s.market.oracle == pubkey
        ]
        return replayed_oracle_prices(pubkey, data, readers)

    def _ensure_oracle(self, market: Any) -> None:
        pubkey: Pubkey = market.amm.oracle
        source = variant_name(market.amm.oracle_source)
        known = self._oracles.get(pubkey)
        if known is not None:
            if known.replayed_price is not None and source not in known.replayed_price:
                known.replayed_price |= self._replayed_prices(pubkey, self._stored_data(pubkey))
            elif known.encoded is not None and not known.frozen:
                self._anchor(known, known.encoded, market, source)
            return
        stored = self._store.get(pubkey)
        if stored is not None:
            oracle = _Oracle(
                pubkey, source, "walk", 0, market.market_index, bytes(pubkey), frozen=True
            )
            self._oracles[pubkey] = oracle
            oracle.replayed_price = self._replayed_prices(pubkey, stored.data)
            return
        price = int(market.amm.historical_oracle_data.last_oracle_price)
        if source not in SUPPORTED_SOURCES or price <= 0:
            log.warning(
                "cannot synthesize a %s oracle at price %d for replayed perp market %d",
                source,
                price,
                market.market_index,
            )
            return
        prediction = variant_name(market.contract_type) == "Prediction"
        kind: _OracleKind = (
            "probability" if prediction else "stable" if "StableCoin" in source else "walk"
        )
        oracle = _Oracle(pubkey, source, kind, price, market.market_index, bytes(pubkey))
        self._oracles[pubkey] = oracle
        self._write_oracle(oracle, self._clock())

    def _anchor(self, oracle: _Oracle, encoded: EncodedOracle, market: Any, source: str) -> None:
        """Move a simulated oracle to where a replayed market last saw it, so the two agree."""
        try:
            read_price(source, encoded)
        except ValueError as exc:
            log.warning("replayed perp market %d: %s", market.market_index, exc)
            return
        price = int(market.amm.historical_oracle_data.last_oracle_price)
        if price > 0:
            self._move_oracle(oracle, price, source)

    def _stored_data(self, pubkey: Pubkey) -> bytes:
        stored = self._store.get(pubkey)
        return stored.data if stored is not None else b""

    def _perp(self, index: int) -> _Perp:
        try:
            return self._perps[index]
        except KeyError:
            raise KeyError(f"no perp market {index}") from None

    def _spot(self, index: int) -> _Spot:
        try:
            return self._spots[index]
        except KeyError:
            raise KeyError(f"no spot market {index}") from None
