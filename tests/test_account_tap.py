"""AccountTap: what subscribers read reaches the ledger, or waits while another serves."""

from __future__ import annotations

from driftshare._data.ledger import AccountLedger, AccountRecord
from driftshare._data.tap import AccountTap

KEY = "Key1111111111111111111111111111111111111111"


def test_an_inactive_tap_holds_its_reads_until_activated_dated_when_read() -> None:
    now = [10.0]
    ledger = AccountLedger(clock=lambda: now[0])
    AccountTap(ledger, [AccountRecord(KEY, "perp", 5, b"old")])
    served_since = ledger.get(KEY).confirmed_at  # type: ignore[union-attr]

    now[0] = 20.0
    tap = AccountTap(
        ledger, [AccountRecord(KEY, "perp", 7, b"new")], active=False, clock=lambda: now[0]
    )
    now[0] = 21.0
    tap.confirm(KEY, b"new", 8)
    now[0] = 22.0
    tap.record(KEY, b"newer", 9)

    # The old subscriber still serves "old": the ledger still describes it.
    entry = ledger.get(KEY)
    assert entry is not None
    assert (entry.record.data, entry.record.slot, entry.confirmed_at) == (b"old", 5, served_since)

    now[0] = 30.0
    tap.activate()
    assert (entry.record.data, entry.record.slot) == (b"newer", 9)
    assert entry.confirmed_at == 22.0  # when it was read, not when it was let through
    tap.confirm(KEY, b"newer", 10)
    assert (entry.confirmed_slot, entry.confirmed_at) == (10, 30.0)


def test_an_active_tap_writes_through() -> None:
    ledger = AccountLedger(clock=lambda: 1.0)
    tap = AccountTap(ledger, [AccountRecord(KEY, "oracle", 3, b"a", "PythPull")])
    tap.record(KEY, b"b", 4)
    entry = ledger.get(KEY)
    assert entry is not None
    assert (entry.record.data, entry.record.kind, entry.record.oracle_source) == (
        b"b",
        "oracle",
        "PythPull",
    )
    tap.record("not subscribed", b"x", 5)
    assert ledger.get("not subscribed") is None


def test_a_value_at_an_impossible_future_slot_gives_way_to_live_data() -> None:
    # A snapshot (or a fleet record) claims a slot the chain has not reached.
    ledger = AccountLedger(clock=lambda: 1.0)
    ledger.apply(AccountRecord(KEY, "perp", 10**12, b"from a bad snapshot"))
    ledger.confirm(KEY, 10**12 + 5)
    tap = AccountTap(ledger, [AccountRecord(KEY, "perp", 1, b"discovered")])
    assert ledger.get(KEY).record.slot == 10**12  # type: ignore[union-attr]  # chain unheard
    tap.record(KEY, b"live", 500)  # upstream: the chain is at slot 500
    entry = ledger.get(KEY)
    assert entry is not None
    assert (entry.record.data, entry.record.slot, entry.confirmed_slot) == (b"live", 500, 500)
    tap.confirm(KEY, b"live", 501)
    assert entry.confirmed_slot == 501
    # A slot within reach of the chain stays ordered as before: an older one never wins.
    ledger.apply(AccountRecord(KEY, "perp", 600, b"newer"))
    tap.record(KEY, b"older", 550)
    assert entry.record.data == b"newer"
