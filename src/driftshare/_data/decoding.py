"""Decoding one kind of market account without ever raising: a bad account keeps its last
good value and is listed unavailable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["TolerantDecoder"]

log = logging.getLogger(__name__)


class TolerantDecoder:
    """Decode one kind of market account; never raise.

    An account that turns undecodable keeps its last good value (a market account starts
    with its own address, so it is still recognised while those 40 bytes are intact) and is
    listed in ``unavailable``; one not recognised gives None, and the caller, who knows
    which market it is, calls :meth:`unreadable`. ``last_raw`` is the account data of the
    latest call, for the tap.
    """

    def __init__(self, program: Any, unavailable: dict[int, str] | None) -> None:
        self._decode: Callable[[bytes], Any] = program.coder.accounts.decode
        self._last: dict[bytes, Any] = {}
        self._unavailable = unavailable
        self.last_raw = b""

    def __call__(self, data: bytes) -> Any:
        self.last_raw = data
        key = bytes(data[8:40])
        try:
            decoded = self._decode(data)
        except Exception as exc:  # a bad account must not end the subscription it arrived on
            last = self._last.get(key)
            if last is not None and self._unavailable is not None:
                if last.market_index not in self._unavailable:
                    log.warning(
                        "market %s became undecodable: %r; serving it as stale",
                        last.market_index,
                        exc,
                    )
                self._unavailable[last.market_index] = f"cannot decode market account: {exc!r}"
            return last
        self._last[key] = decoded
        if self._unavailable is not None:
            self._unavailable.pop(decoded.market_index, None)
        return decoded

    def unreadable(self, market_index: int) -> None:
        """Report market ``market_index`` unavailable: its newest account could not be read."""
        if self._unavailable is not None and market_index not in self._unavailable:
            log.warning("market %s became unreadable; serving it as stale", market_index)
            self._unavailable[market_index] = "cannot decode market account"
