"""Ground truth for the reliability suite: how far behind the chain a served value is.

The simulator's store calls a listener on every account write. For each perp market this
records, per observable quantity, the value the chain holds now and, for every value it held
before, when that value was last replaced. A value read through driftshare is then behind
the chain by ``now - replaced_at`` (0 while it is still the chain's value): the time since
the chain moved on from it. An account that simply has not changed is never behind.

Quantities, each derived straight from the simulator's accounts:

- ``oracle``: the perp market's oracle price as driftpy decodes it (``World.oracle_price``),
  matched against ``oracle_price`` of funding and market reads;
- ``next_funding_ts`` and ``rate``: the market's last funding settlement, matched against
  ``next_funding_ts`` / ``funding_rate`` / ``rate_8h`` of the reads;
- ``account``: the perp market account's AMM reserves, peg and funding fields, matched
  against the copy the shared DriftClient holds (accounts left behind the chain).

The library's own ``stale``/``age_s``/``slot`` fields are never consulted here: they are what
the suite tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from solders.pubkey import Pubkey

from driftshare.models import hourly_funding_rate, market_name, next_funding_ts
from driftshare.sim import Simulator
from driftshare.sim.store import Account

__all__ = ["ChainTruth", "account_fingerprint", "combined_lag"]

Clock = Callable[[], float]


def account_fingerprint(market: Any) -> tuple[int, ...]:
    """What identifies one version of a perp market account (repeg or funding settlement)."""
    amm = market.amm
    return (
        amm.base_asset_reserve,
        amm.quote_asset_reserve,
        amm.peg_multiplier,
        amm.last_funding_rate_ts,
        amm.last_funding_rate,
    )


class _History:
    """One quantity's current value and when each earlier value was last replaced."""

    __slots__ = ("current", "replaced_at")

    def __init__(self, value: Hashable) -> None:
        self.current = value
        self.replaced_at: dict[Hashable, float] = {}

    def write(self, value: Hashable, at: float) -> None:
        if value != self.current:
            self.replaced_at[self.current] = at
            self.replaced_at.pop(value, None)
            self.current = value

    def lag(self, value: Hashable, now: float) -> float | None:
        """Seconds ``value`` has been behind the chain; None if the chain never held it."""
        if value == self.current:
            return 0.0
        replaced = self.replaced_at.get(value)
        return None if replaced is None else max(0.0, now - replaced)

    def forget_before(self, cutoff: float) -> None:
        self.replaced_at = {v: t for v, t in self.replaced_at.items() if t >= cutoff}


class ChainTruth:
    """Every perp market's observable quantities on one simulator, tracked from its writes."""

    def __init__(self, sim: Simulator, clock: Clock = time.monotonic) -> None:
        world = sim.world
        if world is None:
            raise ValueError("the reliability suite needs a simulator with a world")
        self._world = world
        self._clock = clock
        self.indexes = world.perp_indexes()
        self.names = {market_name(world.perp_market(i)): i for i in self.indexes}
        self._perp_by_key = {world.perp_market_pubkey(i): i for i in self.indexes}
        self._perps_by_oracle: dict[Pubkey, list[int]] = {}
        for i in self.indexes:
            self._perps_by_oracle.setdefault(world.perp_market(i).amm.oracle, []).append(i)
        self._histories: dict[tuple[str, int], _History] = {}
        for i in self.indexes:
            for kind, value in self._perp_values(i):
                self._histories[kind, i] = _History(value)
            self._histories["oracle", i] = _History(self._oracle_value(i))
        self._unlisten = sim.store.listen(self._on_write)

    def close(self) -> None:
        """Stop following the simulator's writes."""
        self._unlisten()

    def _oracle_value(self, index: int) -> float | None:
        try:
            return self._world.oracle_price(index)
        except LookupError:
            return None

    def _perp_values(self, index: int) -> Iterable[tuple[str, Hashable]]:
        market = self._world.perp_market(index)
        hourly = hourly_funding_rate(market)
        yield "next_funding_ts", next_funding_ts(market)
        yield "rate", hourly
        yield "rate_8h", hourly * 8 * 100
        yield "account", account_fingerprint(market)

    def _on_write(self, pubkey: Pubkey, account: Account) -> None:
        now = self._clock()
        index = self._perp_by_key.get(pubkey)
        if index is not None:
            for kind, value in self._perp_values(index):
                self._histories[kind, index].write(value, now)
        for i in self._perps_by_oracle.get(pubkey, ()):
            self._histories["oracle", i].write(self._oracle_value(i), now)

    def lag(self, kind: str, index: int, value: Hashable, now: float) -> float | None:
        """Seconds ``value`` of quantity ``kind`` of market ``index`` has been behind."""
        history = self._histories.get((kind, index))
        return None if history is None else history.lag(value, now)

    def forget_before(self, cutoff: float) -> None:
        """Drop values replaced before ``cutoff`` (a long soak); they then count as unknown."""
        for history in self._histories.values():
            history.forget_before(cutoff)


def combined_lag(
    truths: Iterable[ChainTruth], parts: Iterable[tuple[str, int, Hashable]], now: float
) -> float:
    """How far behind a read made of ``parts`` is: the worst part, each part judged by the
    simulator (of several endpoints) whose chain it is closest to; ``inf`` if none held it."""
    worst = 0.0
    truths = list(truths)
    for kind, index, value in parts:
        lags = [lag for t in truths if (lag := t.lag(kind, index, value, now)) is not None]
        worst = max(worst, min(lags, default=math.inf))
    return worst
