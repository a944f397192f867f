"""The placement engine: ``place(snapshot, requests, config) -> Decision``.

Every driver (live scheduler, extender, simulators, CLI) calls this and nothing else to
decide placements. No Kubernetes or HTTP import may appear here.

Single pod, in four phases:
  1. Filter: every plugin's ``filter`` over all nodes at once; a node that fails is
     charged to the first plugin that rejects it, so reasons add up to the node count.
  2. Candidates: for whole-GPU pods one GPU set per feasible node (``scheduler.gpuset``,
     cached per node type and free-GPU bitmask); for shared-GPU pods every (node, GPU)
     pair with enough free milli; the GPU state each candidate leaves is kept.
  3. Score: weighted sum of the plugins' ``score`` arrays (each 0..1).
  4. Select: the best total; ties go to the lowest node index, or to the seeded RNG when
     ``tie_break: random``.
Gangs go to ``scheduler.gang`` (greedy tree descent + CP-SAT), replica sets place their
replicas one by one with the spread plugin seeing the earlier ones.
Requests in one call are decided in order, each seeing the ones before it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.placement import Decision, Placement, RequestOutcome, SolverReport, SolverStatus
from models.requests import GangRequest, PodRequest, ReplicaSetRequest, RequestFile
from plugins import base as plugin_base
from plugins.base import Candidates, Context, FilterResult, Plugin
from scheduler import gpuset
from scheduler.snapshot import PodShape, Snapshot


class PluginConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    weight: float = 1.0
    args: dict[str, Any] = Field(default_factory=dict)


class GangConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    solver: str = "cpsat"  # "cpsat" | "greedy"
    time_limit_s: float = Field(default=1.0, gt=0)
    workers: int = Field(default=1, ge=1)


class PlacementConfig(BaseModel):
    """Which plugins run with which weights, tie-breaking, gang solver settings."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "toposched"
    plugins: list[PluginConfig] | None = None
    tie_break: str = "first"  # "first" | "random"
    seed: int = 0
    gang: GangConfig = GangConfig()


# Filters every profile runs, then the profile's scorers.
FILTERS = ("node-state", "resource-fit", "gpu-model", "node-constraints")

PROFILES: dict[str, list[tuple[str, float]]] = {
    # ours: pack against the arriving mix, keep NVLink islands whole, then bin-pack
    "toposched": [("fragmentation", 10.0), ("nvlink-island", 2.0), ("numa-nic", 1.0),
                  ("binpack", 1.0), ("replica-spread", 5.0)],
    "binpack": [("binpack", 1.0), ("nvlink-island", 1.0)],
    "spread": [("least-allocated", 1.0)],
}


@dataclass
class Engine:
    """Plugins instantiated once from a config; cheap to reuse across decisions."""

    config: PlacementConfig
    filters: list[Plugin]
    scorers: list[tuple[Plugin, float]]

    @classmethod
    def from_config(cls, config: PlacementConfig | None = None) -> Engine:
        config = config or PlacementConfig()
        if config.plugins is not None:
            specs = [(p.name, p.weight, p.args) for p in config.plugins]
        else:
            if config.profile not in PROFILES:
                raise KeyError(f"unknown profile {config.profile!r}; known: {', '.join(sorted(PROFILES))}")
            specs = [(n, w, {}) for n, w in PROFILES[config.profile]]
        filters = [plugin_base.create(n) for n in FILTERS]
        scorers = [(plugin_base.create(n, **a), float(w)) for n, w, a in specs if n not in FILTERS]
        return cls(config, filters, scorers)

    @property
    def all_plugins(self) -> list[Plugin]:
        return [*self.filters, *(p for p, _ in self.scorers)]


def place(
    snapshot: Snapshot,
    requests: RequestFile | Sequence[PodRequest | GangRequest | ReplicaSetRequest],
    config: PlacementConfig | Engine | None = None,
    ctx: Context | None = None,
) -> Decision:
    """Decide placements for ``requests`` in order on a copy of ``snapshot``."""
    engine = config if isinstance(config, Engine) else Engine.from_config(config)
    if ctx is None:
        ctx = Context(rng=np.random.default_rng(engine.config.seed))
    if isinstance(requests, RequestFile):
        items: list[Any] = [*requests.gangs, *requests.replica_sets, *requests.pods]
    else:
        items = list(requests)
    snap = snapshot.copy()
    outcomes: list[RequestOutcome] = []
    for req in items:
        if isinstance(req, PodRequest):
            out = _place_pod_request(engine, snap, req, ctx)
        elif isinstance(req, GangRequest):
            from scheduler.gang import place_gang

            out = place_gang(engine, snap, req, ctx)
        elif isinstance(req, ReplicaSetRequest):
            out = _place_replica_set(engine, snap, req, ctx)
        else:
            raise TypeError(f"not a request: {type(req).__name__}")
        if out.placed:
            for p in out.placements:
                snap.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, owner=p.owner)
        outcomes.append(out)
    return Decision(outcomes)


def _place_pod_request(engine: Engine, snap: Snapshot, req: PodRequest, ctx: Context) -> RequestOutcome:
    t0 = time.perf_counter()
    shape = PodShape.of(req, owner=req.owner, spread_level=req.spread_level)
    choice, reason = place_pod(engine, snap, shape, ctx)
    dt = time.perf_counter() - t0
    if choice is None:
        return RequestOutcome(req.name, "pod", [], SolverReport(SolverStatus.INFEASIBLE, time_s=dt), reason)
    node, gpus, score = choice
    p = Placement(req.name, snap.arrays.node_names[node], node, gpus, shape.gpu_milli, shape.cpu_milli,
                  shape.memory_mib, owner=req.owner)
    return RequestOutcome(req.name, "pod", [p], SolverReport(SolverStatus.GREEDY, time_s=dt, objective={"score": score}))


def _place_replica_set(engine: Engine, snap: Snapshot, req: ReplicaSetRequest, ctx: Context) -> RequestOutcome:
    t0 = time.perf_counter()
    work = snap.copy()
    shape = PodShape.of(req.pod, owner=req.owner, spread_level=req.spread_level)
    placements = []
    for i in range(req.replicas):
        choice, reason = place_pod(engine, work, shape, ctx)
        if choice is None:
            dt = time.perf_counter() - t0
            why = f"replica {i + 1}/{req.replicas}: {reason}"
            return RequestOutcome(req.owner, "replica_set", [], SolverReport(SolverStatus.INFEASIBLE, time_s=dt), why)
        node, gpus, _ = choice
        p = Placement(f"{req.owner}-{i}", work.arrays.node_names[node], node, gpus, shape.gpu_milli,
                      shape.cpu_milli, shape.memory_mib, owner=req.owner)
        work.apply(node, gpus, shape.gpu_milli, shape.cpu_milli, shape.memory_mib, owner=req.owner)
        placements.append(p)
    return RequestOutcome(req.owner, "replica_set", placements,
                          SolverReport(SolverStatus.GREEDY, time_s=time.perf_counter() - t0))


def filter_nodes(engine: Engine, snap: Snapshot, shape: PodShape, states: dict[str, Any]) -> tuple[np.ndarray, str]:
    """Phase 1: feasible mask and the kube-scheduler style reason for the rest."""
    n = snap.n_nodes
    ok = np.ones(n, dtype=bool)
    charged = np.zeros(n, dtype=bool)
    counts: dict[str, int] = {}
    for p in engine.all_plugins:
        res: FilterResult | None = p.filter(shape, snap, states.get(p.name))
        if res is None:
            continue
        for mask, why in res.reasons:
            new = mask & ~charged
            c = int(new.sum())
            if c:
                counts[why] = counts.get(why, 0) + c
                charged |= new
        ok &= res.ok
    leftover = int((~ok & ~charged).sum())
    if leftover:
        counts["were filtered out"] = counts.get("were filtered out", 0) + leftover
    return ok, fit_error(n, int(ok.sum()), counts)


def fit_error(total: int, feasible: int, counts: dict[str, int]) -> str:
    """``0/4096 nodes are available: 3100 had fewer than 8 free GPUs, 996 ...``."""
    parts = ", ".join(f"{c} {why}" for why, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    text = f"{feasible}/{total} nodes are available"
    return f"{text}: {parts}" if parts else text


def build_candidates(snap: Snapshot, shape: PodShape, ok: np.ndarray) -> Candidates:
    """Phase 2: one candidate per feasible node (per feasible GPU for shared pods)."""
    nodes = np.flatnonzero(ok).astype(np.int32)
    gf = snap.gpu_free
    if shape.gpus == 0:
        return Candidates(nodes, [()] * len(nodes), gf[nodes], np.ones(len(nodes)))
    if shape.is_shared:
        sub = gf[nodes]
        ni, gi = np.nonzero(sub >= shape.gpu_milli)
        cn = nodes[ni]
        after = sub[ni].copy()
        after[np.arange(len(ni)), gi] -= shape.gpu_milli
        return Candidates(cn.astype(np.int32), [(int(g),) for g in gi], after, np.ones(len(ni)))
    k = shape.gpus
    full = gf[nodes] == 1000
    bits = (full.astype(np.int64) << np.arange(full.shape[1], dtype=np.int64)).sum(axis=1)
    types = snap.arrays.node_type[nodes]
    key = types.astype(np.int64) * (1 << 40) + bits
    uniq, inv = np.unique(key, return_inverse=True)
    sets: list[tuple[int, ...] | None] = []
    scores = np.zeros(len(uniq))
    for u, kv in enumerate(uniq):
        t = snap.arrays.types[int(kv >> 40)]
        chosen, score = _gpu_set(t, int(kv & ((1 << 40) - 1)), k)
        sets.append(chosen)
        scores[u] = score
    valid = np.array([sets[i] is not None for i in inv], dtype=bool) if len(inv) else np.zeros(0, dtype=bool)
    nodes, inv = nodes[valid], inv[valid]
    after = gf[nodes].copy()
    chosen_sets = [sets[i] for i in inv]
    for m, s in enumerate(chosen_sets):
        after[m, list(s)] = 0
    return Candidates(nodes, chosen_sets, after, scores[inv])  # type: ignore[arg-type]


def place_pod(engine: Engine, snap: Snapshot, shape: PodShape, ctx: Context) -> tuple[tuple[int, tuple[int, ...], float] | None, str]:
    """Place one pod shape: ``((node, gpus, score), "")`` or ``(None, reason)``."""
    states = {p.name: p.prepare(shape, snap, ctx) for p in engine.all_plugins}
    ok, reason = filter_nodes(engine, snap, shape, states)
    if not ok.any():
        return None, reason
    cand = build_candidates(snap, shape, ok)
    if len(cand) == 0:
        return None, fit_error(snap.n_nodes, 0, {f"had no free set of {shape.gpus} GPUs": int(ok.sum())})
    total = np.zeros(len(cand))
    for p, w in engine.scorers:
        s = p.score(shape, snap, cand, states.get(p.name))
        if s is not None and w:
            total += w * s
    best = total.max()
    if engine.config.tie_break == "random":
        ties = np.flatnonzero(total >= best - 1e-9)
        m = int(ties[ctx.rng.integers(len(ties))]) if len(ties) > 1 else int(ties[0])
    else:
        m = int(np.argmax(total))
    return (int(cand.node[m]), tuple(int(g) for g in cand.gpus[m]), float(total[m])), ""


_SET_CACHE: dict[tuple[int, int, int], tuple[Any, tuple[int, ...] | None, float]] = {}
_BEST_CACHE: dict[tuple[int, int], tuple[Any, int]] = {}


def _gpu_set(t: Any, free_bits: int, k: int) -> tuple[tuple[int, ...] | None, float]:
    """The GPU set ``scheduler.gpuset`` picks from a free bitmask, and its quality 0..1."""
    key = (id(t), free_bits, k)
    hit = _SET_CACHE.get(key)
    if hit is not None and hit[0] is t:
        return hit[1], hit[2]
    free = np.array([(free_bits >> i) & 1 for i in range(t.n_gpus)], dtype=bool)
    chosen = gpuset.choose_gpus(t, free, k)
    score = 0.0
    if chosen is not None:
        score = 1.0 if k <= 1 else gpuset.set_score(t, chosen) / max(_best_score(t, k), 1)
    if len(_SET_CACHE) > 200_000:
        _SET_CACHE.clear()
    _SET_CACHE[key] = (t, chosen, score)
    return chosen, score


def _best_score(t: Any, k: int) -> int:
    key = (id(t), k)
    hit = _BEST_CACHE.get(key)
    if hit is not None and hit[0] is t:
        return hit[1]
    w = t.pair_weight
    score = 1
    for combo in itertools.combinations(range(t.n_gpus), k):
        idx = list(combo)
        score = max(score, int(w[np.ix_(idx, idx)].sum()) // 2)
    _BEST_CACHE[key] = (t, score)
    return score
