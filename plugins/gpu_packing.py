"""GPU packing: shared GPUs first, then free GPUs of used nodes, then idle nodes.

The FGD artifact's ``GpuPackingScore``, an integer out of 100, with the pod's GPUs taken
by best fit (least free milli first):

- the pod fits on GPUs already in use (a shared pod on a partly used GPU):
  ``max(100 - (free * 100 // 1000) // 10, 50)``, tighter GPU scores higher;
- it needs ``n`` fully free GPUs of a node already in use: ``max(50 - n, 33)``;
- the node is idle: ``max(33 - free GPUs, free GPUs)``.

CPU-only pods score 0 everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from plugins.best_fit import node_scores
from scheduler.snapshot import PodShape, Snapshot

NAME = "gpu-packing"
GPU_MILLI = 1000


def gpu_packing_score(shape: PodShape, snap: Snapshot, nodes: np.ndarray) -> np.ndarray:
    """Integer score 0..100 per node (nodes that cannot host the pod get nonsense)."""
    if shape.gpus == 0:
        return np.zeros(len(nodes))
    gf = snap.gpu_free[nodes].astype(np.int64)
    full = (gf == GPU_MILLI).sum(axis=1)
    idle = full == snap.arrays.gpu_count[nodes]
    if shape.is_shared:
        fits = np.where(gf >= shape.gpu_milli, gf, GPU_MILLI + 1)
        tightest = fits.min(axis=1)
        used_gpu = np.maximum(100 - (tightest * 100 // GPU_MILLI) // 10, 50)
        busy = np.where(tightest == GPU_MILLI, max(50 - 1, 33), used_gpu)
    else:
        busy = np.full(len(nodes), max(50 - shape.gpus, 33))
    return np.where(idle, np.maximum(33 - full, full), busy).astype(float)


@register(NAME)
class GpuPacking(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        return node_scores(gpu_packing_score, shape, snap)[cand.node]
