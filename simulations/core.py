"""Discrete-event loop: a heap of ``(time, priority, seq, event)``, an injected clock, a seeded RNG.

Events fire in time order; at equal times the lower ``priority`` fires first, then the
one scheduled first (``seq``), so a run is a pure function of its inputs and its seed.
An event is any callable taking the loop; it may schedule further events. An exception
raised by an event stops ``run()`` and propagates: a failure never disappears.

The clock is injected (``SimClock`` by default) so that code driven by the loop reads
simulated time, never the wall clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Event = Callable[["EventLoop"], None]


class Clock(Protocol):
    def now(self) -> float: ...


@dataclass
class SimClock:
    """Simulated time, advanced only by the event loop."""

    time: float = 0.0

    def now(self) -> float:
        return self.time


@dataclass(order=True)
class _Entry:
    time: float
    priority: int
    seq: int
    event: Event = field(compare=False)


class EventLoop:
    """``schedule`` events, then ``run`` them in (time, priority, seq) order."""

    def __init__(self, seed: int | np.random.SeedSequence = 0, clock: SimClock | None = None) -> None:
        self.clock = clock if clock is not None else SimClock()
        self.rng = np.random.default_rng(seed)
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self.fired = 0

    @property
    def now(self) -> float:
        return self.clock.now()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, time: float, event: Event, priority: int = 0) -> None:
        """Fire ``event`` at ``time`` (not before now)."""
        if time < self.clock.now():
            raise ValueError(f"cannot schedule at {time}: the clock is already at {self.clock.now()}")
        heapq.heappush(self._heap, _Entry(float(time), priority, next(self._seq), event))

    def step(self) -> bool:
        """Fire the next event; False when none is left."""
        if not self._heap:
            return False
        entry = heapq.heappop(self._heap)
        self.clock.time = entry.time
        entry.event(self)
        self.fired += 1
        return True

    def run(self, until: float | None = None) -> int:
        """Fire events (up to time ``until`` inclusive); returns how many fired."""
        start = self.fired
        while self._heap and (until is None or self._heap[0].time <= until):
            self.step()
        if until is not None and until > self.clock.time:
            self.clock.time = until
        return self.fired - start
