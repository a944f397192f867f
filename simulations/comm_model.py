"""Communication cost of a placement: ring all-reduce time from the topology's numbers.

A training job synchronises gradients with a ring all-reduce over all its GPUs (what
NCCL does by default for large messages). The model, in phases:

1. **Ring.** The job's GPUs in topology order: nodes sorted by their domain path (widest
   level first, then the NVLink clique, then node index), GPUs of a node by index. Inside
   a node consecutive GPUs talk over ``link_between`` (NVLink/NVSwitch or PCIe). Between
   two nodes the ring uses the best GPU pair the two nodes offer (highest bandwidth, then
   fewest switch hops): NCCL pairs GPUs on the same rail, and with PXN any GPU reaches the
   peer's rail over NVLink first.
2. **Bottleneck.** ``bottleneck_gbps`` = the smallest edge bandwidth of the ring; every
   GPU sends through its out-edge, so the slowest edge paces the ring. ``max_hops`` = the
   most switch hops of any edge.
3. **Time.** The alpha-beta cost of a ring all-reduce of ``S`` bytes over ``p`` GPUs:
   ``2 (p-1)/p * 8 S / B + 2 (p-1) * (alpha_0 + alpha_hop * max_hops)``.
4. **Crossings.** Per tier (``node`` and each network level, narrowest first; ``clique``
   too when the cluster has NVLink cliques), how many ring edges leave a domain of that
   tier; ``span`` is the narrowest tier whose one domain holds every GPU; ``excess_tiers``
   is how many tiers wider that is than the narrowest span a job of this size could have
   on an empty cluster (0 = as compact as possible).
5. **Slowdown.** A job spends a share ``f`` of each step communicating when placed as
   compactly as possible (``ideal_allreduce_s``). Elsewhere its step takes
   ``(1 - f) + f * T(placement) / T(ideal)`` as long: compute stays, communication
   scales with the all-reduce time. No overlap of compute and communication, no
   contention with other jobs (see docs/workload-simulator.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.topology import TopologyArrays

HOST = "node"


@dataclass(frozen=True)
class CommParams:
    """Message size and latencies of the all-reduce model."""

    gradient_mib: float = 1024.0  # bytes all-reduced per step (bf16 gradients of ~0.5 B parameters)
    base_latency_us: float = 5.0  # per ring step: launch and protocol overhead (alpha_0)
    hop_latency_us: float = 1.0  # per switch hop on the slowest edge (alpha_hop)


@dataclass(frozen=True)
class CommCost:
    """What a placement costs to communicate across."""

    gpus: int
    nodes: int
    bottleneck_gbps: float  # inf for a single GPU
    max_hops: int
    allreduce_s: float
    span: str  # narrowest tier holding every GPU: "gpu", "node", "clique", a level name or "root"
    excess_tiers: int
    crossings: dict[str, int] = field(default_factory=dict)  # tier -> ring edges leaving one of its domains

    def to_json(self) -> dict:
        bw = None if self.bottleneck_gbps == float("inf") else round(self.bottleneck_gbps, 3)
        return {"gpus": self.gpus, "nodes": self.nodes, "bottleneck_gbps": bw, "max_hops": self.max_hops,
                "allreduce_s": self.allreduce_s, "span": self.span, "excess_tiers": self.excess_tiers,
                "crossings": dict(self.crossings)}


def tiers(arrays: TopologyArrays) -> list[str]:
    """Tier names, narrowest first: ``node``, ``clique`` (if any), the levels narrowest to widest, ``root``."""
    out = [HOST]
    if _has_clique(arrays):
        out.append("clique")
    out.extend(reversed(arrays.level_names))
    out.append("root")
    return out


def _has_clique(arrays: TopologyArrays) -> bool:
    return bool(len(arrays.clique) and int(arrays.clique.max()) >= 0)


def _tier_ids(arrays: TopologyArrays, node: int) -> list[int]:
    """Domain id of ``node`` at each tier of ``tiers()`` but ``root`` (clique: -1 - node outside one)."""
    ids = [node]
    if _has_clique(arrays):
        c = int(arrays.clique[node])
        ids.append(c if c >= 0 else -1 - node)
    ids.extend(int(arrays.domain[lv, node]) for lv in range(len(arrays.level_names) - 1, -1, -1))
    return ids


def ring_order(arrays: TopologyArrays, gpus_by_node: dict[int, Sequence[int]]) -> list[tuple[int, int]]:
    """Phase 1: the job's (node, GPU) pairs in ring order."""
    def key(n: int) -> tuple:
        path = tuple(int(arrays.domain[lv, n]) for lv in range(len(arrays.level_names)))
        return (*path, int(arrays.clique[n]) if len(arrays.clique) else -1, n)

    out = []
    for n in sorted(gpus_by_node, key=key):
        out.extend((n, int(g)) for g in sorted(set(gpus_by_node[n])))
    return out


def _best_pair(arrays: TopologyArrays, a: int, ga: Sequence[int], b: int, gb: Sequence[int]) -> tuple[float, int]:
    """Bandwidth and hops of the best GPU pair between two nodes (same rail first)."""
    best = (-1.0, 1 << 30)
    rail_b = {int(arrays.type_of(b).rail[g]): g for g in gb}
    for g in ga:
        r = int(arrays.type_of(a).rail[g])
        peers = [rail_b[r]] if r >= 0 and r in rail_b else [gb[0]]
        for h in peers:
            link = arrays.link_between(a, g, b, h)
            cand = (link.bandwidth_gbps, link.hops)
            if cand[0] > best[0] or (cand[0] == best[0] and cand[1] < best[1]):
                best = cand
    return best


def comm_cost(arrays: TopologyArrays, gpus_by_node: dict[int, Sequence[int]],
              params: CommParams = CommParams()) -> CommCost:
    """Phases 1-4 for one placement: ``{node index: GPUs the job holds there}``."""
    gpus_by_node = {n: g for n, g in gpus_by_node.items() if len(g)}
    ring = ring_order(arrays, gpus_by_node)
    p = len(ring)
    names = tiers(arrays)
    crossings = dict.fromkeys(names[:-1], 0)
    if p <= 1:
        return CommCost(p, len(gpus_by_node), float("inf"), 0, 0.0, "gpu", 0, crossings)
    bottleneck, max_hops = float("inf"), 0
    nodes = [n for n in dict.fromkeys(n for n, _ in ring)]
    for n in nodes:
        gs = sorted(set(gpus_by_node[n]))
        for x, y in zip(gs, gs[1:], strict=False):
            link = arrays.link_between(n, x, n, y)
            bottleneck = min(bottleneck, link.bandwidth_gbps)
            max_hops = max(max_hops, link.hops)
    ids = {n: _tier_ids(arrays, n) for n in nodes}
    if len(nodes) > 1:
        for i, a in enumerate(nodes):
            b = nodes[(i + 1) % len(nodes)]
            bw, hops = _best_pair(arrays, a, sorted(set(gpus_by_node[a])), b, sorted(set(gpus_by_node[b])))
            bottleneck = min(bottleneck, bw)
            max_hops = max(max_hops, hops)
            for t, name in enumerate(names[:-1]):
                if ids[a][t] != ids[b][t]:
                    crossings[name] += 1
    span = names[-1]
    for t, name in enumerate(names[:-1]):
        if len({ids[n][t] for n in nodes}) == 1:
            span = name
            break
    t_s = allreduce_s(p, bottleneck, max_hops, params)
    excess = names.index(span) - names.index(ideal_span(arrays, p))
    return CommCost(p, len(nodes), bottleneck, max_hops, t_s, span, max(excess, 0), crossings)


def allreduce_s(p: int, bottleneck_gbps: float, max_hops: int, params: CommParams) -> float:
    """Phase 3: alpha-beta ring all-reduce time in seconds."""
    if p <= 1:
        return 0.0
    bits = params.gradient_mib * 1024 * 1024 * 8
    alpha_s = (params.base_latency_us + params.hop_latency_us * max_hops) * 1e-6
    return 2 * (p - 1) / p * bits / (bottleneck_gbps * 1e9) + 2 * (p - 1) * alpha_s


def ideal_span(arrays: TopologyArrays, gpus: int) -> str:
    """The narrowest tier one of whose domains has ``gpus`` GPUs in all (on an empty cluster)."""
    if gpus <= 1:
        return "gpu"
    names = tiers(arrays)
    for t, name in enumerate(names[:-1]):
        if _largest_domain_gpus(arrays, t) >= gpus:
            return name
    return names[-1]


def _largest_domain_gpus(arrays: TopologyArrays, tier: int) -> int:
    cache = arrays._extra.setdefault("comm_domain_gpus", {})
    if tier not in cache:
        keys = np.array([_tier_ids(arrays, n)[tier] for n in range(arrays.n_nodes)], dtype=np.int64)
        _, inv = np.unique(keys, return_inverse=True)
        cache[tier] = int(np.bincount(inv.reshape(-1), weights=arrays.gpu_count).max()) if len(keys) else 0
    return cache[tier]


def ideal_placement(arrays: TopologyArrays, pods: int, gpus_per_pod: int,
                    params: CommParams | None = None) -> dict[int, list[int]]:
    """The most compact placement of ``pods`` x ``gpus_per_pod`` on an empty cluster.

    Pods fill whole nodes in ring order inside a domain of the narrowest tier that can hold
    them, the same GPU indices on every node (rail-aligned). With ``params``, of those
    domains the one where the all-reduce is fastest (clusters mix node types: the first
    domain may be PCIe nodes while another is NVSwitch); without, the first.
    """
    total = pods * gpus_per_pod
    if total == 0:
        return {}
    names = tiers(arrays)
    span = names.index(ideal_span(arrays, total)) if total > 1 else 0
    if span >= len(names) - 1:
        return _fill(arrays, list(range(arrays.n_nodes)), pods, gpus_per_pod)
    keys = [_tier_ids(arrays, n)[span] for n in range(arrays.n_nodes)]
    groups: dict[int, list[int]] = {}
    for n, k in enumerate(keys):
        groups.setdefault(k, []).append(n)
    fits = [g for g in groups.values() if int(arrays.gpu_count[g].sum()) >= total]
    if params is None:
        return _fill(arrays, fits[0], pods, gpus_per_pod)
    seen: dict[tuple, dict[int, list[int]]] = {}  # domains alike (same node types in order) cost the same
    for g in fits:
        seen.setdefault(tuple(int(arrays.node_type[n]) for n in g), _fill(arrays, g, pods, gpus_per_pod))
    return min(seen.values(), key=lambda p: comm_cost(arrays, p, params).allreduce_s)


def _fill(arrays: TopologyArrays, members: list[int], pods: int, gpus_per_pod: int) -> dict[int, list[int]]:
    order = [n for n, _ in ring_order(arrays, {n: [0] for n in members})]
    out: dict[int, list[int]] = {}
    left = pods
    for n in order:
        per_node = int(arrays.gpu_count[n]) // max(gpus_per_pod, 1)
        take = min(per_node, left)
        if take:
            out[n] = list(range(take * gpus_per_pod))
            left -= take
        if not left:
            break
    return out


def ideal_allreduce_s(arrays: TopologyArrays, pods: int, gpus_per_pod: int, params: CommParams = CommParams()) -> float:
    """All-reduce time of the most compact placement of this shape (cached on the arrays)."""
    cache = arrays._extra.setdefault("comm_ideal", {})
    key = (pods, gpus_per_pod, params)
    if key not in cache:
        cache[key] = comm_cost(arrays, ideal_placement(arrays, pods, gpus_per_pod, params), params).allreduce_s
    return cache[key]


def slowdown(actual_s: float, ideal_s: float, comm_share: float) -> float:
    """Phase 5: how much longer a step takes than on the ideal placement (1 = no slower; never
    below 1: a job makes no more than one unit of progress per unit of time)."""
    if ideal_s <= 0:
        return 1.0
    return max(1.0, (1.0 - comm_share) + comm_share * actual_s / ideal_s)
