"""GPU clustering: put pods of one GPU kind together (shared-GPU pods, 1-GPU pods, 2-GPU ...).

The FGD artifact's ``GpuClusteringScore``, an integer out of 100 in four bands, each
rising with how much GPU the node already has in use (``25 * (max_gpu - free) //
max_gpu``): 75+ when the node holds only pods of the pod's kind, 50+ when it holds that
kind among others, 25+ when it holds no GPU pod, 0+ when it holds only other kinds.
CPU-only pods score 0 everywhere. Needs ``Snapshot.gpu_pods`` (pods per kind per node).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from plugins.best_fit import node_scale, node_scores
from scheduler.snapshot import PodShape, Snapshot

NAME = "gpu-clustering"


def gpu_clustering_score(shape: PodShape, snap: Snapshot, nodes: np.ndarray) -> np.ndarray:
    """Integer score 0..100 per node."""
    if shape.gpus == 0 or snap.gpu_pods is None:
        return np.zeros(len(nodes))
    max_gpu = int(node_scale(snap)[1])
    free_gpu = np.where(snap.gpu_free[nodes] > 0, snap.gpu_free[nodes], 0).sum(axis=1).astype(np.int64)
    base = 25 * (max_gpu - free_gpu) // max_gpu
    kinds = snap.gpu_pods[nodes] > 0
    own = kinds[:, 0 if shape.is_shared else shape.gpus]
    n_kinds = kinds.sum(axis=1)
    band = np.where(own, np.where(n_kinds == 1, 75, 50), np.where(n_kinds == 0, 25, 0))
    return (base + band).astype(float)


@register(NAME)
class GpuClustering(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        return node_scores(gpu_clustering_score, shape, snap)[cand.node]
