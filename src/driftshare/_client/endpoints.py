"""Which of several RPC endpoints to use: leave one on sustained failure, return when healthy.

The rules follow the DLOB server's stream selector (switch after 3 s without a sign of life)
and eRPC's failover (the preferred upstream comes back once it has proven healthy again), with
hysteresis both ways so a flaky endpoint does not make the client flap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["EndpointSelector"]


@dataclass(slots=True)
class _Health:
    last_ok: float
    failures: int = 0
    """Failures reported since the last success."""
    last_failure: float | None = None
    healthy_since: float | None = None
    """When the current run of successes began; None while the latest report is a failure."""


class EndpointSelector:
    """The active endpoint among ``urls``, listed in order of preference.

    Feed it outcomes with :meth:`report` and ask :meth:`choose` which endpoint to use now.
    The active endpoint is *failing* once its latest ``min_failures`` reports or more are
    failures and nothing has succeeded for ``fail_after_s`` seconds; the selector then moves
    to the most preferred endpoint that has not failed within ``recover_after_s``. It moves
    back to a more preferred endpoint once that one has answered without a failure for
    ``recover_after_s`` seconds. A newly chosen endpoint is given ``fail_after_s`` before
    it can be left in turn. Pure: no I/O, time from ``clock``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        fail_after_s: float = 3.0,
        recover_after_s: float = 10.0,
        min_failures: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("EndpointSelector needs at least one URL")
        if len(set(urls)) != len(urls):
            raise ValueError("EndpointSelector needs distinct URLs")
        self.urls: tuple[str, ...] = tuple(urls)
        self._fail_after_s = fail_after_s
        self.recover_after_s = recover_after_s
        """How long a more preferred endpoint must stay healthy before the selector returns."""
        self._min_failures = min_failures
        self._clock = clock
        now = clock()
        self._health = {url: _Health(last_ok=now, healthy_since=now) for url in self.urls}
        self._active = 0
        self.switches = 0

    @property
    def active(self) -> str:
        """The endpoint in use."""
        return self.urls[self._active]

    def preferred(self) -> tuple[str, ...]:
        """The endpoints preferred to the active one: those worth probing for a return."""
        return self.urls[: self._active]

    def report(self, url: str, ok: bool) -> None:
        """Record that ``url`` served a request (or showed new data), or failed to."""
        health = self._health.get(url)
        if health is None:
            return
        now = self._clock()
        if ok:
            health.last_ok = now
            health.failures = 0
            if health.healthy_since is None:
                health.healthy_since = now
        else:
            health.failures += 1
            health.last_failure = now
            health.healthy_since = None

    def choose(self) -> str:
        """The endpoint to use now, switching if the rules say so."""
        now = self._clock()
        for index in range(self._active):
            since = self._health[self.urls[index]].healthy_since
            if since is not None and now - since >= self.recover_after_s:
                return self._switch(index, now)
        if len(self.urls) > 1 and self._failing(self._health[self.active], now):
            others = [i for i in range(len(self.urls)) if i != self._active]
            rested = [i for i in others if not self._failed_lately(self.urls[i], now)]
            return self._switch((rested or others)[0], now)
        return self.active

    def _failing(self, health: _Health, now: float) -> bool:
        return health.failures >= self._min_failures and now - health.last_ok >= self._fail_after_s

    def _failed_lately(self, url: str, now: float) -> bool:
        last = self._health[url].last_failure
        return last is not None and now - last < self.recover_after_s

    def _switch(self, index: int, now: float) -> str:
        self._active = index
        self.switches += 1
        # The grace period: a new endpoint is not judged on what came before it.
        health = self._health[self.active]
        health.last_ok = max(health.last_ok, now)
        health.failures = 0
        return self.active
