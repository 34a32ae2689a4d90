"""The one HTTP transport for JSON-RPC traffic: client-side rate limit, retries and accounting.

:class:`RateLimitedTransport` (:mod:`.http`) is an httpx transport; each request leaves within
a :class:`SharedLimits` (:mod:`.limits`: the rate limiter, the provider's pushback in
:mod:`.backpressure` and the retry budget in :mod:`.budget`), is retried by the policy in
:mod:`.retry` as its JSON-RPC method allows (:mod:`.jsonrpc`), and is counted in an
:class:`RpcStats` (:mod:`.stats`). :func:`install_transport` puts it under solana-py's client.
"""

from driftshare._transport.connection import install_transport, make_async_client, post_batch
from driftshare._transport.http import RateLimitedTransport, tls_context
from driftshare._transport.jsonrpc import NON_IDEMPOTENT_METHODS
from driftshare._transport.limits import SharedLimits
from driftshare._transport.retry import retry_after_seconds
from driftshare._transport.stats import RpcStats

__all__ = [
    "NON_IDEMPOTENT_METHODS",
    "RateLimitedTransport",
    "RpcStats",
    "SharedLimits",
    "install_transport",
    "make_async_client",
    "post_batch",
    "retry_after_seconds",
    "tls_context",
]
