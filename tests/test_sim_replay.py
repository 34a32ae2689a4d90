"""Replaying real mainnet accounts into the simulated world."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from driftpy.accounts.oracle import decode_oracle
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.constants.numeric_constants import PRICE_PRECISION
from solders.pubkey import Pubkey

import mainnet_fixtures as mainnet
from conftest import FakeClock
from driftshare.sim import _codec
from driftshare.sim.oracles import PYTH_PROGRAM_ID
from driftshare.sim.replay import load_account_files
from driftshare.sim.store import AccountStore
from driftshare.sim.world import World

FIXTURES = mainnet.DIR
START = 1_750_000_000.0


def make_world(markets: int = 30) -> tuple[World, FakeClock]:
    clock = FakeClock(START)
    return World(AccountStore(), seed=3, markets=markets, clock=clock), clock


def fixture(path: Path) -> tuple[Pubkey, bytes, dict[str, Any]]:
    doc = json.loads(path.read_text())
    return Pubkey.from_string(doc["pubkey"]), base64.b64decode(doc["account"]["data"][0]), doc


def write_account(path: Path, pubkey: Pubkey, data: bytes, owner: Pubkey) -> Path:
    doc = {
        "pubkey": str(pubkey),
        "account": {
            "lamports": _codec.rent_exempt_lamports(len(data)),
            "data": [base64.b64encode(data).decode(), "base64"],
            "owner": str(owner),
            "executable": False,
            "rentEpoch": 18446744073709551615,
            "space": len(data),
        },
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("name", mainnet.FILES)
def test_fixture_is_served_byte_for_byte_and_becomes_ground_truth(name: str) -> None:
    path = mainnet.path(name)
    pubkey, raw, doc = fixture(path)
    world, _ = make_world()
    assert world.replay([path]) == [pubkey]

    account = world.store.get(pubkey)
    assert account is not None
    assert account.data == raw
    assert account.frozen
    assert account.owner == Pubkey.from_string(doc["account"]["owner"])
    assert account.lamports == doc["account"]["lamports"]

    market = _codec.decode(raw)
    assert _codec.encode("PerpMarket", market) == raw
    assert world.perp_market(market.market_index) == market
    assert world.perp_market_pubkey(market.market_index) == pubkey

    oracle = world.store.get(market.amm.oracle)
    assert oracle is not None, "every replayed market has an oracle account"
    decoded = decode_oracle(oracle.data, market.amm.oracle_source)
    assert decoded.price == round(world.oracle_price(market.market_index) * PRICE_PRECISION)
    assert decoded.price == market.amm.historical_oracle_data.last_oracle_price
    state = world.state()
    assert state.number_of_markets == max(30, market.market_index + 1)
    assert _codec.decode(world.store.get(world.state_pubkey).data) == state  # type: ignore[union-attr]


def test_replayed_accounts_are_never_evolved() -> None:
    world, clock = make_world()
    replayed = world.replay([FIXTURES])
    before = {pubkey: world.store.get(pubkey) for pubkey in replayed}
    written: list[Pubkey] = []
    world.store.listen(lambda pubkey, _account: written.append(pubkey))
    for _ in range(5):
        clock.now += 61
        world.step()
    assert not set(written) & set(replayed)
    assert {pubkey: world.store.get(pubkey) for pubkey in replayed} == before
    assert set(written), "the rest of the world still evolves"


def test_folder_replay_keeps_the_last_file_per_address() -> None:
    loaded = load_account_files([FIXTURES])
    assert [str(pubkey) for pubkey, _ in loaded] == [
        mainnet.document(name)["pubkey"] for name in mainnet.FILES
    ]
    world, _ = make_world(markets=40)
    world.replay([FIXTURES])
    last: dict[Pubkey, bytes] = {}
    for name in mainnet.FILES:
        pubkey, raw, _doc = fixture(mainnet.path(name))
        last[pubkey] = raw
    for pubkey, raw in last.items():
        account = world.store.get(pubkey)
        assert account is not None
        assert account.data == raw
        index = _codec.decode(raw).market_index
        assert world.perp_market(index) == _codec.decode(raw)


def test_absent_oracle_is_synthesized_in_its_source_format() -> None:
    btc = mainnet.path("perp-001-BTC-PERP-2024-02-20.json")
    _pubkey, raw, _doc = fixture(btc)
    market = _codec.decode(raw)
    world, _ = make_world()
    assert world.store.get(market.amm.oracle) is None
    world.replay([btc])
    oracle = world.store.get(market.amm.oracle)
    assert oracle is not None
    assert oracle.owner == PYTH_PROGRAM_ID
    assert not oracle.frozen
    price = decode_oracle(oracle.data, market.amm.oracle_source).price
    assert price == market.amm.historical_oracle_data.last_oracle_price

    prelaunch = mainnet.path("perp-026-TRUMP-WIN-2024-PREDICT-2024-07-29.json")
    _pubkey, raw, _doc = fixture(prelaunch)
    bet = _codec.decode(raw)
    world.replay([prelaunch])
    oracle = world.store.get(bet.amm.oracle)
    assert oracle is not None
    assert oracle.owner == DRIFT_PROGRAM_ID
    assert decode_oracle(oracle.data, bet.amm.oracle_source).price == (
        bet.amm.historical_oracle_data.last_oracle_price
    )


def test_synthesized_oracle_keeps_moving_while_the_market_stays() -> None:
    btc = mainnet.path("perp-001-BTC-PERP-2024-01-10.json")
    pubkey, raw, _doc = fixture(btc)
    world, clock = make_world()
    world.replay([btc])
    index = _codec.decode(raw).market_index
    first = world.oracle_price(index)
    clock.now += 0.4
    world.step()
    assert world.oracle_price(index) != first
    world.set_oracle_price(index, 50_000.0)
    assert world.oracle_price(index) == 50_000.0
    assert world.store.get(pubkey).data == raw  # type: ignore[union-attr]


def test_replayed_oracle_is_frozen_and_priced_from_its_bytes(tmp_path: Path) -> None:
    source_world, _ = make_world()
    source_world.set_oracle_price(0, 123.456)
    sol_oracle = source_world.perp_market(0).amm.oracle
    data = source_world.store.get(sol_oracle).data  # type: ignore[union-attr]
    file = write_account(tmp_path / "sol-oracle.json", sol_oracle, data, DRIFT_PROGRAM_ID)

    world, clock = make_world()
    world.replay([file])
    clock.now += 0.4
    world.step()
    assert world.store.get(sol_oracle).data == data  # type: ignore[union-attr]
    assert world.oracle_price(0) == 123.456
    assert world.spot_oracle_price(1) == 123.456
    with pytest.raises(ValueError, match="replayed"):
        world.set_oracle_price(0, 100.0)


def test_undecodable_perp_market_is_served_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pubkey, raw, _doc = fixture(mainnet.path("perp-002-ETH-PERP-2026-03-09.json"))
    broken = raw[:100]
    file = write_account(tmp_path / "broken.json", pubkey, broken, DRIFT_PROGRAM_ID)
    world, clock = make_world()
    with caplog.at_level(logging.WARNING, logger="driftshare.sim.replay"):
        world.replay([file])
        for _ in range(3):
            clock.now += 61
            world.step()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(pubkey) in warnings[0].getMessage()
    assert world.store.get(pubkey).data == broken  # type: ignore[union-attr]
    assert 2 not in world.perp_indexes()
    with pytest.raises(KeyError):
        world.perp_market(2)


def _doc(**account: object) -> dict[str, object]:
    base: dict[str, object] = {
        "lamports": 1,
        "data": [base64.b64encode(b"abc").decode(), "base64"],
        "owner": str(DRIFT_PROGRAM_ID),
        "executable": False,
        "rentEpoch": 0,
    }
    base.update(account)
    return {"pubkey": str(DRIFT_PROGRAM_ID), "account": base}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a `solana account"),
        (json.dumps([1, 2]), "expected an object"),
        (json.dumps({"pubkey": "x", "account": {}}), "pubkey is not a valid public key"),
        (json.dumps(_doc(owner=5)), "account.owner must be a base58 string"),
        (json.dumps(_doc(data=["@@@", "base64"])), "not valid base64"),
        (json.dumps(_doc(data=["abc", "base58"])), "encoding 'base58' is not supported"),
        (json.dumps(_doc(data="abc")), "account.data must be"),
        (json.dumps(_doc(lamports=-1)), "account.lamports must be a non-negative integer"),
        (json.dumps(_doc(executable="no")), "account.executable must be true or false"),
        (json.dumps(_doc(space=4)), "account.space is 4 but data has 3 bytes"),
    ],
)
def test_bad_file_is_a_value_error_naming_it(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "bad.json"
    file.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_account_files([file])
    assert str(file) in str(info.value)
    world, _ = make_world(markets=1)
    with pytest.raises(ValueError, match=re.escape(str(file))):
        world.replay([file])


def test_missing_path_and_empty_folder_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file or folder"):
        load_account_files([tmp_path / "nope.json"])
    with pytest.raises(ValueError, match=r"folder has no \.json account files"):
        load_account_files([tmp_path])


def test_a_good_file_loads_as_a_frozen_account(tmp_path: Path) -> None:
    file = tmp_path / "ok.json"
    file.write_text(json.dumps(_doc(space=3)))
    [(pubkey, account)] = load_account_files([file])
    assert pubkey == DRIFT_PROGRAM_ID
    assert (account.data, account.lamports, account.rent_epoch) == (b"abc", 1, 0)
    assert account.frozen


def test_undecodable_replayed_oracle_leaves_its_markets_as_they_were(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world, clock = make_world()
    sol = world.perp_market(0)
    file = write_account(tmp_path / "junk.json", sol.amm.oracle, b"junk", DRIFT_PROGRAM_ID)
    with caplog.at_level(logging.WARNING, logger="driftshare.sim.replay"):
        world.replay([file])
    assert any(str(sol.amm.oracle) in r.getMessage() for r in caplog.records)
    for _ in range(3):
        clock.now += 61
        world.step()
    assert world.perp_market(0) == sol
    with pytest.raises(LookupError):
        world.oracle_price(0)
    assert world.oracle_price(2) > 0
