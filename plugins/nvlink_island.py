"""Intra-node link quality: prefer the GPU set with the best links (NVLink island, PCIe distance).

The set itself is chosen by ``scheduler.gpuset``; its quality (set score over the best
possible set of that size on that node type) arrives in ``Candidates.link_score``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "nvlink-island"


@register(NAME)
class NvlinkIsland(BasePlugin):
    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None:
        if shape.gpus <= 1:
            return None
        return np.asarray(cand.link_score, dtype=float)
