"""Node state filter: only ready, uncordoned, healthy nodes take new pods."""

from __future__ import annotations

from typing import Any

from plugins.base import BasePlugin, FilterResult, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "node-state"


@register(NAME)
class NodeState(BasePlugin):
    def filter(self, shape: PodShape, snap: Snapshot, state: Any) -> FilterResult:
        a = snap.arrays
        failed = snap.failed
        not_ready = ~a.ready & ~failed
        cordoned = a.unschedulable & a.ready & ~failed
        ok = ~(failed | not_ready | cordoned)
        return FilterResult(ok, [(failed, "node(s) had failed"), (not_ready, "node(s) were not ready"),
                                 (cordoned, "node(s) were unschedulable")])
