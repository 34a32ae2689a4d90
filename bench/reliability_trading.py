"""The trading faults of RELIABILITY.md: under each of the simulator's trading faults, five
engines (sub-accounts 0 to 3 of one wallet, sub-account 0 of another) place resting limit
orders through one shared client, and the chain's User accounts say whether each result was
the truth (``python -m bench.reliability --trading``)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from driftpy.addresses import get_user_account_public_key
from driftpy.decode.user import decode_user
from driftpy.types import OrderStatus
from solders.keypair import Keypair

from driftshare import DriftAdapter
from driftshare.manager import DriftClientManager
from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID
from driftshare.sim.wallets import open_wallet

__all__ = ["TRADING_FAULTS", "render_trading", "run_trading"]

ORDERS_PER_ENGINE = 3
WINDOW_S = 3.0
"""How long a fault that lasts stays on while the engines place their orders."""
SETTLE_S = 10.0
"""After the last answer: 150 slots at the simulator's 0.05 s, so every signature an
``unknown`` answer named has landed or expired before the chain is read."""
TX_ENV: dict[str, Any] = {
    "health_interval_s": 3600,
    "request_timeout_s": 1.0,
    "call_deadline_s": 3.0,
    "tx_status_interval_s": 0.2,
    "tx_resend_s": 0.5,
    "tx_timeout_s": 120.0,
}
"""The shared client's settings: RPC answers within 1 s; a write's answer within 120 s. The
orders are limit orders without an expiry: none expires before the chain is read."""

_CUT_EVERY_S = 0.5

Inject = Callable[[Simulator], Coroutine[Any, Any, None]]


async def _none(sim: Simulator) -> None:
    return None


async def _windowed(on: Callable[[], object], off: Callable[[], object]) -> None:
    on()
    await asyncio.sleep(WINDOW_S)
    off()


async def _dropped(sim: Simulator) -> None:
    await _windowed(
        lambda: sim.faults.drop_transactions(10**6), lambda: sim.faults.drop_transactions(0)
    )


async def _lost_429(sim: Simulator) -> None:
    sim.faults.lose_replies(10, "429")


async def _lost_timeout(sim: Simulator) -> None:
    sim.faults.lose_replies(10, "timeout")


async def _late(sim: Simulator) -> None:
    await _windowed(lambda: sim.faults.delay_landing(2.0), lambda: sim.faults.delay_landing(0))


async def _expiry(sim: Simulator) -> None:
    await _windowed(
        lambda: sim.faults.expire_blockhashes(0), lambda: sim.faults.expire_blockhashes(150)
    )


async def _sockets_cut(sim: Simulator) -> None:
    # Landing late, each transaction confirms after the socket its subscription was on is cut.
    sim.faults.delay_landing(1.0)
    for _ in range(round(WINDOW_S / _CUT_EVERY_S)):
        await asyncio.sleep(_CUT_EVERY_S)
        await sim.faults.drop_ws()
    sim.faults.delay_landing(0)


async def _stalled(sim: Simulator) -> None:
    await _windowed(lambda: sim.faults.set_stall(True), lambda: sim.faults.set_stall(False))


async def _storm(sim: Simulator) -> None:
    await _windowed(lambda: sim.faults.fail_next(10**6), lambda: sim.faults.fail_next(0))


async def _down(sim: Simulator) -> None:
    await sim.faults.down(WINDOW_S)


@dataclass(frozen=True)
class TradingFault:
    name: str
    what: str
    inject: Inject
    funded: bool = True
    """False: the engines deposit nothing, so the program refuses every order."""


TRADING_FAULTS = [
    TradingFault("none", "no fault", _none),
    TradingFault(
        "dropped", "every transaction accepted and never landed, for the window", _dropped
    ),
    TradingFault("landed, then 429", "10 transactions land, their sends answered 429", _lost_429),
    TradingFault(
        "landed, then no answer", "10 transactions land, their sends never answered", _lost_timeout
    ),
    TradingFault("late landing", "transactions land 2 s after their send, for the window", _late),
    TradingFault(
        "early blockhash expiry",
        "every blockhash refused (getLatestBlockhash still promises 150 blocks), for the window",
        _expiry,
    ),
    TradingFault(
        "WebSocket cut",
        f"transactions land 1 s after their send and every WebSocket is cut every "
        f"{_CUT_EVERY_S} s, for the window",
        _sockets_cut,
    ),
    TradingFault(
        "notifications stalled",
        "no WebSocket notification (signatures' included) on sockets that stay up, for the window",
        _stalled,
    ),
    TradingFault("429 storm", "every HTTP request answered 429, for the window", _storm),
    TradingFault("RPC down", "HTTP and WebSocket ports closed for the window", _down),
    TradingFault("refused", "no collateral: the program refuses every order", _none, False),
]


@dataclass
class TradingRow:
    fault: str
    orders: int = 0
    confirmed: int = 0
    failed: int = 0
    unknown: int = 0
    on_chain: int = 0
    """Intended orders the chain holds."""
    duplicates: int = 0
    """Orders placed beyond one per intended order."""
    false_confirmed: int = 0
    false_failed: int = 0
    unknown_landed: int = 0
    exceptions: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def broken(self) -> list[str]:
        found = []
        if self.duplicates:
            found.append("duplicates")
        if self.false_confirmed:
            found.append("false confirmed")
        if self.false_failed:
            found.append("false failed")
        if self.exceptions:
            found.append("exceptions")
        return found


def _user(sim: Simulator, wallet: Keypair, sub: int) -> Any:
    account = sim.store.get(get_user_account_public_key(DRIFT_PROGRAM_ID, wallet.pubkey(), sub))
    if account is None:
        raise RuntimeError(f"no User account for sub-account {sub}")
    return decode_user(account.data)


async def _engine(adapter: DriftAdapter, price: float, answers: list[dict[str, Any]]) -> int:
    """Place the engine's orders one after another; the exceptions it saw."""
    exceptions = 0
    for _ in range(ORDERS_PER_ENGINE):
        try:
            answers.append(await adapter.place_perp_order(0, "long", 0.1, "LIMIT", price=price))
        except Exception:  # counted: an engine must never see one
            exceptions += 1
    return exceptions


async def run_row(fault: TradingFault) -> TradingRow:
    """One fault: fresh simulator and shared client, five engines, the chain's verdict."""
    started = time.monotonic()
    row = TradingRow(fault.name)
    sim = Simulator(markets=2, tick_s=0.05)
    await sim.start()
    DriftClientManager.configure(rpc_url=sim.http_url, **TX_ENV)
    settings = DriftClientManager.settings()
    adapters: list[DriftAdapter] = []
    try:
        first = await open_wallet(sim.http_url, settings, subs=4, usdc=10_000)
        second = await open_wallet(sim.http_url, settings, subs=1, usdc=10_000)
        engines = [(first, sub) for sub in range(4)] + [(second, 0)]
        for wallet, sub in engines:
            adapter = DriftAdapter()
            if not await adapter.connect(wallet, sub):
                raise RuntimeError(f"engine on sub-account {sub} cannot connect")
            adapters.append(adapter)
            if fault.funded and (await adapter.deposit(1_000))["status"] != "confirmed":
                raise RuntimeError("the deposit did not land")
        mark = await adapters[0].get_mark_price(0)
        if mark is None:
            raise RuntimeError("no mark price")
        price = round(mark / 2, 2)  # resting: far under the market, never filled
        answers: list[list[dict[str, Any]]] = [[] for _ in adapters]
        injected = asyncio.create_task(fault.inject(sim))
        counts = await asyncio.gather(
            *(_engine(a, price, out) for a, out in zip(adapters, answers, strict=True))
        )
        await injected
        await sim.faults.clear()
        await asyncio.sleep(SETTLE_S)
        row.exceptions = sum(counts)
        for (wallet, sub), results in zip(engines, answers, strict=True):
            user = _user(sim, wallet, sub)
            open_ids = [o.user_order_id for o in user.orders if o.status == OrderStatus.Open()]
            placed = int(user.next_order_id) - 1
            row.duplicates += placed - len(set(open_ids))
            for answer in results:
                row.orders += 1
                held = answer["user_order_id"] in open_ids
                row.on_chain += held
                status = answer["status"]
                setattr(row, status, getattr(row, status) + 1)
                row.false_confirmed += status == "confirmed" and not held
                row.false_failed += status == "failed" and held
                row.unknown_landed += status == "unknown" and held
                if answer["error"]:
                    row.errors[answer["error"]] = row.errors.get(answer["error"], 0) + 1
    finally:
        for adapter in adapters:
            await adapter.disconnect()
        await DriftClientManager.shutdown()
        await sim.stop()
    row.seconds = time.monotonic() - started
    return row


async def run_trading() -> dict[str, Any]:
    """Every trading fault, one after another; plain data for ``trading.json``."""
    rows = []
    for fault in TRADING_FAULTS:
        row = await run_row(fault)
        print(f"trading {row.fault:24} {dataclasses.asdict(row)}", flush=True)
        rows.append(dataclasses.asdict(row))
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "orders_per_engine": ORDERS_PER_ENGINE,
        "window_s": WINDOW_S,
        "settings": TX_ENV,
        "rows": rows,
    }


def render_trading(results: dict[str, Any]) -> list[str]:
    """The trading faults' part of RELIABILITY.md."""
    rows = [TradingRow(**r) for r in results["rows"]]
    settings = ", ".join(f"`DRIFT_{k.upper()}={v}`" for k, v in results["settings"].items())
    out = [
        "## Trading faults",
        "",
        f"Measured {results['generated']}. Each row starts a fresh simulator (2 perp markets, a "
        "slot every 0.05 s) and one shared client, five engines (`DriftAdapter`s on "
        "sub-accounts 0 to 3 of one wallet and sub-account 0 of another, 1,000 USDC deposited "
        f"each), puts the fault on and lets every engine place {results['orders_per_engine']} "
        "resting limit orders one after another (all engines at once), takes the fault off, "
        "waits until every signature has landed or expired, and then reads the chain: the "
        "User accounts in the simulator's store. Settings: " + settings + ".",
        "",
        "- **Answers**: what the writes returned, `confirmed / failed / unknown`.",
        "- **On chain**: intended orders (by their `user_order_id`) the User accounts hold.",
        "- **Duplicates**: orders the program placed beyond one per intended order "
        "(`next_order_id - 1` minus the distinct open orders).",
        "- **False confirmed / false failed**: a `confirmed` answer whose order is not on the "
        "chain, a `failed` one whose order is.",
        "- **Unknown that landed**: `unknown` answers whose order is on the chain (true either "
        "way: unknown says the engine must check the signature).",
        "",
        "Invariants: 0 duplicates, 0 false confirmed, 0 false failed, 0 exceptions.",
        "",
        "| Fault | Orders | Answers | On chain | Duplicates | False confirmed | False failed "
        "| Unknown that landed | Exceptions | Errors | s | Broken |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        errors = ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items())) or "—"
        out.append(
            f"| {r.fault} | {r.orders} | {r.confirmed} / {r.failed} / {r.unknown} | "
            f"{r.on_chain} | {r.duplicates} | {r.false_confirmed} | {r.false_failed} | "
            f"{r.unknown_landed} | {r.exceptions} | {errors} | {r.seconds:.0f} | "
            f"{', '.join(r.broken) or '—'} |"
        )
    out += ["", "| Trading fault | How the simulator fails |", "|---|---|"]
    out += [f"| {f.name} | {f.what} |" for f in TRADING_FAULTS]
    return [*out, ""]
