"""Accounting of upstream RPC requests: by method and status, retries and final failures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from driftshare import _metrics as metrics

__all__ = ["RpcStats"]


class RpcStats:
    """Upstream RPC requests by method and status, retries, 429 answers and final failures.

    A status is the HTTP status code as text, ``"timeout"`` or ``"error"``. Every update
    also feeds the Prometheus metrics in :mod:`driftshare._metrics`.
    """

    def __init__(self) -> None:
        self._requests: Counter[tuple[str, str]] = Counter()
        self._retries: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self.rate_limited = 0
        self.calls = 0
        self.budget_exhausted = 0
        self.deadline_exceeded = 0

    def record_call(self) -> None:
        """Count one logical call (its first attempt; retries are not calls)."""
        self.calls += 1

    def record_request(self, method: str, status: str) -> None:
        """Count one request sent upstream and how it ended."""
        self._requests[method, status] += 1
        metrics.RPC_REQUESTS.labels(method=method, status=status).inc()
        if status == "429":
            self.rate_limited += 1
            metrics.RATE_LIMITED.inc()

    def record_retry(self, method: str) -> None:
        """Count one retry of ``method``."""
        self._retries[method] += 1
        metrics.RPC_RETRIES.labels(method=method).inc()

    def record_failure(self, method: str) -> None:
        """Count one request of ``method`` that failed for good."""
        self._failures[method] += 1
        metrics.RPC_ERRORS.labels(method=method).inc()

    @property
    def requests(self) -> int:
        """Requests sent upstream, retries included."""
        return sum(self._requests.values())

    def snapshot(self) -> dict[str, Any]:
        """Totals and per-method counts as plain, JSON-ready data."""
        by_status: Counter[str] = Counter()
        methods: dict[str, dict[str, Any]] = {}
        for (method, status), count in sorted(self._requests.items()):
            by_status[status] += count
            entry = methods.setdefault(method, _empty_method_entry())
            entry["requests"] += count
            entry["by_status"][status] = count
        for method in self._retries.keys() | self._failures.keys():
            entry = methods.setdefault(method, _empty_method_entry())
            entry["retries"] = self._retries[method]
            entry["failures"] = self._failures[method]
        return {
            "calls": self.calls,
            "requests": self.requests,
            "amplification": round(self.requests / self.calls, 4) if self.calls else None,
            "budget_exhausted": self.budget_exhausted,
            "deadline_exceeded": self.deadline_exceeded,
            "retries": sum(self._retries.values()),
            "rate_limited": self.rate_limited,
            "failures": sum(self._failures.values()),
            "by_status": dict(sorted(by_status.items())),
            "methods": dict(sorted(methods.items())),
        }


def _empty_method_entry() -> dict[str, Any]:
    return {"requests": 0, "by_status": {}, "retries": 0, "failures": 0}
