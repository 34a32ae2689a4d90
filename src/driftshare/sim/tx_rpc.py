"""JSON-RPC methods about transactions, wallets and tokens, in agave's shapes and error codes."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import based58
from pydantic import BaseModel, ConfigDict, Field
from solders.hash import Hash
from solders.message import MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from driftshare.sim._codec import rent_exempt_lamports
from driftshare.sim.chain import (
    Chain,
    Commitment,
    Execution,
    InvalidTransaction,
    Landed,
    PreflightFailure,
    SignatureFailure,
    fee_for,
)
from driftshare.sim.rpc import (
    INVALID_PARAMS,
    AccountEncoder,
    Encoding,
    RpcError,
    RpcHandler,
    RpcMethod,
    invalid_params,
    max_params,
    parse_config,
    parse_model,
    parse_pubkey,
    parse_signature,
)
from driftshare.sim.store import Account
from driftshare.sim.tokens import read_mint, read_token_account, ui_amount_string

__all__ = ["TxRpc"]

SEND_PREFLIGHT_FAILURE = -32002
SIGNATURE_VERIFICATION_FAILURE = -32003
UNSUPPORTED_TRANSACTION_VERSION = -32015
_PACKET_DATA_SIZE = 1232
_MAX_ENCODED = {"base58": 1683, "base64": 1644}
"""Longest encoded transaction agave accepts, per encoding (the raw limit is 1232 bytes)."""
_MAX_SIGNATURES = 256
_MAX_FEE_ACCOUNTS = 128
_TX_TYPE = "solana_transaction::versioned::VersionedTransaction"
_SIMULATED_ACCOUNT_ENCODINGS: dict[str, Encoding] = {
    "base64": "base64",
    "base64+zstd": "base64+zstd",
    "jsonParsed": "jsonParsed",
}
"""What ``simulateTransaction`` may return accounts in (agave refuses base58)."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _SendConfig(_Base):
    encoding: str | None = None
    skip_preflight: bool | None = Field(None, alias="skipPreflight")
    preflight_commitment: str | None = Field(None, alias="preflightCommitment")
    max_retries: int | None = Field(None, alias="maxRetries", ge=0)
    min_context_slot: int | None = Field(None, alias="minContextSlot", ge=0)


class _SimulateAccounts(_Base):
    addresses: list[str]
    encoding: str | None = None


class _SimulateConfig(_Base):
    encoding: str | None = None
    sig_verify: bool | None = Field(None, alias="sigVerify")
    replace_recent_blockhash: bool | None = Field(None, alias="replaceRecentBlockhash")
    commitment: str | None = None
    accounts: _SimulateAccounts | None = None
    min_context_slot: int | None = Field(None, alias="minContextSlot", ge=0)


class _StatusConfig(_Base):
    search_transaction_history: bool | None = Field(None, alias="searchTransactionHistory")


class _TransactionConfig(_Base):
    encoding: Literal["json", "base58", "base64"] | None = None
    commitment: Literal["processed", "confirmed", "finalized"] | None = None
    max_supported_transaction_version: int | None = Field(
        None, alias="maxSupportedTransactionVersion", ge=0
    )


def _plain_invalid(message: str) -> RpcError:
    """Invalid params with agave's own message, unprefixed."""
    return RpcError(INVALID_PARAMS, message)


def _wire(params: list[Any], encoding: str | None) -> VersionedTransaction:
    """The transaction in ``params[0]``, decoded and deserialized as agave does."""
    if not params or not isinstance(params[0], str):
        raise invalid_params("expected an encoded transaction string")
    text: str = params[0]
    encoding = encoding or "base58"
    if encoding not in _MAX_ENCODED:
        raise _plain_invalid(
            f"unsupported encoding: {encoding}. Supported encodings: base58, base64"
        )
    limit = _MAX_ENCODED[encoding]
    if len(text) > limit:
        raise _plain_invalid(
            f"{encoding} encoded {_TX_TYPE} too large: {len(text)} bytes "
            f"(max: encoded/raw {limit}/{_PACKET_DATA_SIZE})"
        )
    try:
        if encoding == "base58":
            raw = based58.b58decode(text.encode())
        else:
            raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise _plain_invalid(f"invalid {encoding} encoding: {exc}") from None
    if len(raw) > _PACKET_DATA_SIZE:
        raise _plain_invalid(
            f"{encoding} encoded {_TX_TYPE} too large: {len(raw)} bytes "
            f"(max: encoded/raw {limit}/{_PACKET_DATA_SIZE})"
        )
    try:
        return VersionedTransaction.from_bytes(raw)
    except ValueError as exc:
        raise _plain_invalid(f"failed to deserialize {_TX_TYPE}: {exc}") from None


@contextmanager
def _refusals() -> Iterator[None]:
    """Answer a transaction the chain cannot read or whose signatures fail as agave does."""
    try:
        yield
    except InvalidTransaction as exc:
        raise _plain_invalid(str(exc)) from None
    except SignatureFailure:
        raise RpcError(
            SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure"
        ) from None


class TxRpc:
    """``sendTransaction`` and everything a wallet or a trading client asks besides accounts."""

    def __init__(self, rpc: RpcHandler, chain: Chain, encoder: AccountEncoder) -> None:
        self._rpc = rpc
        self._chain = chain
        self._encoder = encoder

    def methods(self) -> dict[str, RpcMethod]:
        return {
            "sendTransaction": self._send_transaction,
            "simulateTransaction": self._simulate_transaction,
            "getSignatureStatuses": self._get_signature_statuses,
            "getTransaction": self._get_transaction,
            "getRecentPrioritizationFees": self._get_recent_prioritization_fees,
            "isBlockhashValid": self._is_blockhash_valid,
            "getFeeForMessage": self._get_fee_for_message,
            "requestAirdrop": self._request_airdrop,
            "getTokenAccountBalance": self._get_token_account_balance,
            "getMinimumBalanceForRentExemption": self._get_minimum_balance,
        }

    def _send_transaction(self, params: list[Any]) -> str:
        max_params(params, 2)
        config = parse_model(_SendConfig, params, 1)
        self._rpc.context_at(config.min_context_slot)
        tx = _wire(params, config.encoding)
        try:
            with _refusals():
                self._chain.load(tx)
                signature = self._chain.send(tx, skip_preflight=bool(config.skip_preflight))
        except PreflightFailure as exc:
            raise RpcError(
                SEND_PREFLIGHT_FAILURE,
                f"Transaction simulation failed: {exc}",
                json.loads(self._simulation_value(exc.execution, None, None)),
            ) from None
        return f'"{signature}"'

    def _simulate_transaction(self, params: list[Any]) -> str:
        max_params(params, 2)
        config = parse_model(_SimulateConfig, params, 1)
        if config.sig_verify and config.replace_recent_blockhash:
            raise _plain_invalid("sigVerify may not be used with replaceRecentBlockhash")
        context = self._rpc.context_at(config.min_context_slot)
        tx = _wire(params, config.encoding)
        with _refusals():
            self._chain.load(tx)
            run = self._chain.simulate(
                tx,
                sig_verify=bool(config.sig_verify),
                replace_blockhash=bool(config.replace_recent_blockhash),
            )
        replacement = None
        if config.replace_recent_blockhash:
            blockhash, last_valid = self._chain.blocks.latest()
            replacement = {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
        value = self._simulation_value(run, config.accounts, replacement)
        return f'{{"context":{context},"value":{value}}}'

    def _simulation_value(
        self,
        run: Execution,
        accounts: _SimulateAccounts | None,
        replacement: dict[str, object] | None,
    ) -> str:
        accounts_text = "null"
        if accounts is not None:
            name = accounts.encoding or "base64"
            encoding = _SIMULATED_ACCOUNT_ENCODINGS.get(name)
            if encoding is None:
                raise invalid_params(f"{name} encoding not supported")
            texts = []
            for address in accounts.addresses:
                pubkey = parse_pubkey(address)
                # As agave: the accounts after the transaction, fee paid; none if it failed.
                account = None if run.err is not None else self._after(run, pubkey)
                served = None if account is None else self._encoder.served(pubkey, account)
                texts.append(
                    "null" if served is None else self._encoder.encode(pubkey, served, encoding)
                )
            accounts_text = f"[{','.join(texts)}]"
        rest = json.dumps(
            {
                "err": run.err,
                "logs": run.logs,
                "unitsConsumed": run.units,
                "returnData": None,
                "innerInstructions": None,
                "replacementBlockhash": replacement,
            }
        )
        return f'{{"accounts":{accounts_text},{rest[1:]}'

    def _after(self, run: Execution, pubkey: Pubkey) -> Account | None:
        if pubkey in run.writes:
            return run.writes[pubkey]
        if run.fee_payer is not None and run.fee_payer[0] == pubkey:
            return run.fee_payer[1]
        return self._chain.store.get(pubkey)

    def _get_signature_statuses(self, params: list[Any]) -> str:
        if not params or not isinstance(params[0], list):
            raise invalid_params("first param must be an array of signatures")
        max_params(params, 2)
        if len(params[0]) > _MAX_SIGNATURES:
            raise invalid_params(f"Too many inputs provided; max {_MAX_SIGNATURES}")
        signatures = [parse_signature(value) for value in params[0]]
        config = parse_model(_StatusConfig, params, 1)
        context = self._rpc.context_at(None)
        values = []
        for signature in signatures:
            history = bool(config.search_transaction_history)
            landed = self._chain.status(signature, history=history)
            values.append(None if landed is None else self._status(landed))
        return f'{{"context":{context},"value":{json.dumps(values)}}}'

    def _status(self, landed: Landed) -> dict[str, object]:
        level: Commitment = self._chain.commitment_of(landed)
        return {
            "slot": landed.slot,
            "confirmations": None if level == "finalized" else self._chain.store.slot - landed.slot,
            "err": landed.err,
            "status": {"Ok": None} if landed.err is None else {"Err": landed.err},
            "confirmationStatus": level,
        }

    def _get_transaction(self, params: list[Any]) -> str:
        if not params:
            raise invalid_params("missing signature")
        max_params(params, 2)
        signature = parse_signature(params[0])
        config = parse_model(_TransactionConfig, params, 1)
        if config.commitment == "processed":
            raise invalid_params("Method does not support commitment below `confirmed`")
        landed = self._chain.status(signature, history=True)
        if landed is None or not self._chain.reached(landed, config.commitment or "finalized"):
            return "null"
        tx = landed.transaction
        is_v0 = isinstance(tx.message, MessageV0)
        if is_v0 and config.max_supported_transaction_version is None:
            raise RpcError(
                UNSUPPORTED_TRANSACTION_VERSION,
                "Transaction version (0) is not supported by the requesting client. Please try "
                "the request again with the following configuration parameter: "
                '"maxSupportedTransactionVersion": 0',
            )
        answer: dict[str, object] = {
            "slot": landed.slot,
            "blockTime": landed.block_time,
            "transaction": self._encode_transaction(tx, config.encoding or "json"),
            "meta": {
                "err": landed.err,
                "status": {"Ok": None} if landed.err is None else {"Err": landed.err},
                "fee": landed.fee,
                "preBalances": landed.pre_balances,
                "postBalances": landed.post_balances,
                "innerInstructions": [],
                "logMessages": landed.logs,
                "preTokenBalances": [],
                "postTokenBalances": [],
                "rewards": [],
                "loadedAddresses": {
                    "writable": [str(key) for key in landed.loaded_writable],
                    "readonly": [str(key) for key in landed.loaded_readonly],
                },
                "computeUnitsConsumed": landed.units,
            },
        }
        if config.max_supported_transaction_version is not None:
            answer["version"] = 0 if is_v0 else "legacy"
        return json.dumps(answer)

    @staticmethod
    def _encode_transaction(tx: VersionedTransaction, encoding: str) -> object:
        if encoding == "base64":
            return [base64.b64encode(bytes(tx)).decode(), "base64"]
        if encoding == "base58":
            return [based58.b58encode(bytes(tx)).decode(), "base58"]
        message = tx.message
        header = message.header
        ui: dict[str, object] = {
            "accountKeys": [str(key) for key in message.account_keys],
            "header": {
                "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
                "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
                "numRequiredSignatures": header.num_required_signatures,
            },
            "instructions": [
                {
                    "accounts": list(ix.accounts),
                    "data": based58.b58encode(bytes(ix.data)).decode(),
                    "programIdIndex": ix.program_id_index,
                    "stackHeight": None,
                }
                for ix in message.instructions
            ],
            "recentBlockhash": str(message.recent_blockhash),
        }
        if isinstance(message, MessageV0):
            ui["addressTableLookups"] = [
                {
                    "accountKey": str(lookup.account_key),
                    "readonlyIndexes": list(lookup.readonly_indexes),
                    "writableIndexes": list(lookup.writable_indexes),
                }
                for lookup in message.address_table_lookups
            ]
        return {"message": ui, "signatures": [str(s) for s in tx.signatures]}

    def _get_recent_prioritization_fees(self, params: list[Any]) -> str:
        max_params(params, 1)
        raw = params[0] if params else []
        if not isinstance(raw, list):
            raise invalid_params("first param must be an array of pubkeys")
        if len(raw) > _MAX_FEE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {_MAX_FEE_ACCOUNTS}")
        accounts = [parse_pubkey(value) for value in raw]
        fees = self._chain.prioritization_fees(accounts)
        return json.dumps([{"prioritizationFee": fee, "slot": slot} for slot, fee in fees])

    def _is_blockhash_valid(self, params: list[Any]) -> str:
        if not params or not isinstance(params[0], str):
            raise invalid_params("missing blockhash")
        max_params(params, 2)
        try:
            blockhash = Hash.from_string(params[0])
        except ValueError:
            raise invalid_params(f"invalid blockhash {params[0]!r}") from None
        context = self._rpc.context(parse_config(params, 1))
        valid = self._chain.blockhash_valid(blockhash)
        return f'{{"context":{context},"value":{json.dumps(valid)}}}'

    def _get_fee_for_message(self, params: list[Any]) -> str:
        if not params or not isinstance(params[0], str):
            raise invalid_params("missing message")
        max_params(params, 2)
        try:
            message = from_bytes_versioned(base64.b64decode(params[0], validate=True))
        except (ValueError, binascii.Error) as exc:
            raise invalid_params(f"invalid message: {exc}") from None
        context = self._rpc.context(parse_config(params, 1))
        known = self._chain.blocks.age(message.recent_blockhash) is not None
        fee = fee_for(message) if known else None
        return f'{{"context":{context},"value":{json.dumps(fee)}}}'

    def _request_airdrop(self, params: list[Any]) -> str:
        if len(params) < 2:
            raise invalid_params("expected a pubkey and an amount of lamports")
        max_params(params, 3)
        pubkey = parse_pubkey(params[0])
        lamports = params[1]
        if isinstance(lamports, bool) or not isinstance(lamports, int) or lamports < 0:
            raise invalid_params(f"lamports must be a non-negative integer, got {lamports!r}")
        self._rpc.context(parse_config(params, 2))
        return f'"{self._chain.airdrop(pubkey, lamports)}"'

    def _get_token_account_balance(self, params: list[Any]) -> str:
        if not params:
            raise invalid_params("missing pubkey")
        max_params(params, 2)
        pubkey = parse_pubkey(params[0])
        context = self._rpc.context(parse_config(params, 1))
        account: Account | None = self._chain.store.get(pubkey)
        if account is None:
            raise _plain_invalid("Invalid param: could not find account")
        token = read_token_account(account)
        if token is None:
            raise _plain_invalid("Invalid param: not a Token account")
        mint = read_mint(self._chain.store.get(token.mint))
        if mint is None:
            raise _plain_invalid("Invalid param: could not find mint")
        ui = ui_amount_string(token.amount, mint.decimals)
        value = {
            "amount": str(token.amount),
            "decimals": mint.decimals,
            "uiAmount": float(ui),
            "uiAmountString": ui,
        }
        return f'{{"context":{context},"value":{json.dumps(value)}}}'

    def _get_minimum_balance(self, params: list[Any]) -> str:
        if not params or isinstance(params[0], bool) or not isinstance(params[0], int):
            raise invalid_params("expected a data length")
        max_params(params, 2)
        self._rpc.context(parse_config(params, 1))
        return str(rent_exempt_lamports(params[0]))
