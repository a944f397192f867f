"""Best fit: prefer the node left with the least free CPU and GPU after the placement.

The FGD artifact's ``BestFitScore``: ``int(100 * (1 - (0.5 * cpu_left / max_cpu +
0.5 * gpu_left / max_gpu)))`` with the leftovers after placement and ``max_*`` the
largest node's capacity, as an integer out of 100 (nearby nodes tie). The float steps
follow the artifact's order so the integer cut falls on the same side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "best-fit"


def node_scale(snap: Snapshot) -> tuple[float, float]:
    """(largest node CPU milli, largest node GPU milli): the artifact's MaxSpecCpu/MaxSpecGpu."""
    extra = snap.arrays._extra
    if "node_scale" not in extra:
        a = snap.arrays
        extra["node_scale"] = (float(max(int(a.cpu_milli.max()), 1)), float(max(int(a.gpu_count.max()), 1) * 1000))
    return extra["node_scale"]


def node_scores(fn: Callable[[PodShape, Snapshot, np.ndarray], np.ndarray], shape: PodShape, snap: Snapshot) -> np.ndarray:
    """``fn``'s integer score out of 100 for every node, as 0..1 (a node-level score costs less
    per node than per candidate: a shared-GPU pod has a candidate per GPU)."""
    return fn(shape, snap, np.arange(snap.n_nodes)) / 100.0


def best_fit_score(shape: PodShape, snap: Snapshot, nodes: np.ndarray) -> np.ndarray:
    """Integer score 0..100 per node."""
    max_cpu, max_gpu = node_scale(snap)
    free_gpu = np.where(snap.gpu_free[nodes] > 0, snap.gpu_free[nodes], 0).sum(axis=1).astype(float)
    score = np.zeros(len(nodes))
    score += (snap.free_cpu[nodes].astype(float) - shape.cpu_milli) / max_cpu * 0.5
    score += (free_gpu - shape.gpu_milli_total) / max_gpu * 0.5
    return np.trunc((1.0 - score) * 100.0)


@register(NAME)
class BestFit(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        return node_scores(best_fit_score, shape, snap)[cand.node]
