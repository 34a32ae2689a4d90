"""The library's default RPC is Solana's public endpoint, and a failure against the RPC shows
in ``stats()`` from the first request, not once the retries are spent."""

from __future__ import annotations

import pytest

from driftshare.manager import DriftClientManager


def test_without_an_rpc_url_the_library_uses_solanas_public_endpoint(
    monkeypatch: pytest.MonkeyPatch, manager_settings: None
) -> None:
    monkeypatch.delenv("DRIFT_RPC_URL", raising=False)
    monkeypatch.delenv("DRIFT_NETWORK", raising=False)
    assert DriftClientManager.stats()["rpc_url"] == "https://api.mainnet-beta.solana.com"


async def test_the_first_failed_request_is_in_stats_at_once(
    manager_settings: None, closed_port_url: str
) -> None:
    DriftClientManager.configure(rpc_url=closed_port_url, health_interval_s=3600)
    try:
        assert await DriftClientManager.get_client() is None
        stats = DriftClientManager.stats()  # no wait: the retries go on in the background
        assert stats["init_failures"] == 0
        assert stats["last_error"] is not None
        assert f"to {closed_port_url}: no answer" in stats["last_error"]
    finally:
        await DriftClientManager.shutdown()
