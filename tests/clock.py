"""A clock for tests: callable like ``time.monotonic``, moved by hand (``clock.now = t`` or ``advance``)."""

from __future__ import annotations


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
