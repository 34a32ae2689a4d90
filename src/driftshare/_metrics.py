"""The project's own Prometheus registry and every metric driftshare exports."""

from __future__ import annotations

import collections
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "BLOCKHASH_AGE",
    "CACHE_HITS",
    "CACHE_MISSES",
    "CLIENT_INITIALIZATIONS",
    "CLIENT_REF_COUNT",
    "DATA_AGE_SECONDS",
    "FLEET_RECORDS_APPLIED",
    "FLEET_RECORDS_PUBLISHED",
    "FLEET_RECORDS_REJECTED",
    "FLEET_ROLE",
    "RATE_LIMITED",
    "REGISTRY",
    "RPC_ENDPOINT_ACTIVE",
    "RPC_ENDPOINT_SWITCHES",
    "RPC_ERRORS",
    "RPC_REQUESTS",
    "RPC_RETRIES",
    "SUBSCRIPTION_FAILURES",
    "TX_CONFIRM_SECONDS",
    "TX_RESULTS",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)
"""driftshare's own Prometheus registry (``driftshare.METRICS_REGISTRY``): every ``drift_*``
metric and nothing else; ``prometheus_client.generate_latest(REGISTRY)`` renders it."""

CLIENT_REF_COUNT = Gauge(
    "drift_client_ref_count",
    "References held on the shared DriftClient.",
    ["network"],
    registry=REGISTRY,
)
CLIENT_INITIALIZATIONS = Counter(
    "drift_client_initializations_total",
    "Shared DriftClients created and subscribed.",
    ["network"],
    registry=REGISTRY,
)


class _HitCounter(Collector):
    """``drift_cache_hits_total`` by kind, counted in a plain dict.

    A hit is the hottest path there is, and a Prometheus Counter's lock would be a tenth of
    its cost; a hit is counted on its event loop's thread, and the collector reads the dict.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "drift_cache_hits", "Market-data reads answered from cache.", labels=["kind"]
        )
        for kind, count in sorted(self.counts.items()):
            family.add_metric([kind], count)
        yield family


CACHE_HITS = _HitCounter()
REGISTRY.register(CACHE_HITS)
CACHE_MISSES = Counter(
    "drift_cache_misses_total",
    "Market-data reads that had to compute.",
    ["kind"],
    registry=REGISTRY,
)
RPC_REQUESTS = Counter(
    "drift_rpc_requests_total",
    "HTTP JSON-RPC requests sent upstream.",
    ["method", "status"],
    registry=REGISTRY,
)
RPC_ENDPOINT_ACTIVE = Gauge(
    "drift_rpc_endpoint_active",
    "1 for the RPC endpoint (redacted) the shared client uses, 0 for its other endpoints.",
    ["network", "endpoint"],
    registry=REGISTRY,
)
RPC_ENDPOINT_SWITCHES = Counter(
    "drift_rpc_endpoint_switches_total",
    "Fail-overs and returns between the configured RPC endpoints.",
    ["network"],
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "drift_rpc_errors_total",
    "RPC requests that failed after all retries.",
    ["method"],
    registry=REGISTRY,
)
RPC_RETRIES = Counter(
    "drift_rpc_retries_total",
    "RPC requests retried.",
    ["method"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "drift_rate_limited_total",
    "HTTP 429 answers received from the RPC provider.",
    registry=REGISTRY,
)
SUBSCRIPTION_FAILURES = Counter(
    "drift_subscription_failures_total",
    "WebSocket subscriptions that failed or stalled.",
    ["network"],
    registry=REGISTRY,
)
DATA_AGE_SECONDS = Gauge(
    "drift_data_age_seconds",
    "Seconds since a market's account and oracle were last known current (its data_age_s).",
    ["market"],
    registry=REGISTRY,
)

FLEET_ROLE = Gauge(
    "drift_fleet_role",
    "1 for this process's fleet role (leader, follower or standalone), else 0.",
    ["network", "role"],
    registry=REGISTRY,
)
FLEET_RECORDS_PUBLISHED = Counter(
    "drift_fleet_records_published_total",
    "Account records and confirmations this process published to the fleet as leader.",
    ["network"],
    registry=REGISTRY,
)
FLEET_RECORDS_APPLIED = Counter(
    "drift_fleet_records_applied_total",
    "Account records and confirmations this process applied from the fleet as follower.",
    ["network"],
    registry=REGISTRY,
)
FLEET_RECORDS_REJECTED = Counter(
    "drift_fleet_records_rejected_total",
    "Fleet records dropped: malformed, failing the DRIFT_SHARE_SECRET signature, or past the"
    " account limit.",
    ["network"],
    registry=REGISTRY,
)

TX_RESULTS = Counter(
    "drift_transactions_total",
    "Writes ended, by status: confirmed, failed or unknown.",
    ["status"],
    registry=REGISTRY,
)
TX_CONFIRM_SECONDS = Histogram(
    "drift_transaction_confirm_seconds",
    "Seconds from a write's first signing to its confirmation.",
    buckets=(0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
BLOCKHASH_AGE = Gauge(
    "drift_blockhash_age_seconds",
    "Age of the blockhash the last transaction was signed with (0 right after a refresh).",
    registry=REGISTRY,
)


def render() -> bytes:
    """Prometheus text exposition of the project's registry."""
    return generate_latest(REGISTRY)
