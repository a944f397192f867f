"""Random: a node drawn uniformly among the feasible ones; a shared pod's GPU uniformly too.

The FGD artifact's ``RandomScore`` baseline (with its random GPU choice). Each feasible
node draws a uniform value from the decision's seeded RNG; each candidate adds a draw a
million times smaller, which only orders the GPUs inside a node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, Context, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "random"
_INNER = 1e-6


@register(NAME)
class RandomScore(BasePlugin):
    def prepare(self, shape: PodShape, snap: Snapshot, ctx: Context) -> Any:
        return ctx.rng

    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray:
        rng: np.random.Generator = state
        node_draw = rng.random(snap.n_nodes)
        return (node_draw[cand.node] + _INNER * rng.random(len(cand))) / (1.0 + _INNER)
