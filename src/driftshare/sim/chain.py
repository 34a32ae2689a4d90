"""The transaction runner: what a validator does with a transaction, from its bytes to its status.

A transaction is checked (signatures, recent blockhash, status cache, fee payer), its
instructions run in order through :class:`~driftshare.sim.programs.Programs` over one overlay
of writes, and it lands in the current slot: with every write if all instructions succeed,
with only its fee charged if one fails (as on Solana, where the failed transaction is still
recorded). A transaction that cannot pay, cites an unknown blockhash or was processed before
never lands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from solders.address_lookup_table_account import SlotHashes
from solders.compute_budget import ID as COMPUTE_BUDGET_ID
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, VersionedMessage
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams
from solders.system_program import transfer as system_transfer
from solders.transaction import SanitizeError, Transaction, VersionedTransaction

from driftshare.sim.blocks import FINALITY_DEPTH, MAX_PROCESSING_AGE, MAX_RECENT_BLOCKHASHES, Blocks
from driftshare.sim.faults import Faults, LostReply
from driftshare.sim.lookup_tables import read_lookup_table
from driftshare.sim.programs import InstructionFailed, Programs
from driftshare.sim.stats import SimStats
from driftshare.sim.store import Account, AccountStore

__all__ = [
    "LAMPORTS_PER_SIGNATURE",
    "Chain",
    "Commitment",
    "Execution",
    "InvalidTransaction",
    "Landed",
    "PreflightFailure",
    "SignatureFailure",
    "TxError",
    "describe_error",
    "fee_for",
]

_log = logging.getLogger(__name__)

LAMPORTS_PER_SIGNATURE = 5_000
_DEFAULT_UNITS_PER_INSTRUCTION = 200_000
_MAX_UNITS = 1_400_000
_MICRO_LAMPORTS = 1_000_000
_BUILTIN_UNITS = 150
"""Compute units a System or ComputeBudget instruction costs on a validator."""
_PROGRAM_UNITS = 20_000
"""Nominal units reported for any other program: the simulator meters no compute."""
_HISTORY = 100_000
"""Transactions remembered for ``getTransaction``/``searchTransactionHistory``."""
_FAUCET_LAMPORTS = 500_000_000 * 10**9

TxError = str | dict[str, Any]
"""Solana's ``TransactionError`` as JSON: ``"BlockhashNotFound"``,
``{"InstructionError": [0, {"Custom": 6010}]}``."""
Commitment = Literal["processed", "confirmed", "finalized"]
_LEVELS: dict[str, int] = {"processed": 0, "confirmed": 1, "finalized": 2}


class InvalidTransaction(Exception):
    """The transaction cannot even be read against the chain (answered as Invalid params)."""


class SignatureFailure(Exception):
    """A signature does not verify."""


class PreflightFailure(Exception):
    """Simulating the transaction before sending it failed; nothing was sent."""

    def __init__(self, execution: Execution) -> None:
        super().__init__(describe_error(execution.err))
        self.execution = execution


@dataclass
class Execution:
    """What running a transaction did, before it is (or is not) committed."""

    err: TxError | None
    logs: list[str] = field(default_factory=list)
    units: int = 0
    fee: int = 0
    executed: bool = False
    """True if it got as far as running instructions, so it lands even when ``err`` is set."""
    writes: dict[Pubkey, Account] = field(default_factory=dict)
    fee_payer: tuple[Pubkey, Account] | None = None
    """The fee payer after paying, committed whenever the transaction lands."""
    keys: list[Pubkey] = field(default_factory=list)
    loaded_writable: list[Pubkey] = field(default_factory=list)
    loaded_readonly: list[Pubkey] = field(default_factory=list)
    unit_price: int = 0
    writable: frozenset[Pubkey] = frozenset()


@dataclass(frozen=True)
class Landed:
    """A transaction in the ledger: its status and what ``getTransaction`` tells."""

    signature: Signature
    slot: int
    block_time: int
    err: TxError | None
    logs: list[str]
    fee: int
    units: int
    transaction: VersionedTransaction
    loaded_writable: list[Pubkey]
    loaded_readonly: list[Pubkey]
    pre_balances: list[int]
    post_balances: list[int]


def describe_error(err: TxError | None) -> str:
    """A transaction error as a node prints it (``Transaction simulation failed: <this>``)."""
    if err is None:
        return "success"
    if isinstance(err, str):
        return _TX_ERRORS.get(err, err)
    if "InstructionError" in err:
        index, detail = err["InstructionError"]
        return f"Error processing Instruction {index}: {_describe_instruction_error(detail)}"
    if "DuplicateInstruction" in err:
        return f"Transaction contains a duplicate instruction ({err['DuplicateInstruction']})"
    return str(err)


def _describe_instruction_error(detail: object) -> str:
    if isinstance(detail, dict) and "Custom" in detail:
        return f"custom program error: {detail['Custom']:#x}"
    return _INSTRUCTION_ERRORS.get(str(detail), str(detail))


_TX_ERRORS = {
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "SignatureFailure": "Transaction did not pass signature verification",
}
_INSTRUCTION_ERRORS = {
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "UnsupportedProgramId": "Unsupported program id",
    "MissingAccount": "An account required by the instruction is missing",
    "ReadonlyDataModified": "instruction modified data of a read-only account",
    "InvalidSeeds": "Provided seeds do not result in a valid address",
    "ProgramFailedToComplete": "Program failed to complete",
}


class _TxView:
    """One transaction's accounts for the instruction running: its writes over the store."""

    def __init__(
        self,
        base: Callable[[Pubkey], Account | None],
        signers: frozenset[Pubkey],
        slot: int,
        unix_timestamp: int,
        logs: list[str],
    ) -> None:
        self._base = base
        self.signers = signers
        self.slot = slot
        self.unix_timestamp = unix_timestamp
        self._logs = logs
        self.writes: dict[Pubkey, Account] = {}
        self._readable: frozenset[Pubkey] = frozenset()
        self._writable: frozenset[Pubkey] = frozenset()

    def enter(self, ix: Instruction) -> None:
        """Limit access to ``ix``'s accounts, as a program sees only what it was passed."""
        self._readable = frozenset(meta.pubkey for meta in ix.accounts)
        self._writable = frozenset(meta.pubkey for meta in ix.accounts if meta.is_writable)

    def get(self, pubkey: Pubkey) -> Account | None:
        if pubkey not in self._readable:
            raise InstructionFailed("MissingAccount", f"{pubkey} was not passed to the program")
        if pubkey in self.writes:
            return self.writes[pubkey]
        return self._base(pubkey)

    def put(self, pubkey: Pubkey, account: Account) -> None:
        if pubkey not in self._writable:
            raise InstructionFailed("ReadonlyDataModified", f"{pubkey} is not writable here")
        self.writes[pubkey] = account

    def log(self, line: str) -> None:
        self._logs.append(f"Program log: {line}")


@dataclass
class _Budget:
    limit: int
    price: int
    """Micro-lamports per compute unit."""

    @property
    def priority_fee(self) -> int:
        return math.ceil(self.price * self.limit / _MICRO_LAMPORTS)


class _BudgetError(Exception):
    def __init__(self, err: TxError) -> None:
        super().__init__(str(err))
        self.err = err


def _budget(message: Message | MessageV0) -> _Budget:
    """The compute unit limit and price the ComputeBudget instructions ask for."""
    keys = message.account_keys
    limit: int | None = None
    price: int | None = None
    others = 0
    for index, ix in enumerate(message.instructions):
        if keys[ix.program_id_index] != COMPUTE_BUDGET_ID:
            others += 1
            continue
        data = bytes(ix.data)
        # solders builds these instructions but cannot parse them: the layout is a tag and a
        # little-endian integer (u32 limit, u64 micro-lamport price, u32 heap and data sizes).
        tag, value = (data[0], int.from_bytes(data[1:], "little")) if data else (None, 0)
        if tag == 2 and len(data) == 5:
            if limit is not None:
                raise _BudgetError({"DuplicateInstruction": index})
            limit = value
        elif tag == 3 and len(data) == 9:
            if price is not None:
                raise _BudgetError({"DuplicateInstruction": index})
            price = value
        elif tag not in (1, 4) or len(data) != 5:
            raise _BudgetError({"InstructionError": [index, "InvalidInstructionData"]})
    if limit is None:
        limit = _DEFAULT_UNITS_PER_INSTRUCTION * others
    return _Budget(min(limit, _MAX_UNITS), price or 0)


def _fee(message: Message | MessageV0, budget: _Budget) -> int:
    signatures: int = message.header.num_required_signatures
    return signatures * LAMPORTS_PER_SIGNATURE + budget.priority_fee


def fee_for(message: Message | MessageV0) -> int | None:
    """Lamports a message pays, 5000 per signature plus its priority fee; None if its compute
    budget instructions are invalid."""
    try:
        return _fee(message, _budget(message))
    except _BudgetError:
        return None


StatusListener = Callable[[], None]


class Chain:
    """Transactions on one simulated chain: sending, simulating, landing and their statuses."""

    def __init__(
        self,
        store: AccountStore,
        programs: Programs,
        blocks: Blocks,
        faults: Faults,
        stats: SimStats,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.programs = programs
        self.blocks = blocks
        self._faults = faults
        self._stats = stats
        self._clock = clock
        self._ledger: OrderedDict[Signature, Landed] = OrderedDict()
        self._delayed: dict[Signature, asyncio.TimerHandle] = {}
        """Transactions accepted under the landing-delay fault, not landed yet."""
        self._fees_by_slot: OrderedDict[int, list[tuple[int, frozenset[Pubkey]]]] = OrderedDict()
        self._faucet = Keypair.from_seed(hashlib.sha256(b"faucet" + bytes(blocks.genesis)).digest())
        """The test validator's faucet, distinct per chain."""
        self.listeners: list[StatusListener] = []
        """Called after every transaction lands (signature subscriptions check theirs)."""
        self.lost_reply: LostReply | None = None
        """Set by a send that landed under the lost-reply fault: the server must answer it so."""

    # reading

    def status(self, signature: Signature, *, history: bool = False) -> Landed | None:
        """The landed transaction; without ``history``, only while the status cache holds it."""
        landed = self._ledger.get(signature)
        if landed is None:
            return None
        if not history and self.store.slot - landed.slot > MAX_RECENT_BLOCKHASHES:
            return None
        return landed

    def commitment_of(self, landed: Landed) -> Commitment:
        """How settled ``landed`` is: confirmed one slot later, finalized a root later."""
        depth = self.store.slot - landed.slot
        if depth >= FINALITY_DEPTH:
            return "finalized"
        return "confirmed" if depth >= 1 else "processed"

    def reached(self, landed: Landed, commitment: Commitment) -> bool:
        """Whether ``landed`` is at least as settled as ``commitment``."""
        return _LEVELS[self.commitment_of(landed)] >= _LEVELS[commitment]

    def prioritization_fees(self, accounts: Sequence[Pubkey]) -> list[tuple[int, int]]:
        """``(slot, fee)`` for each recent slot, as ``getRecentPrioritizationFees`` computes it:
        the block's lowest unit price, raised to the lowest paid to write any of ``accounts``."""
        slot = self.store.slot
        answer: list[tuple[int, int]] = []
        for at in range(max(1, slot - MAX_PROCESSING_AGE + 1), slot + 1):
            landed = self._fees_by_slot.get(at, [])
            fee = min((price for price, _ in landed), default=0)
            for account in accounts:
                prices = [price for price, writes in landed if account in writes]
                if prices:
                    fee = max(fee, min(prices))
            answer.append((at, fee))
        return answer

    # acting

    def load(self, tx: VersionedTransaction) -> None:
        """Raise :class:`InvalidTransaction` unless ``tx`` is well formed on this chain."""
        try:
            tx.sanitize()
        except SanitizeError as exc:
            raise InvalidTransaction(f"invalid transaction: {exc}") from None
        self._keys(tx.message)

    def simulate(
        self, tx: VersionedTransaction, *, sig_verify: bool, replace_blockhash: bool
    ) -> Execution:
        """Run ``tx`` on the current state without landing it."""
        if sig_verify and not all(tx.verify_with_results()):
            raise SignatureFailure
        return self._execute(tx, check_blockhash=not replace_blockhash)

    def send(self, tx: VersionedTransaction, *, skip_preflight: bool) -> Signature:
        """Accept ``tx`` as ``sendTransaction`` does: preflight it (unless skipped), then land it
        now, later or never as the faults say. Raises :class:`SignatureFailure` or
        :class:`PreflightFailure` when a node would answer with an error."""
        payer = str(tx.message.account_keys[0])
        signature = tx.signatures[0]
        self._stats.count_tx(payer, "received")
        preflight: Execution | None = None
        if not skip_preflight:
            if not all(tx.verify_with_results()):
                self._stats.count_tx(payer, "refused")
                raise SignatureFailure
            preflight = self._execute(tx, check_blockhash=True)
            if preflight.err is not None:
                self._stats.count_tx(payer, "refused")
                raise PreflightFailure(preflight)
        if signature in self._delayed or signature in self._ledger:
            self._stats.count_tx(payer, "duplicate")
            return signature
        if self._faults.take_tx_drop():
            self._stats.count_tx(payer, "dropped")
            return signature
        delay = self._faults.land_delay_s
        if delay > 0:
            loop = asyncio.get_running_loop()
            self._delayed[signature] = loop.call_later(delay, self._land_later, tx)
            return signature
        # Landing at once on the state preflight just ran on: its execution is the landing's.
        if self._land(tx, preflight):
            self.lost_reply = self._faults.take_lost_reply()
        return signature

    def airdrop(self, recipient: Pubkey, lamports: int) -> Signature:
        """Send ``lamports`` from the faucet as a test validator does: a signed System transfer
        that lands now (no trading fault applies to it). As there, the same airdrop asked twice
        in one slot is the same transaction, so it lands once."""
        faucet = self._faucet.pubkey()
        if self.store.get(faucet) is None:
            self.store.put(faucet, Account(b"", SYSTEM_PROGRAM_ID, _FAUCET_LAMPORTS))
        ix = system_transfer(
            TransferParams(from_pubkey=faucet, to_pubkey=recipient, lamports=lamports)
        )
        blockhash, _ = self.blocks.latest()
        legacy = Transaction.new_signed_with_payer([ix], faucet, [self._faucet], blockhash)
        tx = VersionedTransaction.from_legacy(legacy)
        self._stats.count_tx(str(faucet), "received")
        self._land(tx)
        return tx.signatures[0]

    def cancel_delayed(self) -> None:
        """Forget transactions waiting to land (the simulator is stopping)."""
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()

    def _land_later(self, tx: VersionedTransaction) -> None:
        self._delayed.pop(tx.signatures[0], None)
        self._land(tx)

    def _land(self, tx: VersionedTransaction, run: Execution | None = None) -> bool:
        """Land ``tx`` now if a leader would, with ``run`` if it was just executed on this very
        state; True if it landed (with or without error)."""
        payer = str(tx.message.account_keys[0])
        if run is None:
            try:
                self.load(tx)
                if not all(tx.verify_with_results()):
                    raise SignatureFailure
            except (InvalidTransaction, SignatureFailure):
                self._stats.count_tx(payer, "dropped")
                return False
            run = self._execute(tx, check_blockhash=True)
        if not run.executed:
            self._stats.count_tx(payer, "duplicate" if run.err == "AlreadyProcessed" else "dropped")
            return False
        pre = [self._lamports(key) for key in run.keys]
        assert run.fee_payer is not None
        self.store.put(*run.fee_payer)
        if run.err is None:
            for pubkey, account in run.writes.items():
                self.store.put(pubkey, account)
        slot = self.store.slot
        signature = tx.signatures[0]
        self._ledger[signature] = Landed(
            signature=signature,
            slot=slot,
            block_time=int(self._clock()),
            err=run.err,
            logs=run.logs,
            fee=run.fee,
            units=run.units,
            transaction=tx,
            loaded_writable=run.loaded_writable,
            loaded_readonly=run.loaded_readonly,
            pre_balances=pre,
            post_balances=[self._lamports(key) for key in run.keys],
        )
        self._forget_old(slot)
        self._fees_by_slot.setdefault(slot, []).append((run.unit_price, run.writable))
        while len(self._fees_by_slot) > MAX_PROCESSING_AGE:
            self._fees_by_slot.popitem(last=False)
        self._stats.count_tx(payer, "landed" if run.err is None else "failed")
        for listener in self.listeners:
            listener()
        return True

    def _forget_old(self, slot: int) -> None:
        """Keep at most ``_HISTORY`` transactions, but every one whose blockhash could still
        be valid: forgetting those would let a copy land twice."""
        while len(self._ledger) > _HISTORY:
            oldest = next(iter(self._ledger.values()))
            if slot - oldest.slot <= MAX_RECENT_BLOCKHASHES:
                return
            self._ledger.popitem(last=False)

    def _lamports(self, pubkey: Pubkey) -> int:
        account = self.store.get(pubkey)
        return 0 if account is None else account.lamports

    def _keys(self, message: VersionedMessage) -> tuple[list[Pubkey], list[Pubkey], list[Pubkey]]:
        """Static keys, then the addresses loaded from lookup tables (writable, readonly)."""
        static = list(message.account_keys)
        if not isinstance(message, MessageV0):
            return static, [], []
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lookup in message.address_table_lookups:
            account = self.store.get(lookup.account_key)
            if account is None:
                raise InvalidTransaction(
                    "invalid transaction: Transaction loads an address table account that "
                    "doesn't exist"
                )
            table = read_lookup_table(account)
            if table is None:
                raise InvalidTransaction(
                    "invalid transaction: Transaction loads an address table account with "
                    "invalid data"
                )
            try:
                writable += table.lookup(self.store.slot, list(lookup.writable_indexes), _NO_SLOTS)
                readonly += table.lookup(self.store.slot, list(lookup.readonly_indexes), _NO_SLOTS)
            except ValueError:
                raise InvalidTransaction(
                    "invalid transaction: Transaction address table lookup uses an invalid index"
                ) from None
        return static, writable, readonly

    def _execute(self, tx: VersionedTransaction, *, check_blockhash: bool) -> Execution:
        message = tx.message
        if check_blockhash and not self.blockhash_valid(message.recent_blockhash):
            return Execution("BlockhashNotFound")
        if tx.signatures[0] in self._ledger:
            return Execution("AlreadyProcessed")
        static, loaded_writable, loaded_readonly = self._keys(message)
        keys = static + loaded_writable + loaded_readonly
        writable = self._writable(message, static, loaded_writable)
        try:
            budget = _budget(message)
        except _BudgetError as exc:
            return Execution(exc.err)
        fee = _fee(message, budget)
        payer = keys[0]
        payer_account = self.store.get(payer)
        if payer_account is None:
            return Execution("AccountNotFound")
        if payer_account.owner != SYSTEM_PROGRAM_ID or payer_account.data:
            return Execution("InvalidAccountForFee")
        if payer_account.lamports < fee:
            return Execution("InsufficientFundsForFee")
        paid = dataclasses.replace(payer_account, lamports=payer_account.lamports - fee)
        run = Execution(
            None,
            fee=fee,
            executed=True,
            fee_payer=(payer, paid),
            keys=keys,
            loaded_writable=loaded_writable,
            loaded_readonly=loaded_readonly,
            unit_price=budget.price,
            writable=frozenset(keys[i] for i in writable),
        )
        signers = frozenset(static[: message.header.num_required_signatures])
        view = _TxView(
            lambda key: paid if key == payer else self.store.get(key),
            signers,
            self.store.slot,
            int(self._clock()),
            run.logs,
        )
        for index, compiled in enumerate(message.instructions):
            program_id = keys[compiled.program_id_index]
            ix = Instruction(
                program_id,
                bytes(compiled.data),
                [
                    AccountMeta(keys[i], is_signer=i < len(signers), is_writable=i in writable)
                    for i in compiled.accounts
                ],
            )
            builtin = program_id in (SYSTEM_PROGRAM_ID, COMPUTE_BUDGET_ID)
            run.units += _BUILTIN_UNITS if builtin else _PROGRAM_UNITS
            run.logs.append(f"Program {program_id} invoke [1]")
            try:
                self._run(view, ix)
            except InstructionFailed as exc:
                run.logs.append(f"Program log: {exc.message}")
                run.err = {"InstructionError": [index, exc.error]}
                detail = _describe_instruction_error(exc.error)
                run.logs.append(f"Program {program_id} failed: {detail}")
                return run
            run.logs.append(f"Program {program_id} success")
        run.writes = view.writes
        return run

    def _run(self, view: _TxView, ix: Instruction) -> None:
        handler = self.programs.get(ix.program_id)
        if handler is None:
            raise InstructionFailed(
                "UnsupportedProgramId",
                f"unsupported instruction: the simulator runs no program {ix.program_id}",
            )
        view.enter(ix)
        try:
            handler(view, ix)
        except InstructionFailed:
            raise
        except Exception:
            # A handler bug must fail its transaction, never the RPC answer.
            _log.exception("program %s crashed on an instruction", ix.program_id)
            raise InstructionFailed(
                "ProgramFailedToComplete", "the simulated program crashed"
            ) from None

    def blockhash_valid(self, blockhash: Hash) -> bool:
        """Whether a transaction citing ``blockhash`` could land now (``isBlockhashValid``)."""
        age = self.blocks.age(blockhash)
        return age is not None and age <= self._faults.blockhash_max_age

    @staticmethod
    def _writable(
        message: VersionedMessage, static: list[Pubkey], loaded_writable: list[Pubkey]
    ) -> set[int]:
        """Indexes of the write-locked keys: by the header, loaded writable ones, never a
        program an instruction calls (the runtime demotes those)."""
        header = message.header
        signed = header.num_required_signatures
        writable = {
            i
            for i in range(len(static))
            if i < signed - header.num_readonly_signed_accounts
            or signed <= i < len(static) - header.num_readonly_unsigned_accounts
        }
        writable |= set(range(len(static), len(static) + len(loaded_writable)))
        writable -= {ix.program_id_index for ix in message.instructions}
        return writable


_NO_SLOTS = SlotHashes([])
"""Tables here are never extended after creation, so no slot hash is needed to look them up."""
