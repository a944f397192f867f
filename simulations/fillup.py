"""The FGD fill-up experiment on an openb trace, driven through the placement engine.

Phases of one run (policy, seed):
  1. Workload: pods sorted by name, shuffled with the run's seed; then tuned to
     ``inflate`` x the cluster's GPU capacity: while below, clones drawn with replacement
     from the name-sorted original list are appended (the artifact's rule: stop at the
     first draw whose per-GPU milli would overshoot the target); while above, random
     pods are removed. Timestamps, QoS and phase are ignored; pods never leave.
  2. Mix: the typical pods of the original list (``scheduler.workload_mix``), which the
     fragmentation plugins read from ``Context.mix``.
  3. Events: pod ``i`` arrives at time ``i``; the loop offers it once to the engine
     (``scheduler.engine.place_pod``, what ``place()`` runs per pod). A pod that fits
     nowhere is counted as failed and skipped: no retry, no preemption, no queue.
  4. Metrics after every pod (and once before the first): arrived GPU milli (failed pods
     included), allocated GPU milli, cluster fragmentation and idle GPU milli.
  5. Bins: as the artifact's analysis, by arrived demand rounded to an integer percent of
     capacity (0..130); each bin is the mean of its events (a +-1 window when empty).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.readers.openb import PodRow
from models.requests import GPU_MILLI
from models.topology import TopologyArrays
from plugins.base import Context
from plugins.fragmentation import MixModel, NodeStats
from scheduler.engine import PROFILES, Engine, PlacementConfig, place_pod
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workload_mix import DEFAULT_COVERAGE, WorkloadMix
from simulations.core import EventLoop

POLICIES = ("Random", "DotProd", "GpuClustering", "GpuPacking", "BestFit", "FGD", "toposched")
BASELINES = POLICIES[:-1]
MAX_PODS_PER_NODE = 1001  # the artifact's node "pods" allocatable
BINS = np.arange(0, 131)


# ---------------------------------------------------------------------------- cluster


@functools.lru_cache(maxsize=4)
def openb_arrays(node_text: str, source: str) -> TopologyArrays:
    """Topology arrays of an openb node list (each GPU 1000 milli, no NVLink)."""
    from models import presets
    from models.cluster import cluster_from_data
    from models.topology import build_arrays

    data = presets.openb_cluster_data(node_text, source)
    for node in data["nodes"]:
        node["max_pods"] = MAX_PODS_PER_NODE
    return build_arrays(cluster_from_data(data, source))


# ---------------------------------------------------------------------------- workload


def shape_of(pod: PodRow) -> PodShape:
    return PodShape(cpu_milli=pod.cpu_milli, memory_mib=pod.memory_mib, gpus=pod.num_gpu,
                    gpu_milli=pod.gpu_milli if pod.num_gpu else GPU_MILLI, gpu_models=pod.gpu_spec)


def arrival_order(pods: Sequence[PodRow], capacity_milli: int, rng: np.random.Generator,
                  inflate: float) -> list[PodRow]:
    """Phase 1: name order, seeded shuffle, then tune the total GPU request to ``inflate`` x capacity."""
    by_name = sorted(pods, key=lambda p: p.name)
    order = [by_name[i] for i in rng.permutation(len(by_name))]
    if inflate <= 0 or not by_name:
        return order
    target = inflate * capacity_milli
    total = sum(p.gpu_milli_total for p in order)
    if total < target and not any(p.gpu_milli_total for p in by_name):
        raise ValueError("the pod list requests no GPU, so clones of it never reach "
                         f"{inflate} x the GPU capacity")
    if total < target:
        clone = 0
        while True:
            src = by_name[int(rng.integers(len(by_name)))]
            if total + src.gpu_milli > target:
                break
            order.append(src.clone(f"{src.name}-clone-{clone}"))
            total += src.gpu_milli_total
            clone += 1
    else:
        while total > target:
            victim = order.pop(int(rng.integers(len(order))))
            total -= victim.gpu_milli_total
    return order


def typical_mix(pods: Sequence[PodRow], coverage: float = DEFAULT_COVERAGE) -> WorkloadMix:
    """Phase 2: the typical pods of the original trace."""
    return WorkloadMix.from_shapes((shape_of(p) for p in pods), coverage=coverage)


# ---------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """One (trace, policy, seed) run: per-event curves and the binned table."""

    trace: str
    policy: str
    seed: int
    inflate: float
    capacity_milli: int
    pods: list[str]  # arrival order ("" for the initial row)
    placed: np.ndarray  # bool [E]
    node: np.ndarray  # int [E], -1 = failed / initial row
    arrived_milli: np.ndarray  # int64 [E]
    used_milli: np.ndarray  # int64 [E]
    frag_milli: np.ndarray  # float [E]
    idle_milli: np.ndarray  # int64 [E]
    failed_by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [pods, GPU milli]
    first_failure: dict[str, int] = field(default_factory=dict)  # kind -> arrived GPU milli at its first failure
    wall_s: float = 0.0
    cpu_s: float = 0.0  # process CPU time of the run (the machine may be shared)
    snapshot: Snapshot | None = None  # the cluster after the last pod

    @property
    def n_pods(self) -> int:
        return len(self.pods) - 1

    @property
    def n_failed(self) -> int:
        return int((~self.placed[1:]).sum())

    def binned(self) -> dict[str, dict[int, float]]:
        """Phase 5: allocation, unallocated, fragmentation (% of capacity) and frag ratio per bin."""
        cap_gpus = self.capacity_milli / GPU_MILLI
        arrive = np.round(self.arrived_milli / cap_gpus / 10.0, 0)
        alloc = np.round(self.used_milli / cap_gpus / 10.0, 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(self.idle_milli > 0, 100.0 * self.frag_milli / self.idle_milli, 0.0)
        out: dict[str, dict[int, float]] = {"alloc_gpu_pct": {}, "unallocated_gpu_pct": {},
                                            "frag_gpu_pct": {}, "frag_ratio_pct": {}}
        for b in BINS:
            rows = arrive == b
            if not rows.any():
                rows = (arrive >= b - 1) & (arrive <= b + 1)
                if not rows.any():
                    continue
            a = round(float(alloc[rows].mean()), 2)
            out["alloc_gpu_pct"][int(b)] = a
            out["unallocated_gpu_pct"][int(b)] = round(100.0 - a, 2)
            out["frag_gpu_pct"][int(b)] = round(100.0 * float(self.frag_milli[rows].mean()) / 1000.0 / cap_gpus, 2)
            out["frag_ratio_pct"][int(b)] = float(ratio[rows].mean())
        return out


def failure_kind(pod: PodRow) -> str:
    if pod.num_gpu == 0:
        kind = "cpu-only"
    elif pod.is_shared:
        kind = "shared-gpu"
    else:
        kind = f"{pod.num_gpu}-gpu"
    return kind + ("+model" if pod.gpu_spec else "")


# ---------------------------------------------------------------------------- run


def engine_for(policy: str, seed: int, config: PlacementConfig | None = None) -> Engine:
    """The engine for ``policy`` (a profile name), or for ``config`` when given.

    Ties go to a per-run random node ranking (``tie_break: ranked``), as in the artifact."""
    if config is None:
        if policy not in PROFILES:
            raise KeyError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        config = PlacementConfig(profile=policy, tie_break="ranked", seed=seed)
    return Engine.from_config(config)


def run_fillup(arrays: TopologyArrays, pods: Sequence[PodRow], policy: str, seed: int, *, trace: str = "",
               inflate: float = 1.3, coverage: float = DEFAULT_COVERAGE,
               progress: Callable[[int, int], None] | None = None, config: PlacementConfig | None = None) -> RunResult:
    """One fill-up run of ``policy`` with ``seed`` (phases in the module docstring)."""
    t0, c0 = time.perf_counter(), time.process_time()
    capacity = int(arrays.gpu_count.sum()) * GPU_MILLI
    workload_seed, placement_seed = np.random.SeedSequence(seed).spawn(2)
    order = arrival_order(pods, capacity, np.random.default_rng(workload_seed), inflate)
    mix = typical_mix(pods, coverage)
    engine = engine_for(policy, seed, config)
    ctx = Context(mix=mix, rng=np.random.default_rng(placement_seed))
    snap = Snapshot.empty(arrays)
    frag = NodeStats(MixModel(mix.arrays(), arrays.models), snap)
    shapes: dict[tuple, PodShape] = {}
    changed_cpu = np.zeros(len(order) + 1, dtype=np.int64)  # the placed node's state after each event
    changed_mem = np.zeros(len(order) + 1, dtype=np.int64)
    changed_gpu = np.zeros((len(order) + 1, snap.gpu_free.shape[1]), dtype=np.int32)

    e = len(order) + 1
    res = RunResult(trace=trace, policy=policy, seed=seed, inflate=inflate, capacity_milli=capacity,
                    pods=[""] + [p.name for p in order], placed=np.ones(e, dtype=bool),
                    node=np.full(e, -1, dtype=np.int32), arrived_milli=np.zeros(e, dtype=np.int64),
                    used_milli=np.zeros(e, dtype=np.int64), frag_milli=np.zeros(e),
                    idle_milli=np.zeros(e, dtype=np.int64))
    state = {"arrived": 0, "used": 0}

    def record(i: int, node: int = -1) -> None:
        if node >= 0:
            changed_cpu[i] = snap.free_cpu[node]
            changed_mem[i] = snap.free_mem[node]
            changed_gpu[i] = snap.gpu_free[node]
        res.arrived_milli[i] = state["arrived"]
        res.used_milli[i] = state["used"]
        res.idle_milli[i] = capacity - state["used"]

    def arrival(i: int, pod: PodRow) -> Callable[[EventLoop], None]:
        def fire(loop: EventLoop) -> None:
            key = (pod.cpu_milli, pod.memory_mib, pod.num_gpu, pod.gpu_milli, pod.gpu_spec)
            shape = shapes.get(key)
            if shape is None:
                shape = shapes[key] = shape_of(pod)
            state["arrived"] += pod.gpu_milli_total
            choice, _ = place_pod(engine, snap, shape, ctx, explain=False)
            if choice is None:
                res.placed[i] = False
                kind = failure_kind(pod)
                res.first_failure.setdefault(kind, state["arrived"])
                tally = res.failed_by_kind.setdefault(kind, [0, 0])
                tally[0] += 1
                tally[1] += pod.gpu_milli_total
            else:
                node, gpus, _ = choice
                snap.apply(node, gpus, shape.gpu_milli, shape.cpu_milli, shape.memory_mib, extended=shape.extended)
                state["used"] += pod.gpu_milli_total
                res.node[i] = node
            record(i, res.node[i])
            if progress is not None:
                progress(i, e - 1)
        return fire

    loop = EventLoop(seed)
    loop.schedule(0.0, lambda _loop: record(0), priority=-1)
    for i, pod in enumerate(order, start=1):
        loop.schedule(float(i), arrival(i, pod))
    loop.run()
    res.frag_milli[:] = _frag_timeline(frag, res.node, changed_cpu, changed_mem, changed_gpu)
    res.snapshot = snap
    res.wall_s = time.perf_counter() - t0
    res.cpu_s = time.process_time() - c0
    return res


def _frag_timeline(start: NodeStats, node: np.ndarray, cpu: np.ndarray, mem: np.ndarray,
                   gpu: np.ndarray) -> np.ndarray:
    """Cluster fragmentation after every event, from the one node each placement changed
    (all new node states are evaluated in one vectorised call)."""
    placed = np.flatnonzero(node >= 0)
    new = start.model.frag(start.arrays.model_id[node[placed]], cpu[placed], mem[placed], gpu[placed])
    last = start.frag.copy()
    delta = np.zeros(len(node))
    for j, i in enumerate(placed):
        n = node[i]
        delta[i] = new[j] - last[n]
        last[n] = new[j]
    return float(start.frag.sum()) + np.cumsum(delta)


def trace_digest(pods: Sequence[PodRow]) -> str:
    """A short digest of a pod list (for reports)."""
    h = hashlib.sha256()
    for p in pods:
        h.update(f"{p.name},{p.cpu_milli},{p.memory_mib},{p.num_gpu},{p.gpu_milli},{'|'.join(p.gpu_spec)}\n".encode())
    return h.hexdigest()[:12]
