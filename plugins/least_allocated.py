"""Spreading: prefer the node left least allocated (kube-scheduler's default leaning)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from plugins.binpack import allocated_share
from scheduler.snapshot import PodShape, Snapshot

NAME = "least-allocated"


@register(NAME)
class LeastAllocated(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        return 1.0 - allocated_share(shape, snap, cand)
