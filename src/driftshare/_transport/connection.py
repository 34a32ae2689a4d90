"""solana-py's ``AsyncClient`` with its HTTP traffic through a :class:`RateLimitedTransport`."""

from __future__ import annotations

from typing import Any

import httpx
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment

from driftshare._transport.http import RateLimitedTransport

__all__ = ["install_transport", "make_async_client"]


def install_transport(connection: AsyncClient, transport: RateLimitedTransport) -> None:
    """Send every HTTP request of a solana-py ``AsyncClient`` through ``transport``.

    Replaces the provider's ``httpx.AsyncClient`` session, which driftpy also uses directly
    (``connection._provider.session.post``), keeping its timeout and headers. Call it
    before the client has been used: the old session is dropped, not closed.
    """
    provider: Any = getattr(connection, "_provider", None)
    session = getattr(provider, "session", None)
    if not isinstance(session, httpx.AsyncClient):
        raise TypeError(
            "install_transport needs a solana.rpc.async_api.AsyncClient with an HTTP "
            f"provider, got {type(connection).__name__}"
        )
    provider.session = httpx.AsyncClient(
        transport=transport, timeout=session.timeout, headers=session.headers
    )


def make_async_client(
    url: str, transport: RateLimitedTransport, commitment: Commitment | None = None
) -> AsyncClient:
    """A solana-py ``AsyncClient`` for ``url`` whose HTTP traffic goes through ``transport``."""
    client = AsyncClient(url, commitment=commitment, timeout=transport.timeout_s)
    install_transport(client, transport)
    return client
