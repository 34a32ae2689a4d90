"""Confirmer: knowing every subscribed account is current, and repairing the ones that are not.

A WebSocket notification confirms an account at its slot, but an account that has not
changed sends none, and one whose notification was lost (a dropped or silent socket) looks
the same. As the TS SDK's WebSocket subscriber V2 does, accounts without a recent
confirmation are read with batched ``getMultipleAccounts`` (at most 100 keys a call, several
calls in one JSON-RPC batch): equal bytes confirm the account at the answer's slot, differing
bytes are a missed update, applied to the subscriber like a notification.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, get_args

from driftshare._data.ledger import AccountKind, AccountLedger, AccountRecord

__all__ = ["KEYS_PER_CALL", "Confirmer", "multiple_accounts"]

log = logging.getLogger(__name__)

KEYS_PER_CALL = 100
"""getMultipleAccounts' limit."""
_CALLS_PER_BATCH = 10
_RESUBSCRIBE_GRACE_S = 0.5
"""After a reconnect, the wait before re-reading, so the new subscription is in place first."""
_MISSED_ROUNDS_FOR_STALL = 2
_KINDS: tuple[AccountKind, ...] = get_args(AccountKind)

PostBatch = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
"""Sends a JSON-RPC batch; the answers in the order of the requests (see ``post_batch``)."""


def multiple_accounts(keys: Sequence[str], answer: Any) -> tuple[int, list[tuple[str, bytes]]]:
    """The slot of a base64 ``getMultipleAccounts`` answer for ``keys``, and the address and
    data of each account it holds; accounts missing or garbled in it are left out.

    ValueError for an answer without a result (an error, or not one at all).
    """
    try:
        result = answer["result"]
        slot = int(result["context"]["slot"])
        values = list(result["value"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"bad getMultipleAccounts answer: {str(answer)[:200]}") from None
    accounts: list[tuple[str, bytes]] = []
    for pubkey, value in zip(keys, values, strict=False):
        if value is None:
            continue  # gone from the chain
        try:
            data = base64.b64decode(value["data"][0], validate=True)
        except (KeyError, TypeError, IndexError, binascii.Error):
            log.debug("bad account data for %s in a getMultipleAccounts answer", pubkey)
            continue
        accounts.append((pubkey, data))
    return slot, accounts


class Confirmer:
    """Confirms the ledger's accounts by batched reads every ``stale_after_s / 2``.

    An account is read when it has not been confirmed for a quarter of ``stale_after_s``,
    so none goes unconfirmed for more than about ``0.75 * stale_after_s`` while reads
    succeed. :meth:`check_all` (after a reconnect) reads every account at once.
    """

    def __init__(
        self,
        ledger: AccountLedger,
        *,
        pubkeys: Callable[[], Sequence[str]],
        post: PostBatch,
        inject: Callable[[AccountRecord], None],
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._pubkeys = pubkeys
        self._post = post
        self._inject = inject
        self.period_s = stale_after_s / 2
        self._clock = clock
        self._wake = asyncio.Event()
        self._full = False
        self.requests = 0
        """getMultipleAccounts calls sent."""
        self.rounds = 0
        self.failures = 0
        self.confirmed = 0
        self.repaired: Counter[AccountKind] = Counter()
        self.last_success_at: float | None = None
        self.last_answer_at: float | None = None
        """When upstream last answered a read (a round with nothing to read is no answer)."""
        self._missed_rounds: Counter[AccountKind] = Counter()

    def check_all(self) -> None:
        """Read every account soon (a WebSocket reconnected: notifications may be lost)."""
        self._full = True
        self._wake.set()

    def resubscribed(self) -> None:
        """Forget missed updates: the subscriptions they counted against were replaced."""
        self._missed_rounds.clear()

    def stalled(self) -> set[AccountKind]:
        """Subscriptions that missed updates in consecutive periodic rounds."""
        return {k for k, n in self._missed_rounds.items() if n >= _MISSED_ROUNDS_FOR_STALL}

    async def run(self) -> None:
        """Confirm forever (cancel to stop); a failed round is counted and retried next period."""
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.period_s):
                    await self._wake.wait()
            self._wake.clear()
            full, self._full = self._full, False
            if full:
                await asyncio.sleep(_RESUBSCRIBE_GRACE_S)
            try:
                await self.check(full=full)
            except Exception as exc:  # an RPC error or a malformed answer: the next round retries
                self.failures += 1
                log.debug("confirmation round failed: %r", exc)

    async def check(self, *, full: bool = False) -> None:
        """Read the accounts due for confirmation (every one if ``full``) and settle them."""
        due_before = self._clock() - self.period_s / 2
        keys = []
        for pubkey in self._pubkeys():
            entry = self._ledger.get(pubkey)
            if entry is not None and (full or entry.confirmed_at <= due_before):
                keys.append(pubkey)
        self.rounds += 1
        missed: Counter[AccountKind] = Counter()
        calls = [keys[i : i + KEYS_PER_CALL] for i in range(0, len(keys), KEYS_PER_CALL)]
        for start in range(0, len(calls), _CALLS_PER_BATCH):
            batch = calls[start : start + _CALLS_PER_BATCH]
            self.requests += len(batch)
            answers = await self._post(
                [
                    {
                        "jsonrpc": "2.0",
                        "id": number,
                        "method": "getMultipleAccounts",
                        "params": [chunk, {"encoding": "base64", "commitment": "confirmed"}],
                    }
                    for number, chunk in enumerate(batch)
                ]
            )
            for chunk, answer in zip(batch, answers, strict=True):
                self._settle(chunk, answer, missed)
            self.last_answer_at = self._clock()
        self.last_success_at = self._clock()
        if not full:
            for kind in _KINDS:
                self._missed_rounds[kind] = self._missed_rounds[kind] + 1 if missed[kind] else 0

    def _settle(
        self, chunk: list[str], answer: dict[str, Any], missed: Counter[AccountKind]
    ) -> None:
        slot, accounts = multiple_accounts(chunk, answer)
        self._ledger.observe_chain_slot(slot)
        for pubkey, data in accounts:
            entry = self._ledger.get(pubkey)
            if entry is None:
                continue
            record = entry.record
            if data == record.data:
                if self._ledger.confirm(pubkey, slot):
                    self.confirmed += 1
            elif slot > record.slot or self._ledger.impossible(record.slot):
                missed[record.kind] += 1
                self.repaired[record.kind] += 1
                repair = AccountRecord(pubkey, record.kind, slot, data, record.oracle_source)
                try:
                    self._inject(repair)
                except Exception as exc:  # undecodable: the account stays unconfirmed
                    log.debug("cannot apply %s at slot %d: %r", pubkey, slot, exc)

    def snapshot(self) -> dict[str, Any]:
        """Counters for stats(): requests, rounds, failures, confirmations and repairs."""
        return {
            "requests": self.requests,
            "rounds": self.rounds,
            "failures": self.failures,
            "confirmed": self.confirmed,
            "repaired": dict(self.repaired),
            "stalled": sorted(self.stalled()),
        }
