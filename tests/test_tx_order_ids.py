"""user_order_id allocation: never one open on chain, never one still in flight."""

from __future__ import annotations

from driftshare._tx.order_ids import UserOrderIds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ids_are_nonzero_u8_and_skip_open_and_in_flight_ones() -> None:
    clock = Clock()
    ids = UserOrderIds(hold_s=10, clock=clock)
    first = ids.take(open_ids=[1, 2])
    second = ids.take(open_ids=[])
    assert first == 3
    assert second == 4
    # 1 and 2 are no longer open: all 253 others are free, in order after 4.
    taken = [ids.take([]) for _ in range(253)]
    assert taken[:2] == [5, 6]
    assert None not in taken
    assert set(taken) | {3, 4} == set(range(1, 256))
    assert ids.take([]) is None  # every id is in flight


def test_an_id_is_free_again_once_its_hold_has_passed_and_it_is_not_open() -> None:
    clock = Clock()
    ids = UserOrderIds(hold_s=10, clock=clock)
    taken = {ids.take([]) for _ in range(255)}
    assert taken == set(range(1, 256))
    clock.now = 11
    assert ids.take(open_ids=range(1, 255)) == 255


def test_a_callers_own_id_is_held() -> None:
    ids = UserOrderIds(hold_s=10, clock=Clock())
    ids.hold(1)
    assert ids.take([]) == 2
