"""The retry policy: which outcomes are retried, and how long a ``Retry-After`` asks for."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import RetryCallState

__all__ = [
    "NOT_SENT_ERRORS",
    "full_jitter",
    "is_retryable",
    "last_outcome",
    "retry_after_seconds",
    "should_retry",
]

_RETRYABLE = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Errors raised before a byte of the request left: the only ones after which a
# non-idempotent call may be sent again.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAX_BACKOFF_EXPONENT = 62


def full_jitter(rng: random.Random, retry: int, base: float, cap: float) -> float:
    """The wait before retry number ``retry`` (from 1): uniform up to ``base`` doubled per
    retry, capped at ``cap`` (AWS's "full jitter")."""
    exponent = min(retry - 1, _MAX_BACKOFF_EXPONENT)
    return rng.uniform(0.0, min(cap, base * 2.0**exponent))


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or HTTP date), if valid."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def is_retryable(response: httpx.Response) -> bool:
    """Whether the provider's answer asks for another try: a 429 or a 5xx."""
    return response.status_code == 429 or 500 <= response.status_code <= 599


def should_retry(idempotent: bool, retry_state: RetryCallState) -> bool:
    """Whether a call's last attempt is worth another; one that is not ``idempotent`` only
    if it never left."""
    outcome = retry_state.outcome
    assert outcome is not None
    if outcome.failed:
        errors = _RETRYABLE if idempotent else NOT_SENT_ERRORS
        return isinstance(outcome.exception(), errors)
    # A non-idempotent call that got an answer was sent: never again.
    return idempotent and is_retryable(outcome.result())


def last_outcome(retry_state: RetryCallState) -> httpx.Response:
    """Out of retries: the last response, or the last exception raised, unwrapped."""
    outcome = retry_state.outcome
    assert outcome is not None
    result: httpx.Response = outcome.result()
    return result
