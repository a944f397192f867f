"""The pending queue: order, backoff 1 s -> 10 s on an injected clock, cluster changes, waiting gangs."""

from __future__ import annotations

import pytest

from scheduler.queue import SchedulingQueue, UnitState, gang_unit_key
from tests.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def q(clock: ManualClock) -> SchedulingQueue:
    return SchedulingQueue(clock, initial_backoff_s=1.0, max_backoff_s=10.0, unschedulable_retry_s=60.0)


def test_pop_ready_orders_by_priority_then_arrival(q):
    q.add("ns/a")
    q.add("ns/b", priority=10)
    q.add("ns/c")
    assert [u.key for u in q.pop_ready(10)] == ["ns/b", "ns/a", "ns/c"]
    assert len(q) == 0


def test_pop_ready_respects_the_limit(q):
    for i in range(5):
        q.add(f"ns/p{i}")
    assert [u.key for u in q.pop_ready(2)] == ["ns/p0", "ns/p1"]
    assert len(q) == 3


@pytest.mark.parametrize("attempts,want", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)],
                         ids=lambda v: str(v))
def test_backoff_doubles_up_to_the_maximum(q, attempts, want):
    assert q.backoff_s(attempts) == want


def test_error_backoff_then_active(q, clock):
    q.add("ns/a")
    unit = q.pop_ready(1)[0]
    q.requeue(unit)
    q.backoff("ns/a")
    assert q.get("ns/a").state == UnitState.BACKOFF
    clock.now += 0.99
    assert q.pop_ready(1) == []
    clock.now += 0.02
    assert [u.key for u in q.pop_ready(1)] == ["ns/a"]


def test_unschedulable_waits_for_a_cluster_change(q, clock):
    q.add("ns/a")
    q.requeue(q.pop_ready(1)[0])
    q.unschedulable("ns/a")
    clock.now += 30
    assert q.pop_ready(1) == []  # nothing changed
    q.cluster_changed()  # backoff counts from the failure: 1 s already passed
    assert [u.key for u in q.pop_ready(1)] == ["ns/a"]


def test_unschedulable_is_retried_after_the_retry_interval_without_changes(q, clock):
    q.add("ns/a")
    q.requeue(q.pop_ready(1)[0])
    q.unschedulable("ns/a")
    assert q.next_ready_at() == clock.now + 60
    clock.now += 60
    assert [u.key for u in q.pop_ready(1)] == ["ns/a"]


def test_cluster_change_soon_after_a_failure_still_backs_off(q, clock):
    q.add("ns/a")
    q.requeue(q.pop_ready(1)[0])
    for _ in range(3):  # the third failure in a row: 4 s backoff
        q.unschedulable("ns/a")
    q.cluster_changed()
    assert q.get("ns/a").state == UnitState.BACKOFF
    clock.now += 3.9
    assert q.pop_ready(1) == []
    clock.now += 0.2
    assert [u.key for u in q.pop_ready(1)] == ["ns/a"]


def test_waiting_gang_becomes_active_when_a_member_arrives(q, clock):
    key = gang_unit_key("ns/job")
    q.add(key, is_gang=True)
    q.requeue(q.pop_ready(1)[0])
    q.wait(key)
    clock.now += 1000
    assert q.pop_ready(5) == []
    q.add(key, is_gang=True)  # another member
    assert [u.key for u in q.pop_ready(5)] == [key]


def test_waiting_gang_wakes_at_its_deadline(q, clock):
    key = gang_unit_key("ns/job")
    q.add(key, is_gang=True)
    q.requeue(q.pop_ready(1)[0])
    q.wait(key, until=clock.now + 300)
    assert q.next_ready_at() == clock.now + 300
    clock.now += 300
    assert [u.key for u in q.pop_ready(5)] == [key]


def test_counts_by_state(q):
    q.add("ns/a")
    q.add("ns/b")
    q.add("ns/c")
    units = q.pop_ready(3)
    for u in units:
        q.requeue(u)
    q.unschedulable("ns/b")
    q.backoff("ns/c")
    assert q.counts() == {"active": 1, "backoff": 1, "unschedulable": 1, "waiting": 0}
