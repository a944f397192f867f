"""Node selector and taints/tolerations, as kube-scheduler applies them.

NoSchedule and NoExecute taints must be tolerated; PreferNoSchedule only lowers the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, FilterResult, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "node-constraints"


def selector_mask(snap: Snapshot, selector: tuple[tuple[str, str], ...]) -> np.ndarray:
    """bool [N]: nodes whose labels carry every key=value of the selector (cached)."""
    cache = snap.arrays._extra.setdefault("selector", {})
    if selector not in cache:
        cache[selector] = np.array([all(lb.get(k) == v for k, v in selector) for lb in snap.arrays.labels], dtype=bool)
    return cache[selector]


def tainted_nodes(snap: Snapshot) -> list[int]:
    extra = snap.arrays._extra
    if "tainted" not in extra:
        extra["tainted"] = [i for i, t in enumerate(snap.arrays.taints) if t]
    return extra["tainted"]


@register(NAME)
class NodeConstraints(BasePlugin):
    def filter(self, shape: PodShape, snap: Snapshot, state: Any) -> FilterResult | None:
        n = snap.n_nodes
        reasons: list[tuple[np.ndarray, str]] = []
        ok = np.ones(n, dtype=bool)
        if shape.node_selector:
            sel = selector_mask(snap, shape.node_selector)
            ok &= sel
            reasons.append((~sel, "node(s) didn't match Pod's node affinity/selector"))
        by_taint: dict[str, np.ndarray] = {}
        for i in tainted_nodes(snap):
            for key, value, effect in snap.arrays.taints[i]:
                if effect == "PreferNoSchedule":
                    continue
                if not any(t.tolerates(key, value, effect) for t in shape.tolerations):
                    why = f"node(s) had untolerated taint {{{key}: {value}}}" if value else \
                        f"node(s) had untolerated taint {{{key}}}"
                    m = by_taint.setdefault(why, np.zeros(n, dtype=bool))
                    m[i] = True
                    ok[i] = False
                    break
        reasons.extend((m, why) for why, m in by_taint.items())
        if not reasons:
            return None
        return FilterResult(ok, reasons)

    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None:
        tainted = tainted_nodes(snap)
        if not tainted:
            return None
        prefer_not = np.zeros(snap.n_nodes, dtype=bool)
        for i in tainted:
            for key, value, effect in snap.arrays.taints[i]:
                if effect == "PreferNoSchedule" and not any(t.tolerates(key, value, effect) for t in shape.tolerations):
                    prefer_not[i] = True
        return np.where(prefer_not[cand.node], 0.0, 1.0)
