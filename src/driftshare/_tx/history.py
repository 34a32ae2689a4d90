"""TxHistory: the last writes a transaction path ended, in memory, public data only."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from driftshare.models import TxResult, TxStatus

__all__ = ["TxHistory", "TxRecord"]

HISTORY_SIZE = 200
"""Writes kept: enough for the dashboard and ``/api/orders``, bounded in memory."""


class TxRecord(BaseModel):
    """One ended write: what it was, whose, and how it ended (no key material)."""

    model_config = ConfigDict(frozen=True)

    time: float
    """Unix time the write ended."""
    kind: str
    """The adapter method (``place_perp_order``, ``cancel_order``...) or ``driftpy`` for a
    driftpy call on a client sending through the path."""
    authority: str | None
    sub_account_id: int | None
    market: str | None
    status: TxStatus
    signature: str | None
    slot: int | None
    error: str | None
    user_order_id: int | None
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready data."""
        return self.model_dump()


class TxHistory:
    """The last ``size`` ended writes, newest first when read."""

    def __init__(self, size: int = HISTORY_SIZE, clock: Callable[[], float] = time.time) -> None:
        self._records: deque[TxRecord] = deque(maxlen=size)
        self._clock = clock

    def add(
        self,
        kind: str,
        result: TxResult,
        *,
        authority: str | None = None,
        sub_account_id: int | None = None,
        market: str | None = None,
    ) -> None:
        """Record ``result``, ended now."""
        self._records.append(
            TxRecord(
                time=self._clock(),
                kind=kind,
                authority=authority,
                sub_account_id=sub_account_id,
                market=market,
                status=result.status,
                signature=result.signature,
                slot=result.slot,
                error=result.error,
                user_order_id=result.user_order_id,
                elapsed_s=result.elapsed_s,
            )
        )

    def records(self) -> list[TxRecord]:
        """Every kept write, newest first."""
        return list(reversed(self._records))
