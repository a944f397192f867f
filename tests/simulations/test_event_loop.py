"""The event loop: (time, priority, seq) order, the injected clock, failures that stop the run."""

from __future__ import annotations

import pytest

from simulations.core import EventLoop, SimClock


def test_events_fire_by_time_then_priority_then_insertion():
    loop = EventLoop(seed=1)
    fired = []

    def ev(tag):
        return lambda lp: fired.append((tag, lp.now))

    loop.schedule(2.0, ev("late"))
    loop.schedule(1.0, ev("b"), priority=1)
    loop.schedule(1.0, ev("a"), priority=0)
    loop.schedule(1.0, ev("c"), priority=1)
    assert loop.run() == 4
    assert fired == [("a", 1.0), ("b", 1.0), ("c", 1.0), ("late", 2.0)]


def test_events_may_schedule_events_and_run_until_stops_in_time():
    clock = SimClock()
    loop = EventLoop(seed=1, clock=clock)
    seen = []

    def tick(lp):
        seen.append(lp.now)
        if lp.now < 5:
            lp.schedule(lp.now + 1, tick)

    loop.schedule(0.0, tick)
    loop.run(until=2.5)
    assert seen == [0.0, 1.0, 2.0] and clock.now() == 2.5 and len(loop) == 1
    loop.run()
    assert seen[-1] == 5.0


def test_scheduling_in_the_past_is_refused_and_failures_propagate():
    loop = EventLoop(seed=1)
    loop.schedule(3.0, lambda lp: None)
    loop.run()
    with pytest.raises(ValueError, match="clock is already at 3.0"):
        loop.schedule(1.0, lambda lp: None)

    def boom(lp):
        raise RuntimeError("event failed")

    loop.schedule(4.0, boom)
    loop.schedule(5.0, lambda lp: None)
    with pytest.raises(RuntimeError, match="event failed"):
        loop.run()
    assert len(loop) == 1  # the later event was not silently dropped


def test_rng_is_seeded():
    assert EventLoop(seed=7).rng.random() == EventLoop(seed=7).rng.random()
    assert EventLoop(seed=7).rng.random() != EventLoop(seed=8).rng.random()
