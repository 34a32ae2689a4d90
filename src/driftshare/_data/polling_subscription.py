"""Subscribing a DriftClient by polling: one batched loader that survives a failed load, and
confirms the unchanged accounts in each answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from driftpy.accounts.bulk_account_loader import BufferAndSlot, BulkAccountLoader
from driftpy.accounts.oracle import get_oracle_decode_fn
from driftpy.accounts.polling import PollingDriftClientAccountSubscriber
from driftpy.accounts.types import DataAndSlot
from driftpy.oracles.oracle_id import get_oracle_id
from solders.pubkey import Pubkey

from driftshare._data.decoding import TolerantDecoder
from driftshare._data.discovery import Discovery
from driftshare._data.freshness import multiple_accounts
from driftshare._data.ledger import AccountRecord
from driftshare._data.tap import AccountTap

__all__ = ["PollingSubscriber", "ResilientLoader"]

log = logging.getLogger(__name__)


class _PollConfirmations:
    """A BulkAccountLoader's connection that reads each answer for the tap first.

    driftpy's loader reports only changed accounts; an unchanged one in an answer is
    confirmed current at the answer's slot here, so polling needs no extra reads.
    """

    def __init__(self, connection: Any, tap: AccountTap) -> None:
        self._connection = connection
        self._tap = tap

    @property
    def _provider(self) -> _PollConfirmations:
        return self  # driftpy posts through connection._provider.session

    @property
    def session(self) -> _PollConfirmations:
        return self

    @property
    def endpoint_uri(self) -> str:
        uri: str = self._connection._provider.endpoint_uri
        return uri

    async def post(self, url: str, **kwargs: Any) -> Any:
        response = await self._connection._provider.session.post(url, **kwargs)
        try:
            self._confirm(kwargs.get("json"), response.json())
        except Exception as exc:  # untrusted answer: driftpy's own parsing reports it
            log.debug("cannot read a polling answer for confirmations: %r", exc)
        return response

    def _confirm(self, requests: Any, answers: Any) -> None:
        keys_by_id = {r["id"]: r["params"][0] for r in requests}
        for answer in answers:
            keys = keys_by_id.get(answer.get("id"))
            if keys is None:
                continue
            try:
                slot, accounts = multiple_accounts(keys, answer)
            except ValueError:
                continue  # an error answer: driftpy's own parsing reports it
            for pubkey, data in accounts:
                self._tap.confirm(pubkey, data, slot)


class ResilientLoader(BulkAccountLoader):  # type: ignore[misc]
    """driftpy's BulkAccountLoader whose polling loop survives a failed load.

    driftpy's loop ends on the first exception (an RPC error, a malformed answer), which
    would silently stop every polled account for good.
    """

    failures = 0
    task: asyncio.Task[None] | None
    connection: Any
    tap: AccountTap | None = None
    """Told every changed account's raw bytes and slot, and every unchanged one's slot."""

    def attach(self, tap: AccountTap) -> None:
        """Report every account read to ``tap``: changes with their bytes, the rest as
        confirmations."""
        self.tap = tap
        self.connection = _PollConfirmations(self.connection, tap)

    def handle_callbacks(self, account_to_load: Any, buffer: bytes | None, slot: int) -> None:
        super().handle_callbacks(account_to_load, buffer, slot)
        if buffer is not None and self.tap is not None:
            self.tap.record(str(account_to_load.pubkey), buffer, slot)

    def inject(self, record: AccountRecord) -> None:
        """Apply ``record`` as if a poll had read it."""
        account = self.accounts_to_load.get(record.pubkey)
        current = self.buffer_and_slot_map.get(record.pubkey)
        if account is None or (current is not None and current.slot > record.slot):
            return
        self.buffer_and_slot_map[record.pubkey] = BufferAndSlot(record.slot, record.data)
        self.handle_callbacks(account, record.data, record.slot)

    def _start_loading(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._poll_forever(), name="driftshare-poll")

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.load()
            except Exception as exc:  # keep polling; the next round may succeed
                self.failures += 1
                log.debug("polling round failed: %r", exc)
            await asyncio.sleep(self.frequency)


def _ignore(buffer: bytes | None, slot: int) -> None:
    """A watched account's loader callback: its reader is the tap."""


class PollingSubscriber(PollingDriftClientAccountSubscriber):  # type: ignore[misc]
    """driftpy's polling subscriber over one BulkAccountLoader, without per-oracle waits."""

    def __init__(self, program: Any, loader: ResilientLoader, discovery: Discovery) -> None:
        super().__init__(
            program,
            loader,
            discovery.perp_indexes,
            discovery.spot_indexes,
            discovery.oracle_infos(),
            False,
        )
        self._decoder = TolerantDecoder(program, discovery.unavailable)
        self._watched: dict[str, int] = {}
        """Watched account → its loader callback id."""

    def inject(self, record: AccountRecord) -> None:
        """Apply ``record`` as if a poll had read it (it reaches the tap too)."""
        self.bulk_account_loader.inject(record)

    async def watch_account(self, record: AccountRecord) -> None:
        """Poll ``record``'s account too, in the same batched reads, starting from
        ``record``; its updates reach the tap, which must watch it."""
        if record.pubkey in self._watched:
            return
        loader = self.bulk_account_loader
        loader.buffer_and_slot_map[record.pubkey] = BufferAndSlot(record.slot, record.data)
        callback = loader.add_account(Pubkey.from_string(record.pubkey), _ignore)
        self._watched[record.pubkey] = callback

    async def unwatch_account(self, pubkey: str) -> None:
        """Stop polling an account :meth:`watch_account` added."""
        callback = self._watched.pop(pubkey, None)
        if callback is not None:
            self.bulk_account_loader.remove_account(Pubkey.from_string(pubkey), callback)
            self.bulk_account_loader.buffer_and_slot_map.pop(pubkey, None)

    async def unsubscribe(self) -> None:
        await super().unsubscribe()
        # The loader stops polling only once no account is left in it.
        for pubkey in list(self._watched):
            await self.unwatch_account(pubkey)

    async def subscribe(self) -> None:
        if len(self.callbacks) != 0:
            return
        await self.update_accounts_to_poll()
        await self.bulk_account_loader.load()
        if self.state is None:
            raise RuntimeError("state account not found while polling")
        await self._set_perp_oracle_map()
        await self._set_spot_oracle_map()

    async def add_oracle(self, oracle: Pubkey, oracle_source: Any) -> bool:
        # driftpy waits up to three poll intervals per oracle here; one load after
        # registering every account serves them all.
        oracle_id = get_oracle_id(oracle, oracle_source)
        if oracle == Pubkey.default() or oracle_id in self.oracle_callbacks:
            return True
        decode = get_oracle_decode_fn(oracle_source)

        def on_oracle(buffer: bytes | None, slot: int) -> None:
            if buffer is None:
                return
            try:
                self.oracle[oracle_id] = DataAndSlot(slot, decode(buffer))
            except Exception as exc:
                log.debug("cannot decode oracle %s: %r", oracle, exc)

        self.oracle_callbacks[oracle_id] = self.bulk_account_loader.add_account(oracle, on_oracle)
        return True

    def _get_perp_market_callback(self, market_index: int) -> Callable[[bytes | None, int], None]:
        def on_market(buffer: bytes | None, slot: int) -> None:
            if buffer is None:
                return
            decoded = self._decoder(buffer)
            if decoded is None:
                self._decoder.unreadable(market_index)
            else:
                self.perp_markets[market_index] = DataAndSlot(slot, decoded)

        return on_market
