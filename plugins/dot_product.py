"""Dot product (Tetris): prefer the node whose free (CPU, GPU) vector aligns least with the pod's.

The FGD artifact's ``DotProductScore`` with merged GPU dimension and max normalisation:
vectors (CPU milli, total GPU milli) of the node's free resources and of the request,
each divided by the largest node's capacity; score ``int(100 * (1 - dot / 2))`` as an
integer out of 100. A shared pod's GPU is chosen by best fit (the engine's default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from plugins.best_fit import node_scale, node_scores
from scheduler.snapshot import PodShape, Snapshot

NAME = "dot-product"


def dot_product_score(shape: PodShape, snap: Snapshot, nodes: np.ndarray) -> np.ndarray:
    """Integer score 0..100 per node."""
    max_cpu, max_gpu = node_scale(snap)
    free_gpu = np.where(snap.gpu_free[nodes] > 0, snap.gpu_free[nodes], 0).sum(axis=1).astype(float)
    dot = np.zeros(len(nodes))
    dot += (snap.free_cpu[nodes].astype(float) / max_cpu) * (shape.cpu_milli / max_cpu)
    dot += (free_gpu / max_gpu) * (shape.gpu_milli_total / max_gpu)
    return np.trunc(100.0 * (1.0 - dot / 2.0))


@register(NAME)
class DotProduct(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        return node_scores(dot_product_score, shape, snap)[cand.node]
