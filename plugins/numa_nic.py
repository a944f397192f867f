"""NUMA/NIC locality: prefer GPU sets on one NUMA node, each GPU next to a NIC (GPUDirect RDMA)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "numa-nic"


@register(NAME)
class NumaNic(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None:
        if shape.gpus == 0 or cand.locality is None:
            return None
        return np.asarray(cand.locality, dtype=float)
