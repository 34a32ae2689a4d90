"""Solana JSON-RPC methods answered from an :class:`AccountStore`, in a node's exact shapes.

Answers are built as JSON text: an account's encoding is cached per account version, so a
``getMultipleAccounts`` of 100 keys is string joins, not 100 re-encodings.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import based58
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from solders.pubkey import Pubkey
from solders.signature import Signature

from driftshare.sim.blocks import Blocks
from driftshare.sim.store import Account, AccountStore

__all__ = [
    "API_VERSION",
    "FEATURE_SET",
    "MAX_MULTIPLE_ACCOUNTS",
    "AccountEncoder",
    "AccountView",
    "CallConfig",
    "Encoding",
    "Filters",
    "JsonParser",
    "RpcError",
    "RpcHandler",
    "RpcMethod",
    "SubscribeConfig",
    "call_count",
    "error_text",
    "invalid_params",
    "max_params",
    "parse_body",
    "parse_config",
    "parse_model",
    "parse_pubkey",
    "parse_signature",
    "parse_subscribe_config",
    "validation_problems",
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
JsonParser = Callable[[Account], dict[str, object] | None]
"""An account's ``jsonParsed`` data (``{"parsed", "program", "space"}``), or None when the
node has no parser for it."""
RpcMethod = Callable[[list[Any]], str]
"""Answers one method's params with its result's JSON text; raises :class:`RpcError`."""


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def invalid_params(detail: str) -> RpcError:
    """An Invalid params error: ``Invalid params: <detail>``."""
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
        raise invalid_params(f"expected a base58 pubkey string, got {json.dumps(value)}")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise invalid_params(f"invalid pubkey {value!r}: {exc}") from None


def parse_signature(value: object) -> Signature:
    """A base58 transaction signature param, or an Invalid params error."""
    if not isinstance(value, str):
        raise invalid_params(f"expected a base58 signature string, got {json.dumps(value)}")
    try:
        return Signature.from_string(value)
    except ValueError:
        raise invalid_params(f"invalid signature {value!r}") from None


def validation_problems(exc: ValidationError, whole: str = "config") -> str:
    """Every problem pydantic found, ``field: message; ...`` (``whole`` names the object)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()
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


class CallConfig(BaseModel):
    """The config object account methods take; unknown keys are ignored as nodes do."""

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


_Model = TypeVar("_Model", bound=BaseModel)


def parse_model(model: type[_Model], params: list[Any], index: int) -> _Model:
    """The config object at ``params[index]`` as ``model`` (absent: all defaults); Invalid
    params if bad."""
    raw = params[index] if len(params) > index and params[index] is not None else {}
    if not isinstance(raw, dict):
        raise invalid_params(f"config must be an object, got {json.dumps(raw)}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise invalid_params(validation_problems(exc)) from None


def parse_config(params: list[Any], index: int) -> CallConfig:
    """The account methods' config object at ``params[index]``."""
    return parse_model(CallConfig, params, index)


def max_params(params: list[Any], count: int) -> None:
    """Invalid params unless there are at most ``count`` params."""
    if len(params) > count:
        raise invalid_params(f"expected at most {count} params, got {len(params)}")


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
    def from_config(cls, config: CallConfig) -> Filters:
        raw = config.filters or []
        if len(raw) > _MAX_FILTERS:
            raise invalid_params(f"Too many filters provided; max {_MAX_FILTERS}")
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
                raise invalid_params(
                    f"memcmp bytes {memcmp.bytes!r} are not valid {memcmp.encoding or 'base58'}"
                ) from None
            if len(want) > _MAX_MEMCMP_BYTES:
                raise invalid_params(f"memcmp bytes longer than {_MAX_MEMCMP_BYTES} bytes")
            memcmps.append((memcmp.offset, want))
        return cls(tuple(sizes), tuple(memcmps))


@dataclass(frozen=True, slots=True)
class SubscribeConfig:
    """What an account or program subscription asked for."""

    encoding: Encoding
    filters: Filters


def parse_subscribe_config(params: list[Any], index: int) -> SubscribeConfig:
    """Encoding and filters of a subscribe call; errors as Invalid params."""
    config = parse_config(params, index)
    return SubscribeConfig(config.encoding or "binary", Filters.from_config(config))


class AccountEncoder:
    """Account JSON text per encoding, as nodes send it, cached per account version."""

    def __init__(self, view: AccountView, parser: JsonParser | None = None) -> None:
        self._view = view
        self._parser = parser
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
        parsed = None
        if encoding == "jsonParsed" and self._parser is not None:
            parsed = self._parser(account)
        text = json.dumps(
            {
                "data": self._data(data, encoding) if parsed is None else parsed,
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

    def __init__(self, store: AccountStore, encoder: AccountEncoder, blocks: Blocks) -> None:
        self.store = store
        self.encoder = encoder
        self.blocks = blocks
        self._methods: dict[str, RpcMethod] = {
            "getAccountInfo": self._get_account_info,
            "getMultipleAccounts": self._get_multiple_accounts,
            "getProgramAccounts": self._get_program_accounts,
            "getSlot": self._get_slot,
            "getHealth": self._get_health,
            "getVersion": self._get_version,
            "getLatestBlockhash": self._get_latest_blockhash,
            "getBlockHeight": self._get_block_height,
            "getBalance": self._get_balance,
            "getGenesisHash": self._get_genesis_hash,
        }

    def add_methods(self, methods: dict[str, RpcMethod]) -> None:
        """Answer ``methods`` too (the transaction methods live in ``driftshare.sim.tx_rpc``)."""
        self._methods.update(methods)

    def result(self, method: str, params: object) -> str:
        """JSON text of ``method``'s result; raises :class:`RpcError`."""
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise invalid_params("params must be an array")
        return handler(params)

    def context(self, config: CallConfig) -> str:
        """The ``context`` JSON of an answer; MinContextSlot error if the tip is not there yet."""
        return self.context_at(config.min_context_slot)

    def context_at(self, min_context_slot: int | None) -> str:
        """:meth:`context` for a config of another shape than :class:`CallConfig`."""
        slot = self.store.slot
        if min_context_slot is not None and min_context_slot > slot:
            raise RpcError(
                MIN_CONTEXT_SLOT_NOT_REACHED,
                "Minimum context slot has not been reached",
                {"contextSlot": slot},
            )
        return f'{{"slot":{slot},"apiVersion":"{API_VERSION}"}}'

    def _account_text(self, pubkey: Pubkey, config: CallConfig) -> str:
        stored = self.store.get(pubkey)
        account = None if stored is None else self.encoder.served(pubkey, stored)
        if account is None:
            return "null"
        return self.encoder.encode(pubkey, account, config.encoding or "binary", config.data_slice)

    def _get_account_info(self, params: list[Any]) -> str:
        if not params:
            raise invalid_params("missing pubkey")
        max_params(params, 2)
        pubkey = parse_pubkey(params[0])
        config = parse_config(params, 1)
        _check_slice(config.encoding or "binary", config.data_slice)
        context = self.context(config)
        return f'{{"context":{context},"value":{self._account_text(pubkey, config)}}}'

    def _get_multiple_accounts(self, params: list[Any]) -> str:
        if not params or not isinstance(params[0], list):
            raise invalid_params("first param must be an array of pubkeys")
        max_params(params, 2)
        if len(params[0]) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [parse_pubkey(p) for p in params[0]]
        config = parse_config(params, 1)
        # Nodes answer getMultipleAccounts in base64 when no encoding is asked for (agave's
        # rpc.rs), unlike getAccountInfo and getProgramAccounts (base58).
        config.encoding = config.encoding or "base64"
        _check_slice(config.encoding, config.data_slice)
        context = self.context(config)
        values = ",".join(self._account_text(pubkey, config) for pubkey in pubkeys)
        return f'{{"context":{context},"value":[{values}]}}'

    def _get_program_accounts(self, params: list[Any]) -> str:
        if not params:
            raise invalid_params("missing program id")
        max_params(params, 2)
        program = parse_pubkey(params[0])
        config = parse_config(params, 1)
        encoding = config.encoding or "binary"
        _check_slice(encoding, config.data_slice)
        filters = Filters.from_config(config)
        context = self.context(config)
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
        max_params(params, 1)
        self.context(parse_config(params, 0))
        return str(self.store.slot)

    def _get_health(self, params: list[Any]) -> str:
        max_params(params, 0)
        return '"ok"'

    def _get_version(self, params: list[Any]) -> str:
        max_params(params, 0)
        return json.dumps({"solana-core": API_VERSION, "feature-set": FEATURE_SET})

    def _get_latest_blockhash(self, params: list[Any]) -> str:
        max_params(params, 1)
        context = self.context(parse_config(params, 0))
        blockhash, last_valid = self.blocks.latest()
        value = json.dumps({"blockhash": str(blockhash), "lastValidBlockHeight": last_valid})
        return f'{{"context":{context},"value":{value}}}'

    def _get_block_height(self, params: list[Any]) -> str:
        max_params(params, 1)
        self.context(parse_config(params, 0))
        return str(self.blocks.height)

    def _get_genesis_hash(self, params: list[Any]) -> str:
        max_params(params, 0)
        return f'"{self.blocks.genesis}"'

    def _get_balance(self, params: list[Any]) -> str:
        if not params:
            raise invalid_params("missing pubkey")
        max_params(params, 2)
        pubkey = parse_pubkey(params[0])
        context = self.context(parse_config(params, 1))
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
