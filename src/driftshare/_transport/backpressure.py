"""The provider's pushback: a shared cool-down and an adaptive sending rate."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Backpressure"]


class Backpressure:
    """The provider's pushback, shared by every call: a cool-down and an adaptive rate.

    A 429 (or any ``Retry-After``) holds every new attempt until the cool-down ends. A 429
    also halves the rate (once per cut: answers to requests sent before the cut do not cut
    again, as TCP congestion control), which then creeps back by ``rps / 20`` every
    ``step_s`` seconds without a 429.
    """

    def __init__(self, rps: float, clock: Callable[[], float], step_s: float = 2.0) -> None:
        self._rps = rps
        self._floor = rps / 16
        self.clock = clock
        self._step_s = step_s
        self._rate = rps
        self._since = clock()
        self._last_cut = -math.inf
        self.cooldown_until = -math.inf

    def rate(self) -> float:
        """The rate to send at now, crept back since the last change."""
        if self._rate < self._rps:
            steps = math.floor((self.clock() - self._since) / self._step_s)
            if steps > 0:
                self._rate = min(self._rps, self._rate + steps * self._rps / 20)
                self._since += steps * self._step_s
        return self._rate

    def push_back(self, delay: float, *, rate_limited: bool, sent_at: float) -> None:
        now = self.clock()
        self.cooldown_until = max(self.cooldown_until, now + delay)
        if rate_limited and sent_at >= self._last_cut:
            self._rate = max(self._floor, self.rate() / 2)
            self._since = self._last_cut = now
