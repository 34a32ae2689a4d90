"""The retry budget: retries as a share of calls, and none during an outage."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries allowed as a share of calls over a sliding window, and none during an outage.

    Hand-written: tenacity bounds the retries of one call, not of a client. The share is
    Finagle's RetryBudget (a retry storm can add at most ``ratio`` to the load); its floor of
    ``minimum`` retries per window lets a client with little traffic retry a blip. A retry is
    for a blip: once more than ``streak`` attempts in a row (of any calls) have failed, the
    provider is failing, not blipping, and nothing is retried until an answer is served, as
    gRPC's retry throttling stops retries while failures outweigh successes. Without that, a
    burst's first failed call alone spends the floor and the share banked before it.
    """

    def __init__(
        self,
        ratio: float,
        window_s: float,
        minimum: int,
        streak: int,
        clock: Callable[[], float],
    ) -> None:
        self._ratio = ratio
        self._window_s = window_s
        self._minimum = minimum
        self._streak = streak
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._failed_in_a_row = 0

    def note_call(self) -> None:
        self._calls.append(self._clock())

    def note_outcome(self, served: bool) -> None:
        """Count one attempt's end: served by the provider, or failed (retryably or not)."""
        self._failed_in_a_row = 0 if served else self._failed_in_a_row + 1

    def try_retry(self) -> bool:
        """Spend one retry if no outage is on and the window allows it."""
        if self._failed_in_a_row > self._streak:
            return False
        now = self._clock()
        for times in (self._calls, self._retries):
            while times and now - times[0] > self._window_s:
                times.popleft()
        # The retry itself counts: spending it must leave retries within the share.
        if len(self._retries) + 1 > max(self._minimum, self._ratio * len(self._calls)):
            return False
        self._retries.append(now)
        return True
