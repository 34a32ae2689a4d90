"""EndpointSelector: fail over on sustained failure, hysteresis, return to the preferred one."""

from __future__ import annotations

import pytest

from conftest import FakeClock
from driftshare._client.endpoints import EndpointSelector

A, B, C = "http://a.test", "http://b.test", "http://c.test"


def _selector(*urls: str) -> tuple[EndpointSelector, FakeClock]:
    clock = FakeClock(100.0)
    return EndpointSelector(urls or (A, B), clock=clock), clock


def _fail_for(selector: EndpointSelector, clock: FakeClock, url: str, seconds: float) -> None:
    """Report a failure of ``url`` every half second for ``seconds``, choosing after each."""
    for _ in range(int(seconds / 0.5)):
        clock.now += 0.5
        selector.report(url, False)
        selector.choose()


def test_starts_on_the_first_endpoint() -> None:
    selector, _ = _selector(A, B)
    assert selector.active == A
    assert selector.choose() == A
    assert selector.preferred() == ()


def test_one_failure_does_not_switch() -> None:
    selector, clock = _selector(A, B)
    clock.now += 60
    selector.report(A, False)
    assert selector.choose() == A


def test_switches_after_three_seconds_of_failures() -> None:
    selector, clock = _selector(A, B)
    selector.report(A, True)
    _fail_for(selector, clock, A, 2.5)
    assert selector.active == A
    _fail_for(selector, clock, A, 0.5)
    assert selector.active == B
    assert selector.switches == 1
    assert selector.preferred() == (A,)


def test_a_success_in_between_resets_the_failure_run() -> None:
    selector, clock = _selector(A, B)
    for _ in range(10):
        _fail_for(selector, clock, A, 2.0)
        selector.report(A, True)
    assert selector.active == A


def test_returns_to_the_first_after_ten_healthy_seconds_only() -> None:
    selector, clock = _selector(A, B)
    _fail_for(selector, clock, A, 5.0)
    assert selector.active == B
    for _ in range(20):  # healthy from the first of these reports: 9.5 s, not yet
        clock.now += 0.5
        selector.report(A, True)
        selector.report(B, True)
        assert selector.choose() == B
    clock.now += 0.5
    selector.report(A, True)
    assert selector.choose() == A
    assert selector.switches == 2


def test_a_flapping_first_endpoint_is_not_returned_to() -> None:
    selector, clock = _selector(A, B)
    _fail_for(selector, clock, A, 5.0)
    for _ in range(10):
        for _ in range(8):  # 4 s good, then one failure: never 10 s in a row
            clock.now += 0.5
            selector.report(A, True)
            selector.choose()
        clock.now += 0.5
        selector.report(A, False)
        selector.choose()
    assert selector.active == B
    assert selector.switches == 1


def test_a_new_endpoint_gets_a_grace_period() -> None:
    clock = FakeClock(100.0)
    selector = EndpointSelector((A, B, C), clock=clock)
    clock.now += 30
    _fail_for(selector, clock, A, 3.0)  # B has never answered, but was not seen failing
    assert selector.active == B  # long unused before it was chosen: not held against it
    selector.report(B, False)
    clock.now += 0.5
    selector.report(B, False)
    assert selector.choose() == B
    _fail_for(selector, clock, B, 3.0)
    assert selector.active == C


def test_skips_an_endpoint_that_failed_lately() -> None:
    selector, clock = _selector(A, B, C)
    selector.report(B, False)
    _fail_for(selector, clock, A, 4.0)
    assert selector.active == C


def test_stays_put_when_every_other_endpoint_failed_lately_but_moves_on() -> None:
    selector, clock = _selector(A, B)
    selector.report(B, False)
    _fail_for(selector, clock, A, 3.0)
    # B failed lately too: still the best other choice, rather than staying on a dead A.
    assert selector.active == B


def test_reports_for_unknown_urls_are_ignored() -> None:
    selector, clock = _selector(A, B)
    _fail_for(selector, clock, "http://other.test", 10.0)
    assert selector.active == A


@pytest.mark.parametrize("urls", [(), (A, A)])
def test_bad_url_lists_are_rejected(urls: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="EndpointSelector needs"):
        EndpointSelector(urls)


def test_a_single_endpoint_never_switches() -> None:
    selector, clock = _selector(A)
    _fail_for(selector, clock, A, 60.0)
    assert selector.active == A
    assert selector.switches == 0
