"""What the scheduler tells users: events, the PodScheduled condition and nominated nodes, written in the background.

Best effort, never on the scheduling path: writes go to a queue that one thread drains
(failures are logged and counted, never raised). Repeats are held back: the same
(object, reason, note) is not emitted again within ``repeat_interval_s``, and a pod's
PodScheduled=False condition is only written when its reason or message changes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from scheduler.ports import Binder, EventSink, KubeApiError, ObjectRef

log = logging.getLogger("toposched.reporting")

NOTE_LIMIT = 1024  # events.k8s.io/v1 note, bytes


def _truncate(note: str) -> str:
    data = note.encode()
    if len(data) <= NOTE_LIMIT:
        return note
    return data[: NOTE_LIMIT - 4].decode("utf-8", "ignore") + " ..."


class Reporter:
    """Events and pod conditions, deduplicated, written by a background thread (or inline)."""

    def __init__(self, events: EventSink, binder: Binder, *, clock: Callable[[], float],
                 wall: Callable[[], str], repeat_interval_s: float = 60.0, background: bool = True,
                 on_error: Callable[[str, KubeApiError], None] | None = None, max_queue: int = 100_000) -> None:
        self.events = events
        self.binder = binder
        self.clock = clock
        self.wall = wall
        self.repeat_interval_s = repeat_interval_s
        self.on_error = on_error
        self._last_event: dict[tuple[str, str, str], float] = {}
        self._last_condition: dict[str, tuple[str, str]] = {}
        self._queue: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._drain, name="toposched-reporter", daemon=True)
            self._thread.start()

    # --- what the loop calls ----------------------------------------------------------------

    def event(self, regarding: ObjectRef, type_: str, reason: str, action: str, note: str,
              dedup: bool = True) -> bool:
        """Queue an event; False when held back as a repeat."""
        note = _truncate(note)
        if dedup:
            key = (regarding.key, reason, note)
            now = self.clock()
            last = self._last_event.get(key)
            if last is not None and now - last < self.repeat_interval_s:
                return False
            self._last_event[key] = now
        self._submit(f"event {reason} {regarding.key}",
                     lambda: self.events.emit(regarding, type_, reason, action, note))
        return True

    def unschedulable(self, pod: ObjectRef, reason: str, message: str) -> bool:
        """PodScheduled=False with ``reason`` (Unschedulable / SchedulerError), written when it changed."""
        message = _truncate(message)
        if self._last_condition.get(pod.key) == (reason, message):
            return False
        written = (reason, message)
        self._last_condition[pod.key] = written
        condition: dict[str, Any] = {"type": "PodScheduled", "status": "False", "reason": reason,
                                     "message": message, "lastTransitionTime": self.wall(), "lastProbeTime": None}

        def write() -> None:
            try:
                self.binder.set_condition(pod, condition)
            except Exception:
                self._unremember(pod.key, written)  # not written: the next attempt writes it again
                raise

        if not self._submit(f"condition {pod.key}", write):
            self._unremember(pod.key, written)
        return True

    def _unremember(self, key: str, condition: tuple[str, str]) -> None:
        if self._last_condition.get(key) == condition:
            self._last_condition.pop(key, None)

    def nominate(self, pod: ObjectRef, node: str | None) -> None:
        """``status.nominatedNodeName`` of a preemptor (None clears it)."""
        self._submit(f"nominate {pod.key}", lambda: self.binder.set_nominated_node(pod, node))

    def forget(self, key: str) -> None:
        """The pod is bound or gone: drop what is remembered about it."""
        self._last_condition.pop(key, None)
        if self._last_event:
            for k in [k for k in self._last_event if k[0] == key]:
                del self._last_event[k]

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        if self._thread is None:
            return
        done = threading.Event()
        self._submit("flush", done.set)
        done.wait(timeout_s)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    # --- the writer ------------------------------------------------------------------------------

    def _submit(self, what: str, fn: Callable[[], None]) -> bool:
        """Run or queue ``fn``; False when the queue was full and it was dropped."""
        if self._thread is None:
            self._run(what, fn)
            return True
        try:
            self._queue.put_nowait((what, fn))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._run(*item)

    def _run(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except KubeApiError as exc:
            log.warning("%s failed: %s", what, exc)
            if self.on_error:
                self.on_error(what.split(" ")[0], exc)
        except Exception:  # noqa: BLE001 - best effort: a reporting bug must not stop the writer
            log.exception("%s failed", what)
