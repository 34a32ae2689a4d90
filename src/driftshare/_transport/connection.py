"""solana-py's ``AsyncClient`` with its HTTP traffic through a :class:`RateLimitedTransport`, and
the JSON-RPC batches solana-py cannot send."""

from __future__ import annotations

from typing import Any

import httpx
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment

from driftshare._transport.http import RateLimitedTransport

__all__ = ["install_transport", "make_async_client", "post_batch"]


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


async def post_batch(connection: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send a JSON-RPC batch through ``connection``'s HTTP session; the answers, by request:
    the one with each request's ``id``, or an error answer where the RPC gave none."""
    # Raw JSON-RPC through the client's session (so through driftshare's transport), as driftpy
    # does, because solana-py has no batch call and its typed calls drop the context slot.
    provider = connection._provider
    response = await provider.session.post(provider.endpoint_uri, json=batch)
    response.raise_for_status()
    answers = response.json()
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise ValueError("the RPC answered a batch with something other than a list of objects")
    # A batch's answers may come in any order.
    by_id = {answer.get("id"): answer for answer in answers}
    return [by_id.get(request.get("id"), {"error": {"message": "no answer"}}) for request in batch]
