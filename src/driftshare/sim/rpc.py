"""Solana JSON-RPC methods answered from an :class:`AccountStore`, in a node's exact shapes.

Answers are built as JSON text: an account's encoding is cached per account version, so a
``getMultipleAccounts`` of 100 keys is string joins, not 100 re-encodings.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import based58
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from solders.hash import Hash
from solders.pubkey import Pubkey

from driftshare.sim.store import Account, AccountStore

__all__ = [
    "API_VERSION",
    "FEATURE_SET",
    "MAX_MULTIPLE_ACCOUNTS",
    "AccountEncoder",
    "AccountView",
    "Filters",
    "RpcError",
    "RpcHandler",
    "SubscribeConfig",
    "blockhash_at",
    "call_count",
    "error_text",
    "parse_body",
    "parse_pubkey",
    "parse_subscribe_config",
]

API_VERSION = "2.2.7"
"""The agave release whose RPC shapes the simulator follows."""
FEATURE_SET = 3_294_202_862
"""Reported in ``getVersion``; a node sends its own feature-set id, any u32 will do."""
MAX_MULTIPLE_ACCOUNTS = 100
_MAX_BASE58_BYTES = 128
_MAX_FILTERS = 4
_MAX_MEMCMP_BYTES = 128

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
MIN_CONTEXT_SLOT_NOT_REACHED = -32016

Encoding = Literal["binary", "base58", "base64", "base64+zstd", "jsonParsed"]
AccountView = Callable[[Pubkey, Account], Account | None]


def blockhash_at(seed: int, slot: int) -> str:
    """The simulated chain's blockhash at ``slot`` (a block is valid for 150 more)."""
    return str(Hash.hash(f"driftshare-sim:{seed}:{slot}".encode()))


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _invalid(detail: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {detail}")


def error_text(code: int, message: str, request_id: object, data: object = None) -> str:
    """A complete JSON-RPC error response."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "error": error, "id": request_id})


def parse_pubkey(value: object) -> Pubkey:
    """A base58 pubkey param, or an Invalid params error."""
    if not isinstance(value, str):
        raise _invalid(f"expected a base58 pubkey string, got {json.dumps(value)}")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise _invalid(f"invalid pubkey {value!r}: {exc}") from None


def _pydantic_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
    )


class _DataSlice(BaseModel):
    offset: int = Field(ge=0)
    length: int = Field(ge=0)


class _Memcmp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset: int = Field(ge=0)
    bytes: str
    encoding: Literal["base58", "base64"] | None = None


class _MemcmpFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memcmp: _Memcmp


class _DataSizeFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    data_size: int = Field(alias="dataSize", ge=0)


class _Config(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    encoding: Encoding | None = None
    commitment: (
        Literal[
            "processed", "confirmed", "finalized", "recent", "single", "singleGossip", "root", "max"
        ]
        | None
    ) = None
    min_context_slot: int | None = Field(None, alias="minContextSlot", ge=0)
    data_slice: _DataSlice | None = Field(None, alias="dataSlice")
    with_context: bool | None = Field(None, alias="withContext")
    filters: list[_MemcmpFilter | _DataSizeFilter] | None = None


def _config(params: list[Any], index: int) -> _Config:
    raw = params[index] if len(params) > index and params[index] is not None else {}
    if not isinstance(raw, dict):
        raise _invalid(f"config must be an object, got {json.dumps(raw)}")
    try:
        return _Config.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(_pydantic_problems(exc)) from None


def _max_params(params: list[Any], count: int) -> None:
    if len(params) > count:
        raise _invalid(f"expected at most {count} params, got {len(params)}")


@dataclass(frozen=True, slots=True)
class Filters:
    """``getProgramAccounts``/``programSubscribe`` filters: every one must match."""

    data_size: tuple[int, ...] = ()
    memcmp: tuple[tuple[int, bytes], ...] = ()

    def matches(self, data: bytes) -> bool:
        if any(len(data) != size for size in self.data_size):
            return False
        return all(data[offset : offset + len(want)] == want for offset, want in self.memcmp)

    @classmethod
    def from_config(cls, config: _Config) -> Filters:
        raw = config.filters or []
        if len(raw) > _MAX_FILTERS:
            raise _invalid(f"Too many filters provided; max {_MAX_FILTERS}")
        sizes: list[int] = []
        memcmps: list[tuple[int, bytes]] = []
        for item in raw:
            if isinstance(item, _DataSizeFilter):
                sizes.append(item.data_size)
                continue
            memcmp = item.memcmp
            try:
                if memcmp.encoding == "base64":
                    want = base64.b64decode(memcmp.bytes, validate=True)
                else:
                    want = based58.b58decode(memcmp.bytes.encode())
            except ValueError:
                raise _invalid(
                    f"memcmp bytes {memcmp.bytes!r} are not valid {memcmp.encoding or 'base58'}"
                ) from None
            if len(want) > _MAX_MEMCMP_BYTES:
                raise _invalid(f"memcmp bytes longer than {_MAX_MEMCMP_BYTES} bytes")
            memcmps.append((memcmp.offset, want))
        return cls(tuple(sizes), tuple(memcmps))


@dataclass(frozen=True, slots=True)
class SubscribeConfig:
    """What an account or program subscription asked for."""

    encoding: Encoding
    filters: Filters


def parse_subscribe_config(params: list[Any], index: int) -> SubscribeConfig:
    """Encoding and filters of a subscribe call; errors as Invalid params."""
    config = _config(params, index)
    return SubscribeConfig(config.encoding or "binary", Filters.from_config(config))


class AccountEncoder:
    """Account JSON text per encoding, as nodes send it, cached per account version."""

    def __init__(self, view: AccountView) -> None:
        self._view = view
        self._cache: dict[tuple[Pubkey, str], tuple[Account, str]] = {}
        self._zstd = zstandard.ZstdCompressor()

    def served(self, pubkey: Pubkey, account: Account) -> Account | None:
        """The account as clients see it (faults may corrupt or hide it)."""
        return self._view(pubkey, account)

    def encode(
        self,
        pubkey: Pubkey,
        account: Account,
        encoding: Encoding,
        data_slice: _DataSlice | None = None,
    ) -> str:
        """``account`` (already passed through :meth:`served`) as node JSON text."""
        if data_slice is None:
            cached = self._cache.get((pubkey, encoding))
            if cached is not None and cached[0] is account:
                return cached[1]
        data = account.data
        if data_slice is not None:
            data = data[data_slice.offset : data_slice.offset + data_slice.length]
        text = json.dumps(
            {
                "data": self._data(data, encoding),
                "executable": account.executable,
                "lamports": account.lamports,
                "owner": str(account.owner),
                "rentEpoch": account.rent_epoch,
                "space": len(account.data),
            }
        )
        if data_slice is None:
            self._cache[(pubkey, encoding)] = (account, text)
        return text

    def _data(self, data: bytes, encoding: Encoding) -> str | list[str]:
        if encoding in ("binary", "base58"):
            if len(data) > _MAX_BASE58_BYTES:
                raise RpcError(
                    INVALID_REQUEST,
                    f"Encoded binary (base 58) data should be less than {_MAX_BASE58_BYTES} "
                    "bytes, please use Base64 encoding.",
                )
            text = based58.b58encode(data).decode()
            return text if encoding == "binary" else [text, "base58"]
        if encoding == "base64+zstd":
            return [base64.b64encode(self._zstd.compress(data)).decode(), "base64+zstd"]
        # jsonParsed falls back to base64 as nodes do for programs they have no parser for.
        return [base64.b64encode(data).decode(), "base64"]


def _check_slice(encoding: Encoding, data_slice: _DataSlice | None) -> None:
    if data_slice is None:
        return
    if encoding == "jsonParsed" or (
        encoding in ("binary", "base58") and data_slice.length > _MAX_BASE58_BYTES
    ):
        raise RpcError(
            INVALID_REQUEST,
            "Sliced account data can only be encoded using binary (base 58) or base64 encoding.",
        )


class RpcHandler:
    """Answers JSON-RPC calls about ``store``'s accounts."""

    def __init__(self, store: AccountStore, encoder: AccountEncoder, *, seed: int = 0) -> None:
        self.store = store
        self.encoder = encoder
        self._seed = seed
        # Each simulator is a chain of its own: two simulators never share a genesis hash, so
        # a client can tell them apart even when their seeds and accounts are equal.
        self.genesis_hash = str(Hash(os.urandom(32)))
        self._methods: dict[str, Callable[[list[Any]], str]] = {
            "getAccountInfo": self._get_account_info,
            "getMultipleAccounts": self._get_multiple_accounts,
            "getProgramAccounts": self._get_program_accounts,
            "getSlot": self._get_slot,
            "getHealth": self._get_health,
            "getVersion": self._get_version,
            "getLatestBlockhash": self._get_latest_blockhash,
            "getBalance": self._get_balance,
            "getGenesisHash": self._get_genesis_hash,
        }

    def result(self, method: str, params: object) -> str:
        """JSON text of ``method``'s result; raises :class:`RpcError`."""
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise _invalid("params must be an array")
        return handler(params)

    def _context(self, config: _Config) -> str:
        slot = self.store.slot
        if config.min_context_slot is not None and config.min_context_slot > slot:
            raise RpcError(
                MIN_CONTEXT_SLOT_NOT_REACHED,
                "Minimum context slot has not been reached",
                {"contextSlot": slot},
            )
        return f'{{"slot":{slot},"apiVersion":"{API_VERSION}"}}'

    def _account_text(self, pubkey: Pubkey, config: _Config) -> str:
        stored = self.store.get(pubkey)
        account = None if stored is None else self.encoder.served(pubkey, stored)
        if account is None:
            return "null"
        return self.encoder.encode(pubkey, account, config.encoding or "binary", config.data_slice)

    def _get_account_info(self, params: list[Any]) -> str:
        if not params:
            raise _invalid("missing pubkey")
        _max_params(params, 2)
        pubkey = parse_pubkey(params[0])
        config = _config(params, 1)
        _check_slice(config.encoding or "binary", config.data_slice)
        context = self._context(config)
        return f'{{"context":{context},"value":{self._account_text(pubkey, config)}}}'

    def _get_multiple_accounts(self, params: list[Any]) -> str:
        if not params or not isinstance(params[0], list):
            raise _invalid("first param must be an array of pubkeys")
        _max_params(params, 2)
        if len(params[0]) > MAX_MULTIPLE_ACCOUNTS:
            raise _invalid(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [parse_pubkey(p) for p in params[0]]
        config = _config(params, 1)
        _check_slice(config.encoding or "binary", config.data_slice)
        context = self._context(config)
        values = ",".join(self._account_text(pubkey, config) for pubkey in pubkeys)
        return f'{{"context":{context},"value":[{values}]}}'

    def _get_program_accounts(self, params: list[Any]) -> str:
        if not params:
            raise _invalid("missing program id")
        _max_params(params, 2)
        program = parse_pubkey(params[0])
        config = _config(params, 1)
        encoding = config.encoding or "binary"
        _check_slice(encoding, config.data_slice)
        filters = Filters.from_config(config)
        context = self._context(config)
        entries: list[str] = []
        for pubkey, stored in list(self.store.items()):
            if stored.owner != program:
                continue
            account = self.encoder.served(pubkey, stored)
            if account is None or not filters.matches(account.data):
                continue
            text = self.encoder.encode(pubkey, account, encoding, config.data_slice)
            entries.append(f'{{"account":{text},"pubkey":"{pubkey}"}}')
        value = f"[{','.join(entries)}]"
        if config.with_context:
            return f'{{"context":{context},"value":{value}}}'
        return value

    def _get_slot(self, params: list[Any]) -> str:
        _max_params(params, 1)
        self._context(_config(params, 0))
        return str(self.store.slot)

    def _get_health(self, params: list[Any]) -> str:
        _max_params(params, 0)
        return '"ok"'

    def _get_version(self, params: list[Any]) -> str:
        _max_params(params, 0)
        return json.dumps({"solana-core": API_VERSION, "feature-set": FEATURE_SET})

    def _get_latest_blockhash(self, params: list[Any]) -> str:
        _max_params(params, 1)
        context = self._context(_config(params, 0))
        slot = self.store.slot
        blockhash = blockhash_at(self._seed, slot)
        value = json.dumps({"blockhash": blockhash, "lastValidBlockHeight": slot + 150})
        return f'{{"context":{context},"value":{value}}}'

    def _get_genesis_hash(self, params: list[Any]) -> str:
        _max_params(params, 0)
        return f'"{self.genesis_hash}"'

    def _get_balance(self, params: list[Any]) -> str:
        if not params:
            raise _invalid("missing pubkey")
        _max_params(params, 2)
        pubkey = parse_pubkey(params[0])
        context = self._context(_config(params, 1))
        account = self.store.get(pubkey)
        return f'{{"context":{context},"value":{account.lamports if account else 0}}}'

    def answer(self, parsed: object) -> tuple[str | None, list[str]]:
        """Response text for a parsed request or batch (None if all were notifications),
        and the method of every call, unknown ones as ``"(unknown)"``."""
        if isinstance(parsed, list):
            if not parsed:
                return error_text(INVALID_REQUEST, "Invalid request", None), []
            texts: list[str] = []
            methods: list[str] = []
            for call in parsed:
                text, method = self._answer_one(call)
                if text is not None:
                    texts.append(text)
                methods.append(method)
            return (f"[{','.join(texts)}]" if texts else None), methods
        text, method = self._answer_one(parsed)
        return text, [method]

    def _answer_one(self, call: object) -> tuple[str | None, str]:
        if (
            not isinstance(call, dict)
            or call.get("jsonrpc") != "2.0"
            or not isinstance(call.get("method"), str)
        ):
            request_id = call.get("id") if isinstance(call, dict) else None
            return error_text(INVALID_REQUEST, "Invalid request", request_id), "(invalid)"
        method: str = call["method"]
        request_id = call.get("id")
        try:
            result = self.result(method, call.get("params"))
        except RpcError as exc:
            text = error_text(exc.code, exc.message, request_id, exc.data)
        else:
            text = f'{{"jsonrpc":"2.0","result":{result},"id":{json.dumps(request_id)}}}'
        label = method if method in self._methods else "(unknown)"
        # A call without an id is a JSON-RPC notification: nodes run it and answer nothing.
        return (text if "id" in call else None), label


def parse_body(body: bytes) -> object:
    """The JSON of a request body; raises a Parse error :class:`RpcError`."""
    try:
        return json.loads(body)
    except ValueError:
        raise RpcError(PARSE_ERROR, "Parse error") from None


def call_count(parsed: object) -> int:
    """How many calls a parsed request is (a batch counts each)."""
    return max(1, len(parsed)) if isinstance(parsed, list) else 1
