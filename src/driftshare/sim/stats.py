"""What the simulator has served, as a dict and as Prometheus metrics of its own registry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["TX_OUTCOMES", "GrpcStats", "SimStats", "TxOutcome"]

TxOutcome = Literal["received", "refused", "landed", "failed", "dropped", "duplicate"]
TX_OUTCOMES: tuple[TxOutcome, ...] = (
    "received",
    "refused",
    "landed",
    "failed",
    "dropped",
    "duplicate",
)
"""What became of a transaction sent: every one ``received`` ends as exactly one of the others
(once it lands or not, after a landing delay): ``refused`` (answered with an error: signature,
preflight), ``landed`` (succeeded), ``failed`` (landed with an error, only its fee charged),
``dropped`` (answered with its signature, never landed) or ``duplicate`` (a copy of one
already landed or waiting to)."""


@dataclass
class GrpcStats:
    """What the Yellowstone Geyser server has served; calls are counted by the client's
    address, so one HTTP/2 connection carrying many calls counts once."""

    calls_by_peer: Counter[str] = field(default_factory=Counter)
    """Calls in progress, by client address and port (one key per connection)."""
    peers_seen: set[str] = field(default_factory=set)
    streams_open: int = 0
    streams_total: int = 0
    filters_active: int = 0
    """Accounts named by the open streams' filters, summed over the streams."""
    calls: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """Calls refused before they started, by gRPC status (a fault or a bad token)."""
    ended: Counter[str] = field(default_factory=Counter)
    """Streams the server ended, by gRPC status (a drop fault, a bad request, a stop)."""
    updates: Counter[str] = field(default_factory=Counter)
    """Stream messages sent, by kind: account, slot, ping, pong."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": {
                "open": sum(1 for n in self.calls_by_peer.values() if n > 0),
                "total": len(self.peers_seen),
            },
            "streams": {
                "open": self.streams_open,
                "total": self.streams_total,
                "accounts": self.filters_active,
            },
            "calls": {"total": sum(self.calls.values()), "by_method": dict(self.calls)},
            "refused": dict(self.refused),
            "ended": dict(self.ended),
            "updates": {"total": sum(self.updates.values()), "by_kind": dict(self.updates)},
        }


class SimStats:
    """Counters the server bumps as it works; read with :meth:`snapshot` or :meth:`render`."""

    def __init__(self, slot: Callable[[], int]) -> None:
        self._slot = slot
        self.http_requests: Counter[str] = Counter()
        """HTTP JSON-RPC requests received, by client (rate-limited and failed ones too)."""
        self.calls: Counter[str] = Counter()
        """JSON-RPC calls answered, by method (a batch counts each call)."""
        self.calls_by_client: dict[str, Counter[str]] = {}
        """The same, by client, then by method."""
        self.http_status: Counter[int] = Counter()
        self.rate_limited = 0
        """429 answers of any origin: rate limit, WebSocket cap or fault."""
        self.ws_open = 0
        self.ws_total = 0
        self.ws_refused = 0
        self.subscriptions_active = 0
        self.subscriptions: Counter[str] = Counter()
        self.notifications: Counter[str] = Counter()
        self.grpc = GrpcStats()
        self.transactions: dict[str, Counter[str]] = {}
        """Transactions by fee payer, then by :data:`TX_OUTCOMES`."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def count_calls(self, client: str, methods: Iterable[str]) -> None:
        """JSON-RPC calls of ``client`` answered."""
        methods = list(methods)
        self.calls.update(methods)
        self.calls_by_client.setdefault(client, Counter()).update(methods)

    def count_tx(self, payer: str, outcome: TxOutcome) -> None:
        self.transactions.setdefault(payer, Counter())[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        """Every counter as plain JSON-able values."""
        return {
            "slot": self._slot(),
            "http_requests": {
                "total": sum(self.http_requests.values()),
                "by_client": dict(self.http_requests),
            },
            "calls": {
                "total": sum(self.calls.values()),
                "by_method": dict(self.calls),
                "by_client": {c: dict(m) for c, m in self.calls_by_client.items()},
            },
            "http_status": {str(k): v for k, v in sorted(self.http_status.items())},
            "rate_limited": self.rate_limited,
            "ws_connections": {
                "open": self.ws_open,
                "total": self.ws_total,
                "refused": self.ws_refused,
            },
            "subscriptions": {
                "active": self.subscriptions_active,
                "total": sum(self.subscriptions.values()),
                "by_method": dict(self.subscriptions),
            },
            "notifications": {
                "total": sum(self.notifications.values()),
                "by_method": dict(self.notifications),
            },
            "grpc": self.grpc.snapshot(),
            "transactions": {
                **{
                    outcome: sum(c[outcome] for c in self.transactions.values())
                    for outcome in TX_OUTCOMES
                },
                "by_signer": {
                    payer: {outcome: counts[outcome] for outcome in TX_OUTCOMES}
                    for payer, counts in self.transactions.items()
                },
            },
        }

    def render(self) -> bytes:
        """Prometheus text exposition of the simulator's own registry."""
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, stats: SimStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        slot = GaugeMetricFamily("sim_slot", "Current slot of the simulated chain.")
        slot.add_metric([], s._slot())
        yield slot
        yield _labelled(
            CounterMetricFamily,
            "sim_http_requests",
            "HTTP JSON-RPC requests received.",
            "client",
            s.http_requests,
        )
        yield _labelled(
            CounterMetricFamily, "sim_rpc_calls", "JSON-RPC calls answered.", "method", s.calls
        )
        yield _labelled(
            CounterMetricFamily,
            "sim_http_responses",
            "HTTP answers sent.",
            "status",
            {str(k): v for k, v in s.http_status.items()},
        )
        yield CounterMetricFamily("sim_rate_limited", "HTTP 429 answers sent.", s.rate_limited)
        yield GaugeMetricFamily("sim_ws_connections_open", "Open WebSockets.", s.ws_open)
        yield CounterMetricFamily("sim_ws_connections", "WebSockets accepted.", s.ws_total)
        yield CounterMetricFamily(
            "sim_ws_refused", "WebSocket upgrades refused over the cap.", s.ws_refused
        )
        yield GaugeMetricFamily(
            "sim_subscriptions_active", "Active subscriptions.", s.subscriptions_active
        )
        yield _labelled(
            CounterMetricFamily,
            "sim_subscriptions",
            "Subscriptions made.",
            "method",
            s.subscriptions,
        )
        transactions = CounterMetricFamily(
            "sim_transactions", "Transactions sent, by outcome.", labels=["outcome"]
        )
        for outcome in TX_OUTCOMES:
            transactions.add_metric([outcome], sum(c[outcome] for c in s.transactions.values()))
        yield transactions
        yield _labelled(
            CounterMetricFamily,
            "sim_notifications",
            "WebSocket notifications sent.",
            "method",
            s.notifications,
        )
        grpc = s.grpc.snapshot()
        yield GaugeMetricFamily(
            "sim_grpc_connections_open",
            "gRPC connections with a call in progress.",
            grpc["connections"]["open"],
        )
        yield GaugeMetricFamily(
            "sim_grpc_streams_open", "Open Geyser Subscribe streams.", s.grpc.streams_open
        )
        yield CounterMetricFamily(
            "sim_grpc_streams", "Geyser Subscribe streams accepted.", s.grpc.streams_total
        )
        yield _labelled(
            CounterMetricFamily, "sim_grpc_calls", "gRPC calls received.", "method", s.grpc.calls
        )
        yield _labelled(
            CounterMetricFamily,
            "sim_grpc_refused",
            "gRPC calls refused.",
            "status",
            s.grpc.refused,
        )
        yield _labelled(
            CounterMetricFamily,
            "sim_grpc_updates",
            "Geyser stream messages sent.",
            "kind",
            s.grpc.updates,
        )


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Counter[str] | dict[str, int],
) -> Metric:
    metric = family(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric
