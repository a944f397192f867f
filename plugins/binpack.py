"""Bin-packing: prefer the node left most allocated (GPU share, else CPU share)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "binpack"


def allocated_share(shape: PodShape, snap: Snapshot, cand: Candidates) -> np.ndarray:
    """Share of the node's GPUs (or CPU for CPU-only pods) in use after placement."""
    a = snap.arrays
    if shape.gpus > 0:
        cap = a.gpu_count[cand.node].astype(float) * 1000.0
        free_after = np.where(cand.gpu_after > 0, cand.gpu_after, 0).sum(axis=1)
        return np.divide(cap - free_after, cap, out=np.zeros(len(cand)), where=cap > 0)
    cap = a.cpu_milli[cand.node].astype(float)
    free_after = snap.free_cpu[cand.node] - shape.cpu_milli
    return np.divide(cap - free_after, cap, out=np.zeros(len(cand)), where=cap > 0)


@register(NAME)
class BinPack(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        return allocated_share(shape, snap, cand)
