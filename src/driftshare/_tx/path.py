"""TransactionPath: the process's one way to sign, send and confirm transactions.

One per shared client (kept across its reconnects, like its rate limits): one blockhash kept
fresh, one priority-fee estimate, lookup tables fetched once, every pending signature confirmed
by ``signatureSubscribe`` on the shared client's WebSocket, with one batched status poll as the
safety net (and the only way where there is no such socket), all through the shared client's
rate-limited transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from solders import compute_budget
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from driftshare._tasks import cancel_all
from driftshare._tx.blockhash import Blockhash, BlockhashKeeper
from driftshare._tx.fees import PriorityFees
from driftshare._tx.history import TxHistory
from driftshare._tx.lookup_tables import LookupTables
from driftshare._tx.order_ids import UserOrderIds
from driftshare._tx.rpc import TxRpc
from driftshare._tx.sender import Build, TransactionSender
from driftshare._tx.signature_feed import SignatureFeed, SocketHost
from driftshare._tx.statuses import SignatureWatcher
from driftshare.config import Settings
from driftshare.models import TxResult

__all__ = ["TransactionPath"]


class TransactionPath:
    """Signs, sends and confirms writes for every engine of a process.

    The background work (the status poll) starts with the first write while ``active()`` and
    ends at :meth:`aclose`; a process that never writes sends none of it.
    ``fee_accounts`` names the accounts whose recent fees set the priority fee (the markets
    orders write to); ``socket()`` is the subscriber whose WebSocket carries the signature
    subscriptions now (None: there is none, every signature is polled).
    """

    def __init__(
        self,
        rpc: TxRpc,
        settings: Settings,
        *,
        fee_accounts: Callable[[], Sequence[str]] = tuple,
        active: Callable[[], bool] = lambda: True,
        socket: Callable[[], SocketHost | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fees = PriorityFees(
            rpc,
            interval_s=settings.tx_fee_interval_s,
            percentile=settings.tx_fee_percentile,
            cap=settings.tx_max_priority_fee,
            accounts=fee_accounts,
            clock=clock,
        )
        self.keeper = BlockhashKeeper(
            rpc,
            interval_s=settings.tx_blockhash_interval_s,
            max_age_s=settings.tx_blockhash_max_age_s,
            riders=[self.fees],
            clock=clock,
        )
        # The blockhash and the fee ride in the sends and status polls: no request of their
        # own while transactions are sent, and none at all while nothing is.
        riders = [self.keeper, self.fees]
        self.watcher = SignatureWatcher(
            rpc,
            interval_s=settings.tx_status_interval_s,
            covered_interval_s=settings.tx_status_safety_s,
            riders=riders,
            clock=clock,
        )
        self.feed: SignatureFeed | None = None
        if socket is not None:
            self.feed = SignatureFeed(
                socket, on_status=self.watcher.record, on_lost=self.watcher.wake
            )
            self.watcher.attach(self.feed)
        self.lookup_tables = LookupTables(rpc)
        self.sender = TransactionSender(
            rpc,
            self.keeper,
            self.watcher,
            resend_s=settings.tx_resend_s,
            timeout_s=settings.tx_timeout_s,
            max_signings=settings.tx_max_signings,
            riders=riders,
            clock=clock,
        )
        self.compute_units = settings.tx_compute_units
        self.history = TxHistory()
        """The last writes ended on this path, for the dashboard and ``/api/orders``."""
        self._active = active
        self._order_ids: dict[str, UserOrderIds] = {}
        self._order_id_hold_s = settings.tx_timeout_s
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        """Start the status poll (once), unless the client is closed (``active()`` false): a
        write then fails unsent instead of leaving tasks."""
        if self.running or not self._active():
            return
        self._tasks = [asyncio.create_task(self.watcher.run(), name="driftshare-tx-statuses")]

    async def aclose(self) -> None:
        """Stop the background work and end leftover signature subscriptions; the next write
        starts it again."""
        tasks, self._tasks = self._tasks, []
        await cancel_all(list(tasks))
        if self.feed is not None:
            await self.feed.flush()

    def order_ids(self, user_account: str) -> UserOrderIds:
        """The ``user_order_id`` allocator of one User account, shared by its engines."""
        ids = self._order_ids.get(user_account)
        if ids is None:
            ids = self._order_ids[user_account] = UserOrderIds(self._order_id_hold_s)
        return ids

    def compute_budget(self) -> list[Instruction]:
        """The compute-unit limit and the shared priority fee, as instructions."""
        return [
            compute_budget.set_compute_unit_limit(self.compute_units),
            compute_budget.set_compute_unit_price(self.fees.price),
        ]

    def builder(
        self,
        ixs: Sequence[Instruction],
        payer: Keypair,
        lookup_tables: Sequence[AddressLookupTableAccount] = (),
        signers: Sequence[Keypair] = (),
    ) -> Build:
        """Signs ``ixs`` (their own compute-budget instructions replaced by the path's) with
        ``payer`` and ``signers`` over a given blockhash."""
        body = [ix for ix in ixs if ix.program_id != compute_budget.ID]
        tables = list(lookup_tables)
        keys = [payer, *(s for s in signers if s.pubkey() != payer.pubkey())]

        def build(blockhash: Blockhash) -> VersionedTransaction:
            message = MessageV0.try_compile(
                payer.pubkey(), [*self.compute_budget(), *body], tables, blockhash.blockhash
            )
            return VersionedTransaction(message, keys)

        return build

    async def submit(
        self,
        ixs: Sequence[Instruction],
        payer: Keypair,
        *,
        lookup_tables: Sequence[AddressLookupTableAccount] = (),
        signers: Sequence[Keypair] = (),
        user_order_id: int | None = None,
    ) -> TxResult:
        """Sign, send and confirm ``ixs``; never raises, the result says how it ended."""
        self.start()
        build = self.builder(ixs, payer, lookup_tables, signers)
        return await self.sender.land(build, user_order_id=user_order_id)

    def snapshot(self) -> dict[str, Any]:
        """Counters for stats(): blockhash, fee and status polling."""
        return {
            "running": self.running,
            "blockhash_age_s": self.keeper.age_s(),
            "block_height": self.keeper.block_height,
            "blockhash_refreshes": self.keeper.refreshes,
            "blockhash_failures": self.keeper.failures,
            "priority_fee": self.fees.price,
            "compute_units": self.compute_units,
            "status_polls": self.watcher.polls,
            "status_failures": self.watcher.failures,
            "signature_subscribes": 0 if self.feed is None else self.feed.subscribes,
            "signature_notifications": 0 if self.feed is None else self.feed.notifications,
            "signature_subscriptions": 0 if self.feed is None else self.feed.live,
            "lookup_table_fetches": self.lookup_tables.fetches,
        }
