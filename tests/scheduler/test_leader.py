"""Leader election on an in-memory Lease with an injected clock (15 s lease, 10 s renew deadline, 2 s retry)."""

from __future__ import annotations

import pytest

from scheduler.fakes import InMemoryLeaseStore
from scheduler.leader import LeaderElector, check_timings
from scheduler.ports import KubeApiError, LeaseRecord
from tests.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(0.0)


@pytest.fixture
def store() -> InMemoryLeaseStore:
    return InMemoryLeaseStore()


def elector(store, clock, name: str, events: list[str] | None = None) -> LeaderElector:
    log = events if events is not None else []
    return LeaderElector(store, name, lease_duration_s=15, renew_deadline_s=10, retry_period_s=2, clock=clock,
                         wall=lambda: f"t={clock.now:.1f}", on_started=lambda: log.append(f"{name} started"),
                         on_stopped=lambda: log.append(f"{name} stopped"))


def test_first_candidate_creates_the_lease_and_leads(store, clock):
    events: list[str] = []
    a = elector(store, clock, "a", events)
    assert a.step()
    rec = store.get()
    assert (rec.holder, rec.lease_duration_s, rec.transitions, rec.acquire_time) == ("a", 15, 0, "t=0.0")
    assert events == ["a started"]


def test_standby_waits_a_full_lease_duration_of_silence_on_its_own_clock(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.step()
    assert not b.step()
    clock.now = 14.9  # the leader went silent at t=0; b first saw the record at t=0
    assert not b.step()
    clock.now = 15.1
    assert b.step()
    rec = store.get()
    assert rec.holder == "b" and rec.transitions == 1


def test_standby_never_takes_a_lease_that_keeps_being_renewed(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    for t in range(0, 60, 2):
        clock.now = t
        assert a.step()
        assert not b.step()
    assert store.get().holder == "a"


def test_leader_that_cannot_renew_stops_binding_at_the_renew_deadline(store, clock):
    events: list[str] = []
    a = elector(store, clock, "a", events)
    a.step()
    store.fail_writes = True
    clock.now = 9.9
    assert a.is_leader  # last renew 9.9 s ago
    clock.now = 10.0
    assert not a.is_leader  # at once, without waiting for the election loop
    a.step()
    assert events == ["a started", "a stopped"]


def test_leader_that_sees_another_holder_stops_at_once(store, clock):
    events: list[str] = []
    a = elector(store, clock, "a", events)
    a.step()
    rec = store.get()
    store.update(LeaseRecord("intruder", 15, "x", "x", rec.transitions + 1, rec.resource_version))
    clock.now = 2
    assert not a.step()
    assert events == ["a started", "a stopped"]


def test_release_hands_over_without_waiting_for_expiry(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.step()
    b.step()
    a.release()
    assert not a.is_leader and store.get().holder == ""
    clock.now = 1.0
    assert b.step() and store.get().holder == "b"


def test_conflicting_writes_leave_one_leader(store, clock):
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.step()
    b.step()  # b sees a's record at t=0
    clock.now = 20  # a went silent: expired for b
    stale = store.get()
    assert b.step()
    with pytest.raises(KubeApiError) as exc:
        store.update(stale)  # a write based on the old record loses
    assert exc.value.is_conflict
    assert store.get().holder == "b"


def test_api_errors_are_not_fatal(store, clock):
    a = elector(store, clock, "a")
    store.fail_writes = True
    assert not a.step()
    store.fail_writes = False
    clock.now = 2
    assert a.step()


@pytest.mark.parametrize("timings,problem", [
    ((15, 10, 2), None),
    ((10, 10, 2), "lease_duration_s (10) must be more than renew_deadline_s (10)"),
    ((15, 2.4, 2), "renew_deadline_s (2.4) must be more than 1.2 x retry_period_s (2)"),
    ((15, 10, 0), "retry_period_s must be positive, not 0"),
], ids=["defaults", "lease-not-longer", "deadline-too-short", "zero-retry"])
def test_timing_rules(timings, problem):
    assert check_timings(*timings) == problem
    if problem:
        with pytest.raises(ValueError, match="must be"):
            LeaderElector(InMemoryLeaseStore(), "a", lease_duration_s=timings[0], renew_deadline_s=timings[1],
                          retry_period_s=timings[2])


class SlowReadStore(InMemoryLeaseStore):
    """Each read takes ``delay`` seconds of the test clock."""

    def __init__(self, clock: ManualClock, delay: float) -> None:
        super().__init__()
        self.clock, self.delay = clock, delay

    def get(self):
        self.clock.now += self.delay
        return super().get()


def test_a_standby_dates_what_it_read_from_when_the_read_returned(clock):
    store = SlowReadStore(clock, 0.0)
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.step()  # a renews at t=0
    store.delay = 5.0
    assert not b.step()  # b's read starts at t=0 and returns at t=5 with a's renewal
    store.delay = 0.0
    clock.now = 19.0  # 19 s after a's renewal, 14 s after b saw it
    assert not b.step()
    clock.now = 20.1
    assert b.step()


def test_the_renew_deadline_counts_from_before_the_renewal_request(clock):
    store = SlowReadStore(clock, 0.0)
    a = elector(store, clock, "a")
    store.delay = 3.0
    assert a.step()  # asked at t=0, answered at t=3
    clock.now = 9.9
    assert a.is_leader
    clock.now = 10.1  # 10 s after the request: the server may have dated the renewal at t=0
    assert not a.is_leader


def test_run_can_leave_the_release_to_the_caller(store, clock):
    import threading

    a = elector(store, clock, "a")
    stop = threading.Event()
    stop.set()
    a.step()
    a.run(stop, release=False)
    assert store.get().holder == "a"
    a.release()
    assert store.get().holder == ""
