"""The pending queue: units (a pod, or a whole gang) waiting to be placed, with backoff.

::

        add / member arrives / pod changed
    ──────────────► ACTIVE ──pop──► (deciding / binding: out of the queue)
                      ▲  ▲                 │
         backoff over │  │ cluster changed │ did not fit            │ API error,
                      │  └── UNSCHEDULABLE ◄┘                        │ bind failed
                   BACKOFF ◄─────────────────────────────────────────┘
                      ▲
                      └── UNSCHEDULABLE on a cluster change, or every unschedulable_retry_s
    WAITING: a gang short of members or of its PodGroup; ACTIVE again when that changes
    (or at an optional wake-up time, to report a gang that waited too long).

Backoff after ``n`` failed attempts is ``initial_s * 2**(n-1)`` capped at ``max_s``
(kube-scheduler: 1 s to 10 s). The clock is injected; nothing here reads the time itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class UnitState(StrEnum):
    ACTIVE = "active"
    BACKOFF = "backoff"
    UNSCHEDULABLE = "unschedulable"
    WAITING = "waiting"


@dataclass
class Unit:
    """One thing to place: a pod (``key`` = ``ns/name``) or a gang (``key`` = ``gang:ns/name``)."""

    key: str
    is_gang: bool
    added_at: float
    priority: int = 0
    attempts: int = 0
    state: UnitState = UnitState.ACTIVE
    ready_at: float = 0.0
    failed_at: float = 0.0
    seq: int = 0
    attempt_started: float = 0.0  # when the current attempt popped it


def gang_unit_key(gang: str) -> str:
    return f"gang:{gang}"


class SchedulingQueue:
    """Units by key; ``pop_ready`` hands out the active ones, highest priority first, then oldest."""

    def __init__(self, clock: Callable[[], float], initial_backoff_s: float = 1.0, max_backoff_s: float = 10.0,
                 unschedulable_retry_s: float = 60.0) -> None:
        self.clock = clock
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.unschedulable_retry_s = unschedulable_retry_s
        self.units: dict[str, Unit] = {}
        self._seq = 0

    def __contains__(self, key: str) -> bool:
        return key in self.units

    def __len__(self) -> int:
        return len(self.units)

    def get(self, key: str) -> Unit | None:
        return self.units.get(key)

    def backoff_s(self, attempts: int) -> float:
        return min(self.initial_backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s)

    def add(self, key: str, is_gang: bool = False, priority: int = 0, attempts: int = 0) -> Unit:
        """Queue a unit (no-op when queued; a waiting gang becomes active)."""
        unit = self.units.get(key)
        if unit is not None:
            unit.priority = max(unit.priority, priority)
            if unit.state == UnitState.WAITING:
                unit.state = UnitState.ACTIVE
            return unit
        self._seq += 1
        unit = Unit(key, is_gang, self.clock(), priority, attempts, seq=self._seq)
        if attempts:
            self._backoff(unit)
        self.units[key] = unit
        return unit

    def remove(self, key: str) -> Unit | None:
        return self.units.pop(key, None)

    def activate(self, key: str) -> None:
        """Something about this unit changed (pod updated, member arrived): try it again, after its backoff."""
        unit = self.units.get(key)
        if unit is None:
            return
        if unit.state == UnitState.WAITING or (unit.state == UnitState.UNSCHEDULABLE and unit.attempts == 0):
            unit.state = UnitState.ACTIVE
        elif unit.state == UnitState.UNSCHEDULABLE:
            self._backoff(unit, since=unit.failed_at)

    def cluster_changed(self) -> None:
        """Capacity or topology changed: unschedulable units go to backoff (then active)."""
        for unit in self.units.values():
            if unit.state == UnitState.UNSCHEDULABLE:
                self._backoff(unit, since=unit.failed_at)

    def unschedulable(self, key: str, priority: int | None = None) -> None:
        """It did not fit: wait for a cluster change (or ``unschedulable_retry_s``)."""
        unit = self.units.get(key)
        if unit is None:
            return
        unit.attempts += 1
        unit.failed_at = self.clock()
        unit.state = UnitState.UNSCHEDULABLE
        if priority is not None:
            unit.priority = priority

    def backoff(self, key: str) -> None:
        """An error (API, bind): try again after the backoff."""
        unit = self.units.get(key)
        if unit is None:
            return
        unit.attempts += 1
        unit.failed_at = self.clock()
        self._backoff(unit, since=unit.failed_at)

    def wait(self, key: str, until: float | None = None) -> None:
        """A gang waiting for members or its group object: out of the rotation until ``add``/``activate``
        (or, with ``until``, until that time)."""
        unit = self.units.get(key)
        if unit is not None:
            unit.state = UnitState.WAITING
            unit.ready_at = until if until is not None else float("inf")

    def _backoff(self, unit: Unit, since: float | None = None) -> None:
        unit.state = UnitState.BACKOFF
        unit.ready_at = (self.clock() if since is None else since) + self.backoff_s(unit.attempts)

    def _promote(self, now: float) -> None:
        for unit in self.units.values():
            if unit.state == UnitState.BACKOFF and unit.ready_at <= now:
                unit.state = UnitState.ACTIVE
            elif unit.state == UnitState.UNSCHEDULABLE and now - unit.failed_at >= self.unschedulable_retry_s:
                unit.state = UnitState.ACTIVE
            elif unit.state == UnitState.WAITING and unit.ready_at <= now:
                unit.state = UnitState.ACTIVE

    def pop_ready(self, limit: int) -> list[Unit]:
        """Up to ``limit`` active units (removed from the queue), by priority then arrival."""
        self._promote(self.clock())
        ready = [u for u in self.units.values() if u.state == UnitState.ACTIVE]
        ready.sort(key=lambda u: (-u.priority, u.seq))
        out = ready[:limit]
        now = self.clock()
        for u in out:
            del self.units[u.key]
            u.attempt_started = now
        return out

    def requeue(self, unit: Unit) -> None:
        """Put back a unit popped this cycle (its state says how)."""
        self.units[unit.key] = unit

    def next_ready_at(self) -> float | None:
        """When the next unit becomes active by itself (None: never without an event)."""
        times = [u.ready_at for u in self.units.values()
                 if u.state in (UnitState.BACKOFF, UnitState.WAITING) and u.ready_at != float("inf")]
        times += [u.failed_at + self.unschedulable_retry_s for u in self.units.values()
                  if u.state == UnitState.UNSCHEDULABLE]
        if any(u.state == UnitState.ACTIVE for u in self.units.values()):
            return self.clock()
        return min(times) if times else None

    def counts(self) -> dict[str, int]:
        """Units per state (active / backoff / unschedulable / waiting)."""
        out = {s.value: 0 for s in UnitState}
        for u in self.units.values():
            out[u.state.value] += 1
        return out
