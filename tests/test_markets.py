"""Symbol ↔ index resolution from driftpy's configs and on-chain market names."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from driftpy.constants.perp_markets import mainnet_perp_market_configs
from hypothesis import given
from hypothesis import strategies as st

import mainnet_fixtures as mainnet
from driftshare._data.markets import MarketResolver, UnknownMarketError, normalize_symbol
from driftshare.models import decode_perp_market


def _fixture_markets() -> list[Any]:
    return [decode_perp_market(mainnet.raw(name)) for name in mainnet.FILES]


@pytest.mark.parametrize("text", ["SOL-PERP", "sol-perp", "SOL", " sol ", "0", 0, "Sol-Perp\t"])
def test_sol_spellings_resolve(text: str | int) -> None:
    assert MarketResolver("mainnet").resolve(text) == 0


def test_every_config_symbol_and_base_resolves() -> None:
    resolver = MarketResolver("mainnet")
    for config in mainnet_perp_market_configs:
        assert resolver.resolve(config.symbol) == config.market_index
        assert resolver.resolve(config.base_asset_symbol.lower()) == config.market_index
        assert resolver.symbol(config.market_index) == config.symbol.upper()


def test_devnet_uses_devnet_configs() -> None:
    resolver = MarketResolver("devnet")
    assert resolver.resolve("BTC") == 1
    assert len(resolver.indexes) < len(MarketResolver("mainnet").indexes)


def test_onchain_names_take_precedence_over_configs() -> None:
    resolver = MarketResolver("mainnet")
    assert resolver.symbol(26) == "TAO-PERP"
    resolver.update(_fixture_markets())
    # The fixture's index 26 is named differently on chain than in driftpy's config.
    assert resolver.symbol(26) == "TRUMP-WIN-2024-PREDICT"
    assert resolver.resolve("trump-win-2024-predict") == 26
    assert resolver.resolve("TAO") is None
    assert resolver.resolve("TRUMP-WIN-2024-BET") == 36
    assert resolver.symbol(4) == "1MBONK-PERP"
    assert resolver.resolve("1mbonk") == 4


def test_a_resolution_remembered_before_an_update_does_not_outlive_it() -> None:
    resolver = MarketResolver("mainnet")
    assert resolver.resolve("TAO") == 26
    assert resolver.known("TAO") == 26
    resolver.update(_fixture_markets())  # index 26 is another market on chain
    assert resolver.known("TAO") is None
    assert resolver.resolve("TAO") is None


@pytest.mark.parametrize("alias", [True, 1.0])
def test_values_equal_to_a_resolved_index_are_still_rejected(alias: Any) -> None:
    resolver = MarketResolver("mainnet")
    assert resolver.resolve(1) == 1
    assert resolver.known(alias) is None
    with pytest.raises(TypeError, match="symbol or an index"):
        resolver.resolve(alias)


def test_update_adds_markets_unknown_to_the_configs() -> None:
    resolver = MarketResolver("devnet")
    markets = _fixture_markets()
    kamala = next(m for m in markets if m.market_index == 37)
    assert resolver.resolve(37) is None
    resolver.update([kamala])
    assert resolver.resolve(37) == 37
    assert resolver.resolve("KAMALA-POPULAR-VOTE-2024-BET") == 37
    assert resolver.symbol(37) == "KAMALA-POPULAR-VOTE-2024-BET"
    assert 37 in resolver.indexes


def test_unknown_symbol_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    resolver = MarketResolver("mainnet")
    with caplog.at_level(logging.WARNING, logger="driftshare._data.markets"):
        for _ in range(3):
            assert resolver.resolve("NOPE-PERP") is None
        assert resolver.resolve(" nope-perp ") is None
        assert resolver.resolve(10_000) is None
        assert resolver.resolve(10_000) is None
        assert resolver.resolve("-1") is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "'NOPE-PERP'" in messages[0]


def test_unknown_index_symbol_is_a_clear_error() -> None:
    with pytest.raises(UnknownMarketError, match="index 9999"):
        MarketResolver("mainnet").symbol(9999)


@pytest.mark.parametrize("bad", [None, 1.5, True, b"SOL"])
def test_non_symbol_input_is_rejected(bad: Any) -> None:
    with pytest.raises(TypeError, match="symbol or an index"):
        MarketResolver("mainnet").resolve(bad)


def test_unknown_network_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown network"):
        MarketResolver("testnet")  # type: ignore[arg-type]


@given(st.text(alphabet=st.characters(categories=("L", "N", "Pd", "Zs")), max_size=30))
def test_normalize_symbol_is_idempotent_and_blank_free(text: str) -> None:
    normalized = normalize_symbol(text)
    assert normalize_symbol(normalized) == normalized
    assert not any(c.isspace() for c in normalized)
    assert normalized == normalized.upper()
