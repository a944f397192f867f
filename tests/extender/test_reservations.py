"""The gang reservation book: held slots, reconcile (members counted by the cache), expiry on an injected clock."""

from __future__ import annotations

import pytest

from scheduler.extender.reservations import ReservationBook, Slot

from .conftest import Clock


def slots() -> list[Slot]:
    return [Slot(0, "worker", "n1", (0, 1, 2, 3), 1000, 1000, 1024, pod_key="ml/w-0"),
            Slot(1, "worker", "n2", (0, 1, 2, 3), 1000, 1000, 1024, pod_key="ml/w-1")]


def test_held_until_the_cache_counts_each_member():
    book = ReservationBook(Clock(), timeout_s=60)
    book.add("ml/g", slots())
    assert [s.node for s in book.held_slots()] == ["n1", "n2"]
    for s, uid in zip(book.get("ml/g").slots, ("u0", "u1"), strict=True):
        s.pod_uid = uid  # claimed by the handlers
    assert book.reconcile(lambda s: s.pod_key == "ml/w-0") == []
    assert [s.node for s in book.held_slots()] == ["n2"]
    done = book.reconcile(lambda s: True)
    assert [r.gang for r in done] == ["ml/g"] and book.get("ml/g") is None


def test_expiry_on_the_injected_clock():
    clock = Clock()
    book = ReservationBook(clock, timeout_s=30)
    book.add("ml/a", slots())
    book.add("ml/b", slots(), timeout_s=100)
    clock.advance(29.9)
    assert book.expire() == []
    clock.advance(0.1)
    assert [r.gang for r in book.expire()] == ["ml/a"]
    assert book.get("ml/b") is not None


def test_one_reservation_per_gang():
    book = ReservationBook(Clock())
    book.add("ml/g", slots())
    with pytest.raises(ValueError, match="already has a reservation"):
        book.add("ml/g", slots())
