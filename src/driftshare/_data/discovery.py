"""Discovering Drift's markets, oracles and State account, decoded one account at a time.

driftpy's own "find all markets" path decodes every market in one go, so a single account
it cannot decode (a layout newer than the installed driftpy, corrupt data) fails the whole
subscription. Here discovery decodes account by account.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from driftpy.accounts.oracle import decode_oracle
from driftpy.accounts.types import DataAndSlot, FullOracleWrapper
from driftpy.addresses import (
    get_perp_market_public_key,
    get_spot_market_public_key,
    get_state_public_key,
)
from driftpy.memcmp import get_market_type_filter
from driftpy.types import MarketType, OracleInfo
from solders.pubkey import Pubkey

from driftshare._data.freshness import KEYS_PER_CALL
from driftshare._data.ledger import AccountRecord
from driftshare._transport import post_batch

__all__ = ["Discovery", "discover_markets", "index_by_pda"]

log = logging.getLogger(__name__)

_MAX_MARKET_INDEX = 512


@dataclass
class Discovery:
    """The program's markets and oracles as found on chain, with what could not be decoded."""

    slot: int
    perp: list[DataAndSlot] = field(default_factory=list)
    spot: list[DataAndSlot] = field(default_factory=list)
    oracles: list[FullOracleWrapper] = field(default_factory=list)
    unavailable: dict[int, str] = field(default_factory=dict)
    """Perp market index → why it is not served."""
    state: DataAndSlot | None = None
    records: list[AccountRecord] = field(default_factory=list)
    """The raw bytes of every account subscribed to, as read here."""

    @property
    def perp_indexes(self) -> list[int]:
        return sorted(ds.data.market_index for ds in self.perp)

    @property
    def spot_indexes(self) -> list[int]:
        return sorted(ds.data.market_index for ds in self.spot)

    def oracle_infos(self) -> list[OracleInfo]:
        return [OracleInfo(w.pubkey, w.oracle_source) for w in self.oracles]


@cache
def index_by_pda(program_id: Pubkey, kind: str) -> dict[Pubkey, int]:
    """Market index by market account address, for every index a market may have."""
    derive = get_perp_market_public_key if kind == "perp" else get_spot_market_public_key
    return {derive(program_id, i): i for i in range(_MAX_MARKET_INDEX)}


async def _program_accounts(program: Any) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """Perp and spot market accounts in one batched HTTP request, with their context slots."""
    kinds = {"perp": MarketType.Perp(), "spot": MarketType.Spot()}
    batch = []
    for number, market_type in enumerate(kinds.values()):
        memcmp = get_market_type_filter(market_type)
        options = {
            "encoding": "base64",
            "withContext": True,
            "filters": [{"memcmp": {"offset": memcmp.offset, "bytes": str(memcmp.bytes)}}],
        }
        batch.append(
            {
                "jsonrpc": "2.0",
                "id": number,
                "method": "getProgramAccounts",
                "params": [str(program.program_id), options],
            }
        )
    answers = await post_batch(program.provider.connection, batch)
    found: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    for kind, answer in zip(kinds, answers, strict=True):
        if "error" in answer:
            message = answer["error"].get("message")
            raise RuntimeError(f"getProgramAccounts ({kind} markets) failed: {message}")
        result = answer["result"]
        found[kind] = int(result["context"]["slot"]), list(result["value"])
    return found


def _decode_markets(
    program: Any,
    kind: Literal["perp", "spot"],
    slot: int,
    raw: list[dict[str, Any]],
    *,
    unavailable: dict[int, str],
    records: dict[int, AccountRecord],
) -> list[DataAndSlot]:
    by_pda = index_by_pda(program.program_id, kind)
    decoded: list[DataAndSlot] = []
    for item in raw:
        pubkey = Pubkey.from_string(item["pubkey"])
        index = by_pda.get(pubkey)
        data = base64.b64decode(item["account"]["data"][0])
        if index is not None:
            records[index] = AccountRecord(item["pubkey"], kind, slot, data)
        try:
            account = program.coder.accounts.decode(data)
        except Exception as exc:  # any decoder failure makes just this market unavailable
            reason = f"cannot decode {kind} market account {pubkey}: {exc!r}"
            log.warning("%s; serving the other markets", reason)
            if kind == "perp" and index is not None:
                unavailable[index] = reason
            continue
        decoded.append(DataAndSlot(slot, account))
    return decoded


async def _oracles_and_state(
    program: Any, sources: dict[Pubkey, Any], records: list[AccountRecord]
) -> tuple[list[FullOracleWrapper], DataAndSlot | None]:
    """Every oracle and the State account, in getMultipleAccounts calls of at most 100 keys."""
    state_key = get_state_public_key(program.program_id)
    keys = [state_key, *sources]
    wrappers: list[FullOracleWrapper] = []
    state: DataAndSlot | None = None
    for start in range(0, len(keys), KEYS_PER_CALL):
        chunk = keys[start : start + KEYS_PER_CALL]
        resp = await program.provider.connection.get_multiple_accounts(chunk, encoding="base64")
        slot = resp.context.slot
        for pubkey, account in zip(chunk, resp.value, strict=True):
            if pubkey == state_key:
                if account is not None:
                    data = bytes(account.data)
                    state = DataAndSlot(slot, program.coder.accounts.decode(data))
                    records.append(AccountRecord(str(pubkey), "state", slot, data))
                continue
            if account is None:
                log.warning("oracle account %s not found", pubkey)
                continue
            data = bytes(account.data)
            try:
                price = decode_oracle(data, sources[pubkey])
            except Exception as exc:  # one unreadable oracle must not hide the others
                log.warning("cannot decode oracle %s: %r", pubkey, exc)
                continue
            source = type(sources[pubkey]).__name__
            records.append(AccountRecord(str(pubkey), "oracle", slot, data, source))
            wrappers.append(FullOracleWrapper(pubkey, sources[pubkey], DataAndSlot(slot, price)))
    return wrappers, state


async def discover_markets(program: Any, perp_subset: Sequence[int] | None = None) -> Discovery:
    """Every perp and spot market of ``program`` (or the ``perp_subset``), decoded one by one.

    Two HTTP requests for a program of up to 100 oracles: the markets, then the oracles and
    the State account.
    """
    unavailable: dict[int, str] = {}
    perp_records: dict[int, AccountRecord] = {}
    spot_records: dict[int, AccountRecord] = {}
    raw = await _program_accounts(program)
    perp = _decode_markets(
        program, "perp", *raw["perp"], unavailable=unavailable, records=perp_records
    )
    spot = _decode_markets(
        program, "spot", *raw["spot"], unavailable=unavailable, records=spot_records
    )
    if perp_subset is not None:
        wanted = set(perp_subset)
        on_chain = sorted({ds.data.market_index for ds in perp} | set(unavailable))
        perp = [ds for ds in perp if ds.data.market_index in wanted]
        unavailable = {i: r for i, r in unavailable.items() if i in wanted}
        missing = sorted(wanted - {ds.data.market_index for ds in perp} - set(unavailable))
        for index in missing:
            unavailable[index] = (
                f"DRIFT_PERP_MARKETS names perp market {index}, which does not exist on chain"
            )
        if missing:
            log.warning(
                "DRIFT_PERP_MARKETS names perp market %s, which does not exist on chain "
                "(it has %d perp markets%s)",
                ", ".join(map(str, missing)),
                len(on_chain),
                f", indexes {on_chain[0]} to {on_chain[-1]}" if on_chain else "",
            )
    sources: dict[Pubkey, Any] = {}
    for ds in perp:
        sources[ds.data.amm.oracle] = ds.data.amm.oracle_source
    for ds in spot:
        sources[ds.data.oracle] = ds.data.oracle_source
    sources.pop(Pubkey.default(), None)
    # The accounts subscribed to: the kept markets, decodable or not, and their oracles.
    kept = {ds.data.market_index for ds in perp} | set(unavailable)
    records = [r for i, r in perp_records.items() if i in kept]
    records.extend(spot_records[ds.data.market_index] for ds in spot)
    oracles, state = await _oracles_and_state(program, sources, records)
    slot = max(raw["perp"][0], raw["spot"][0])
    return Discovery(slot, perp, spot, oracles, unavailable, state, records)
