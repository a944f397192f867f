"""Replica spread: replicas of one owner go to different nodes and failure domains.

Score = mean of 1/(1 + replicas already in the candidate's domain at the spread level)
and 1/(1 + replicas already on the candidate node).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, Context, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "replica-spread"


@register(NAME)
class ReplicaSpread(BasePlugin):
    def prepare(self, shape: PodShape, snap: Snapshot, ctx: Context) -> Any:
        if shape.owner is None or not snap.owner_nodes.get(shape.owner):
            return None
        used = np.array(snap.owner_nodes[shape.owner], dtype=np.int64)
        node_count = np.bincount(used, minlength=snap.n_nodes)
        a = snap.arrays
        if shape.spread_level is not None and shape.spread_level in a.level_names:
            lv = a.level_index(shape.spread_level)
            dom = a.domain[lv]
            dom_count = np.bincount(dom[used], minlength=int(dom.max()) + 1)[dom]
        else:
            dom_count = node_count
        return node_count, dom_count

    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None:
        if state is None:
            return None
        node_count, dom_count = state
        return 0.5 / (1.0 + dom_count[cand.node]) + 0.5 / (1.0 + node_count[cand.node])
