"""The simulated Drift world, checked with driftpy's own decoders and math."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from driftpy.accounts.oracle import decode_oracle, get_oracle_decode_fn
from driftpy.addresses import (
    get_perp_market_public_key,
    get_spot_market_public_key,
    get_state_public_key,
)
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.constants.numeric_constants import FUNDING_RATE_BUFFER, PRICE_PRECISION
from driftpy.constants.perp_markets import mainnet_perp_market_configs
from driftpy.constants.spot_markets import mainnet_spot_market_configs
from driftpy.math.amm import calculate_bid_ask_price, calculate_price
from solders.pubkey import Pubkey

from conftest import FakeClock
from driftshare.models import market_data_from_market
from driftshare.sim import _codec
from driftshare.sim.oracles import PYTH_RECEIVER_PROGRAM_ID
from driftshare.sim.store import Account, AccountStore
from driftshare.sim.world import World

START = 1_750_000_000.0


def make_world(
    *, seed: int = 0, markets: int = 30, period: float = 60.0
) -> tuple[World, FakeClock]:
    clock = FakeClock(START)
    world = World(AccountStore(), seed=seed, markets=markets, funding_period_s=period, clock=clock)
    return world, clock


@pytest.fixture(scope="module")
def big() -> World:
    world, clock = make_world(markets=100)
    for _ in range(3):
        clock.now += 0.4
        world.step()
    return world


def stored(world: World, pubkey: Pubkey) -> Account:
    account = world.store.get(pubkey)
    assert account is not None, f"{pubkey} not in store"
    return account


def name_of(market: object) -> str:
    return bytes(market.name).decode().rstrip()  # type: ignore[attr-defined]


def mark_price(amm: object) -> int:
    return int(calculate_price(amm.base_asset_reserve, amm.quote_asset_reserve, amm.peg_multiplier))  # type: ignore[attr-defined]


def is_prediction(world: World, index: int) -> bool:
    return type(world.perp_market(index).contract_type).__name__ == "Prediction"


def priced(world: World, index: int, now: float) -> tuple[float, float]:
    """driftshare's mark and oracle price of market ``index`` from its live oracle account."""
    market = world.perp_market(index)
    oracle = decode_oracle(stored(world, market.amm.oracle).data, market.amm.oracle_source)
    data = market_data_from_market(market, oracle_price_data=oracle, now=now)
    return data.mark_price, data.oracle_price


def test_every_drift_account_decodes_to_the_ground_truth(big: World) -> None:
    for index in big.perp_indexes():
        pubkey = big.perp_market_pubkey(index)
        assert pubkey == get_perp_market_public_key(DRIFT_PROGRAM_ID, index)
        account = stored(big, pubkey)
        assert account.owner == DRIFT_PROGRAM_ID
        assert account.lamports == _codec.rent_exempt_lamports(len(account.data))
        assert _codec.decode(account.data) == big.perp_market(index)
    for index in big.spot_indexes():
        market = big.spot_market(index)
        assert market.pubkey == get_spot_market_public_key(DRIFT_PROGRAM_ID, index)
        assert _codec.decode(stored(big, market.pubkey).data) == market
    state = _codec.decode(stored(big, get_state_public_key(DRIFT_PROGRAM_ID)).data)
    assert state == big.state()
    assert state.number_of_markets == 100
    assert state.number_of_spot_markets == 2


def test_markets_follow_mainnet_configs_then_invent_sim_markets(big: World) -> None:
    assert big.perp_indexes() == list(range(100))
    for index in big.perp_indexes():
        market = big.perp_market(index)
        assert market.market_index == index
        if index < len(mainnet_perp_market_configs):
            config = mainnet_perp_market_configs[index]
            assert name_of(market) == config.symbol
            assert market.amm.oracle == config.oracle
            assert type(market.amm.oracle_source).__name__ == type(config.oracle_source).__name__
        else:
            assert name_of(market) == f"SIM{index}-PERP"
    sim_oracles = {
        big.perp_market(i).amm.oracle for i in range(len(mainnet_perp_market_configs), 100)
    }
    real_oracles = {c.oracle for c in mainnet_perp_market_configs}
    assert len(sim_oracles) == 100 - len(mainnet_perp_market_configs)
    assert not sim_oracles & real_oracles
    for index in (0, 1):
        config = mainnet_spot_market_configs[index]
        spot = big.spot_market(index)
        assert (name_of(spot), spot.mint, spot.oracle) == (
            config.symbol,
            config.mint,
            config.oracle,
        )


def test_driftpy_decodes_every_oracle_at_the_ground_truth_price(big: World) -> None:
    owners: Counter[str] = Counter()
    for index in big.perp_indexes():
        amm = big.perp_market(index).amm
        account = stored(big, amm.oracle)
        expected = round(big.oracle_price(index) * PRICE_PRECISION)
        assert decode_oracle(account.data, amm.oracle_source).price == expected, index
        assert get_oracle_decode_fn(amm.oracle_source)(account.data).price == expected, index
        owners[str(account.owner)] += 1
    for index in big.spot_indexes():
        spot = big.spot_market(index)
        decoded = decode_oracle(stored(big, spot.oracle).data, spot.oracle_source)
        assert decoded.price == round(big.spot_oracle_price(index) * PRICE_PRECISION)
    assert set(owners) == {str(DRIFT_PROGRAM_ID), str(PYTH_RECEIVER_PROGRAM_ID)}


def test_shared_oracle_reads_in_each_markets_unit(big: World) -> None:
    pump, kpump = 75, 81
    assert big.perp_market(pump).amm.oracle == big.perp_market(kpump).amm.oracle
    assert big.oracle_price(kpump) == pytest.approx(big.oracle_price(pump) * 1_000, rel=1e-5)
    assert big.spot_market(1).oracle == big.perp_market(0).amm.oracle
    assert big.spot_oracle_price(1) == big.oracle_price(0)


def test_prices_are_near_real_ones(big: World) -> None:
    assert big.oracle_price(0) == pytest.approx(150, rel=0.1)
    assert big.oracle_price(1) == pytest.approx(95_000, rel=0.1)
    assert big.oracle_price(2) == pytest.approx(3_300, rel=0.1)
    assert big.spot_oracle_price(0) == pytest.approx(1.0, abs=0.001)


def test_amm_mark_and_quotes_sit_near_the_oracle(big: World) -> None:
    for index in big.perp_indexes():
        amm = big.perp_market(index).amm
        oracle = decode_oracle(stored(big, amm.oracle).data, amm.oracle_source)
        assert mark_price(amm) == pytest.approx(oracle.price, rel=0.005), index
        bid, ask = calculate_bid_ask_price(amm, oracle)
        assert bid < ask, index
        assert bid == pytest.approx(oracle.price, rel=0.02), index
        assert ask == pytest.approx(oracle.price, rel=0.02), index
        assert amm.base_asset_amount_long > 0 > amm.base_asset_amount_short
        assert amm.base_asset_amount_with_amm == (
            amm.base_asset_amount_long + amm.base_asset_amount_short
        )
        assert amm.historical_oracle_data.last_oracle_price_twap > 0


def test_initial_funding_is_consistent_and_has_both_signs() -> None:
    world, _ = make_world()
    signs: Counter[int] = Counter()
    for index in world.perp_indexes():
        amm = world.perp_market(index).amm
        assert amm.last_funding_oracle_twap == amm.historical_oracle_data.last_oracle_price_twap
        assert amm.last_funding_rate_long == amm.last_funding_rate == amm.last_funding_rate_short
        assert START - 60 < amm.last_funding_rate_ts <= START
        assert amm.funding_period == 60
        signs[(amm.last_funding_rate > 0) - (amm.last_funding_rate < 0)] += 1
    assert signs[1] > 0
    assert signs[-1] > 0


def test_status_variety_like_mainnet(big: World) -> None:
    statuses = Counter(type(big.perp_market(i).status).__name__ for i in big.perp_indexes())
    assert statuses["Active"] > len(big.perp_indexes()) // 2
    assert statuses["ReduceOnly"] >= 1
    assert statuses["Settlement"] + statuses["Delisted"] >= 1
    small, _ = make_world()
    small_statuses = {type(small.perp_market(i).status).__name__ for i in small.perp_indexes()}
    assert {"Active", "ReduceOnly", "Settlement"} <= small_statuses


def test_funding_settles_once_the_period_has_passed() -> None:
    world, clock = make_world()
    before = {i: world.perp_market(i) for i in world.perp_indexes()}
    clock.now += 0.4
    world.step()
    for index, market in before.items():
        assert world.perp_market(index).amm.last_funding_rate_ts == market.amm.last_funding_rate_ts

    clock.now += 60
    world.step()
    now = int(clock.now)
    signs: Counter[int] = Counter()
    for index, old in before.items():
        market = world.perp_market(index)
        amm, old_amm = market.amm, old.amm
        if type(market.status).__name__ in ("Settlement", "Delisted"):
            assert amm.last_funding_rate_ts == old_amm.last_funding_rate_ts
            assert amm.cumulative_funding_rate_long == old_amm.cumulative_funding_rate_long
            continue
        assert amm.last_funding_rate_ts == now
        assert market.next_funding_rate_record_id == old.next_funding_rate_record_id + 1
        rate = amm.last_funding_rate
        assert amm.last_funding_rate_long == rate == amm.last_funding_rate_short
        assert amm.cumulative_funding_rate_long == old_amm.cumulative_funding_rate_long + rate
        assert amm.cumulative_funding_rate_short == old_amm.cumulative_funding_rate_short + rate
        oracle_twap = amm.historical_oracle_data.last_oracle_price_twap
        assert amm.last_funding_oracle_twap == oracle_twap
        mark_twap = (amm.last_bid_price_twap + amm.last_ask_price_twap) // 2
        spread = mark_twap - oracle_twap
        # Drift's hourly rate: the twap spread over 24 periods a day, in 1e9 precision,
        # rounded toward zero.
        magnitude = abs(spread) * FUNDING_RATE_BUFFER // 24
        assert rate == (magnitude if spread >= 0 else -magnitude)
        assert abs(rate) / (oracle_twap * FUNDING_RATE_BUFFER) < 0.001
        signs[(rate > 0) - (rate < 0)] += 1
    assert signs[1] > 0
    assert signs[-1] > 0


def test_step_advances_the_slot_and_writes_every_oracle_through_the_store() -> None:
    world, clock = make_world()
    written: list[Pubkey] = []
    world.store.listen(lambda pubkey, _account: written.append(pubkey))
    slot = world.store.slot
    clock.now += 0.4
    world.step()
    assert world.store.slot == slot + 1
    oracles = {world.perp_market(i).amm.oracle for i in world.perp_indexes()}
    assert oracles <= set(written)
    markets = {world.perp_market_pubkey(i) for i in world.perp_indexes()}
    assert len(markets & set(written)) < len(markets), "unchanged markets are not re-encoded"
    for index in world.perp_indexes():
        amm = world.perp_market(index).amm
        oracle = decode_oracle(stored(world, amm.oracle).data, amm.oracle_source)
        assert oracle.slot == world.store.slot


def test_same_seed_same_bytes_different_seed_different_bytes() -> None:
    def run(seed: int) -> dict[Pubkey, bytes]:
        world, clock = make_world(seed=seed)
        for _ in range(200):
            clock.now += 0.4
            world.step()
        return {pubkey: account.data for pubkey, account in world.store.items()}

    first = run(7)
    assert run(7) == first
    other = run(8)
    assert other.keys() == first.keys()
    assert other != first


def test_set_oracle_price_moves_the_oracle_and_repegs_its_markets() -> None:
    world, _ = make_world()
    written: list[Pubkey] = []
    world.store.listen(lambda pubkey, _account: written.append(pubkey))
    world.set_oracle_price(0, 200.0)
    amm = world.perp_market(0).amm
    assert world.oracle_price(0) == 200.0
    assert decode_oracle(stored(world, amm.oracle).data, amm.oracle_source).price == 200_000_000
    assert mark_price(amm) == pytest.approx(200_000_000, rel=0.005)
    assert amm.historical_oracle_data.last_oracle_price == 200_000_000
    assert world.spot_oracle_price(1) == 200.0
    assert world.spot_market(1).historical_oracle_data.last_oracle_price == 200_000_000
    assert {amm.oracle, world.perp_market_pubkey(0), world.spot_market(1).pubkey} <= set(written)
    assert _codec.decode(stored(world, world.perp_market_pubkey(0)).data) == world.perp_market(0)


def test_set_oracle_price_in_a_1k_market_unit() -> None:
    world, _ = make_world(markets=82)
    world.set_oracle_price(81, 6.0)
    assert world.oracle_price(81) == 6.0
    assert world.oracle_price(75) == pytest.approx(0.006)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"markets": 0}, "markets must be 1..65535"),
        ({"markets": 70_000}, "markets must be 1..65535"),
        ({"markets": "30"}, "markets must be an integer"),
        ({"funding_period_s": 0.0}, "funding_period_s must be > 0"),
        ({"funding_period_s": float("nan")}, "funding_period_s must be > 0"),
    ],
)
def test_bad_construction_is_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        World(AccountStore(), **kwargs)  # type: ignore[arg-type]


def test_bad_lookups_and_prices_are_clear_errors() -> None:
    world, _ = make_world(markets=3)
    with pytest.raises(KeyError, match="no perp market 3"):
        world.perp_market(3)
    with pytest.raises(KeyError, match="no perp market 9"):
        world.set_oracle_price(9, 1.0)
    with pytest.raises(KeyError, match="no spot market 5"):
        world.spot_market(5)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="price must be"):
            world.set_oracle_price(0, bad)


# (87, 0) is where market 57 was built with longs and shorts netting to exactly 0; seeds 17 and
# 39 do the same to markets of a 130-market world.
@pytest.mark.parametrize(("markets", "seed"), [(87, 0), (130, 17), (130, 39)])
def test_driftshare_prices_every_market_near_its_oracle(markets: int, seed: int) -> None:
    world, clock = make_world(seed=seed, markets=markets)
    settled = {i: world.perp_market(i).amm.last_funding_rate_ts for i in world.perp_indexes()}
    rng = random.Random(seed)
    for step in range(60):
        clock.now += 1.5
        world.step()
        if step % 10 == 0:
            index = rng.choice(world.perp_indexes())
            if is_prediction(world, index):
                world.set_oracle_price(index, rng.uniform(0.1, 0.9))
            else:
                world.set_oracle_price(index, world.oracle_price(index) * rng.uniform(0.8, 1.25))
    assert any(world.perp_market(i).amm.last_funding_rate_ts > ts for i, ts in settled.items()), (
        "no funding was settled"
    )
    for index in world.perp_indexes():
        mark, oracle = priced(world, index, clock.now)
        # A prediction oracle moves 0.2 cents a slot, a wide spread at 5 to 10 cents.
        band = 0.1 if is_prediction(world, index) else 0.02
        assert mark == pytest.approx(oracle, rel=band), index


def test_every_market_at_the_smallest_price_still_prices() -> None:
    world, clock = make_world()
    amms = [world.perp_market(i).amm for i in world.perp_indexes()]
    assert any(amm.base_asset_reserve > amm.quote_asset_reserve for amm in amms), "no discount"
    for index in world.perp_indexes():
        world.set_oracle_price(index, 1e-6)
    clock.now += 0.4
    world.step()
    for index in world.perp_indexes():
        assert mark_price(world.perp_market(index).amm) == 1, index
        mark, oracle = priced(world, index, clock.now)
        assert oracle == 1e-6
        assert 0 <= mark <= 2e-6, index


def test_prediction_oracles_walk_no_further_out_than_the_amms_quotes() -> None:
    world, clock = make_world(markets=40)
    low, high = [i for i in world.perp_indexes() if is_prediction(world, i)][:2]
    world.set_oracle_price(low, 0.051)
    world.set_oracle_price(high, 0.99)
    lows: list[float] = []
    highs: list[float] = []
    for _ in range(100):
        clock.now += 0.4
        world.step()
        lows.append(world.oracle_price(low))
        highs.append(world.oracle_price(high))
    assert min(lows) == 0.05
    assert max(highs) <= 0.99
    assert min(highs) < 0.99


def test_a_replayed_oracle_at_price_zero_leaves_its_markets_as_they_were(tmp_path: Path) -> None:
    world, clock = make_world(markets=3)
    pubkey = world.perp_market(0).amm.oracle
    account = stored(world, pubkey)
    oracle = _codec.decode(account.data)
    data = _codec.encode(type(oracle).__name__, dataclasses.replace(oracle, price=0))
    doc = {
        "pubkey": str(pubkey),
        "account": {
            "lamports": account.lamports,
            "data": [base64.b64encode(data).decode(), "base64"],
            "owner": str(account.owner),
            "executable": False,
            "rentEpoch": 0,
            "space": len(data),
        },
    }
    (tmp_path / "oracle.json").write_text(json.dumps(doc))
    before = world.perp_market(0)
    world.replay([tmp_path / "oracle.json"])
    assert world.oracle_price(0) == 0.0
    clock.now += 61
    world.step()
    assert world.perp_market(0) == before
