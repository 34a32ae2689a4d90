"""The mainnet fixtures are in the repository, complete and unchanged since they were copied."""

from __future__ import annotations

import pytest

import mainnet_fixtures as mainnet


def test_every_listed_fixture_is_present_and_nothing_else() -> None:
    assert len(mainnet.FILES) == 11
    assert sorted(p.name for p in mainnet.DIR.glob("*.json")) == list(mainnet.FILES)


@pytest.mark.parametrize("name", mainnet.FILES)
def test_fixture_bytes_match_their_recorded_digest(name: str) -> None:
    assert mainnet.digest(name) == mainnet.SHA256[name]
    assert len(mainnet.raw(name)) == 1216


def test_a_missing_fixture_is_an_error_not_a_skip() -> None:
    with pytest.raises(FileNotFoundError, match="perp-999"):
        mainnet.path("perp-999-NOPE-PERP.json")
