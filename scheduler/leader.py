"""Leader election on one Lease, with client-go's semantics and an injected clock.

::

              acquire (lease free, ours, or expired on OUR clock)
    STANDBY ─────────────────────────────────────────────────► LEADING
       ▲                                                          │ renew every retry_period_s
       │  no successful renew for renew_deadline_s, or the lease  │
       └──────────── names another holder, or release() ◄─────────┘

A candidate never compares its clock with the timestamps in the Lease: it notes *when it
saw* the record change and takes over only once ``leaseDurationSeconds`` passed since then
without a change (clocks of different machines need not agree). ``is_leader`` is checked
before every bind: it turns False the moment the last successful renew is older than
``renew_deadline_s``, even if the election thread is stuck.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from scheduler.ports import KubeApiError, LeaseRecord, LeaseStore

log = logging.getLogger("toposched.leader")


def micro_time(ts: float | None = None) -> str:
    """A MicroTime string: RFC 3339 with 6 fractional digits, UTC."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_timings(lease_duration_s: float, renew_deadline_s: float, retry_period_s: float) -> str | None:
    """client-go's rule: lease > renew deadline > 1.2 x retry period (> 0). A problem, or None."""
    if retry_period_s <= 0:
        return f"retry_period_s must be positive, not {retry_period_s}"
    if not renew_deadline_s > 1.2 * retry_period_s:
        return f"renew_deadline_s ({renew_deadline_s}) must be more than 1.2 x retry_period_s ({retry_period_s})"
    if not lease_duration_s > renew_deadline_s:
        return f"lease_duration_s ({lease_duration_s}) must be more than renew_deadline_s ({renew_deadline_s})"
    return None


class LeaderElector:
    """Campaigns for one Lease and keeps renewing it while leading."""

    def __init__(self, store: LeaseStore, identity: str, *, lease_duration_s: float = 15.0,
                 renew_deadline_s: float = 10.0, retry_period_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], str] = micro_time,
                 on_started: Callable[[], None] | None = None, on_stopped: Callable[[], None] | None = None,
                 rng: random.Random | None = None) -> None:
        problem = check_timings(lease_duration_s, renew_deadline_s, retry_period_s)
        if problem:
            raise ValueError(problem)
        self.store = store
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.clock = clock
        self.wall = wall
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._rng = rng or random.Random()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._leading = False
        self._last_renew = -math.inf
        self._lock = threading.Lock()

    # --- state -----------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Leading, and the last successful renew is younger than the renew deadline."""
        return self._leading and self.clock() - self._last_renew < self.renew_deadline_s

    @property
    def holder(self) -> str:
        """Who holds the lease, as last observed ("" when nobody or unknown)."""
        return self._observed.holder if self._observed else ""

    # --- one attempt -------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One read + (create | update). True when we hold the lease afterwards."""
        duration = max(1, math.ceil(self.lease_duration_s))
        try:
            current = self.store.get()
        except KubeApiError as exc:
            log.warning("lease read failed: %s", exc)
            return False
        # a change is dated when we saw it, after the read returned (client-go's observedTime): a
        # slow read must not shorten the time a standby waits before taking over
        now = self.clock()
        stamp = self.wall()
        if current is None:
            fresh = LeaseRecord(self.identity, duration, stamp, stamp, 0)
            return self._write(self.store.create, fresh, now)
        if current != self._observed:
            self._observed, self._observed_at = current, now
        held_by_other = bool(current.holder) and current.holder != self.identity
        if held_by_other:
            if self._leading:
                self._stop(f"the lease is now held by {current.holder}")
            if self._observed_at + current.lease_duration_s > now:
                return False
        new = replace(current, holder=self.identity, lease_duration_s=duration, renew_time=stamp)
        if current.holder != self.identity:
            new = replace(new, acquire_time=stamp, transitions=current.transitions + 1)
        return self._write(self.store.update, new, now)

    def _write(self, op: Callable[[LeaseRecord], LeaseRecord], record: LeaseRecord, now: float) -> bool:
        try:
            stored = op(record)
        except KubeApiError as exc:
            log.info("lease write failed: %s", exc)
            return False
        self._observed, self._observed_at = stored, max(now, self.clock())
        return True

    def step(self) -> bool:
        """Try once and update the leading state; returns ``is_leader``."""
        with self._lock:
            started = self.clock()
            ok = self.try_acquire_or_renew()
            now = self.clock()
            if ok:
                # the renew deadline counts from before the request: the server may have dated
                # the renewal any time after that, so this errs towards stepping down early
                self._last_renew = started
                if not self._leading:
                    self._leading = True
                    log.info("became leader", extra={"identity": self.identity})
                    if self.on_started:
                        self.on_started()
            elif self._leading and now - self._last_renew >= self.renew_deadline_s:
                self._stop(f"could not renew the lease for {self.renew_deadline_s:g}s")
            return self.is_leader

    def _stop(self, why: str) -> None:
        self._leading = False
        log.warning("stopped leading: %s", why, extra={"identity": self.identity})
        if self.on_stopped:
            self.on_stopped()

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event, release: bool = True) -> None:
        """Campaign and renew until ``stop`` is set, then release the lease if held (unless
        ``release`` is False: the caller releases it once its writes are done)."""
        while not stop.is_set():
            self.step()
            wait = self.retry_period_s
            if not self._leading:
                wait *= 1.0 + 0.2 * self._rng.random()  # jitter, as client-go's JitterFactor 1.2
            stop.wait(wait)
        if release:
            self.release()

    def release(self) -> None:
        """Give the lease up (holder emptied, 1 s duration) so a standby takes over at once."""
        with self._lock:
            if not self._leading:
                return
            self._leading = False
            try:
                current = self.store.get()
                if current is not None and current.holder == self.identity:
                    self.store.update(replace(current, holder="", lease_duration_s=1, renew_time=self.wall()))
            except KubeApiError as exc:
                log.warning("lease release failed: %s", exc)
            if self.on_stopped:
                self.on_stopped()
