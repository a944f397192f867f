"""The least GPU any placement can leave unallocated once the arrived demand reaches a point.

A relaxation of the fill-up experiment, solved exactly: drop node boundaries (a multi-GPU
pod may take any free GPUs), CPU, memory and GPU models, and let the pods that arrived be
placed in any order. What is left: a GPU holds shares summing to at most 1,000 milli, or
one whole-GPU pod's GPU. The most GPU milli a placement can then allocate bounds every
real policy from above, so ``capacity - best`` bounds the unallocated GPU from below.

Phases of ``best_allocation``: (1) an arc-flow model of one GPU (graph nodes 0..1000 milli
in steps of the shares' greatest common divisor, 10 on openb; an arc per share size and a loss arc) whose flow is the number of GPUs
holding shares, each unit of flow a way to fill one GPU; (2) at most ``shares[s]`` arcs of
size ``s`` (exactly ``shares[s]`` with ``place_all``: every arrived shared pod placed, as a
policy does that places each pod that fits while shared pods still find room); whole-GPU
pods take whole GPUs from the rest; (3) CP-SAT maximises the allocated milli and proves it
(the returned value is the solver's proven bound, so a time limit keeps it a bound).

Two bounds per run (``Bound``): ``any`` (a policy free to turn pods away, knowing the whole
order) and ``all_shared_placed``. See docs/fidelity.md for what they say about the traces.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from models.readers.openb import PodRow
from simulations.fillup import arrival_order

GPU_MILLI = 1000


@dataclass(frozen=True)
class Bound:
    """The least unallocated GPU (% of capacity) when the arrived demand reaches ``point`` of capacity."""

    seed: int
    point: float
    arrived_gpus: float
    shared_pods: int
    whole_gpus: int
    any_pct: float  # any policy (may turn pods away, knows the order)
    all_shared_placed_pct: float  # policies that place every arrived shared pod
    status: str  # CP-SAT's verdicts, "optimal" when both were proved

    def to_json(self) -> dict:
        return {"point": round(100 * self.point, 2), "arrived_gpus": round(self.arrived_gpus, 1), "shared_pods": self.shared_pods,
                "whole_gpus": self.whole_gpus, "any": round(self.any_pct, 3),
                "all_shared_placed": round(self.all_shared_placed_pct, 3), "status": self.status}


def arrived_demand(order: Sequence[PodRow], capacity_milli: int, point: float = 1.0) -> tuple[dict[int, int], int, int]:
    """(shared pods by share size, whole GPUs, arrived milli) of the pods offered until the next would pass ``point``."""
    limit = point * capacity_milli
    arrived, shares, whole = 0, Counter(), 0
    for pod in order:
        if arrived + pod.gpu_milli_total > limit:
            break
        arrived += pod.gpu_milli_total
        if pod.is_shared:
            shares[pod.gpu_milli] += 1
        else:
            whole += pod.num_gpu
    return dict(shares), whole, arrived


def best_allocation(shares: dict[int, int], whole: int, gpus: int, *, place_all: bool,
                    time_limit_s: float = 30.0) -> tuple[int, str]:
    """(most milli any placement allocates in the relaxation, CP-SAT status name); phases in the module doc.

    INFEASIBLE (only with ``place_all``: the shares do not fit on ``gpus`` GPUs) returns the capacity."""
    if any(not 0 < s < GPU_MILLI for s in shares):
        raise ValueError(f"share sizes must lie between 0 and {GPU_MILLI} milli: {sorted(shares)}")
    step = math.gcd(GPU_MILLI, *shares)  # the graph's resolution: every share is a whole number of steps
    top = GPU_MILLI // step
    m = cp_model.CpModel()
    arc = {(u, s): m.NewIntVar(0, n, f"a{u}_{s}") for s, n in shares.items() for u in range(top - s // step + 1)}
    loss = [m.NewIntVar(0, gpus, f"loss{u}") for u in range(top)]
    used = m.NewIntVar(0, gpus, "shared_gpus")
    into: list[list] = [[] for _ in range(top + 1)]
    out: list[list] = [[] for _ in range(top + 1)]
    for (u, s), x in arc.items():
        out[u].append(x)
        into[u + s // step].append(x)
    for u in range(top):
        out[u].append(loss[u])
        into[u + 1].append(loss[u])
    m.Add(sum(out[0]) == used)
    m.Add(sum(into[top]) == used)
    for v in range(1, top):
        m.Add(sum(into[v]) == sum(out[v]))
    for size, n in shares.items():
        placed = sum(x for (_, s), x in arc.items() if s == size)
        m.Add(placed == n) if place_all else m.Add(placed <= n)
    whole_gpus = m.NewIntVar(0, whole, "whole_gpus")
    m.Add(whole_gpus + used <= gpus)
    m.Maximize(GPU_MILLI * whole_gpus + sum(s * x for (_, s), x in arc.items()))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 2
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return gpus * GPU_MILLI, solver.StatusName(status)
    return int(math.floor(solver.BestObjectiveBound() + 1e-6)), solver.StatusName(status)  # milli are integers


def bound_for_seed(pods: Sequence[PodRow], gpus: int, seed: int, *, inflate: float = 1.3,
                   point: float = 1.0) -> Bound:
    """Both bounds for the arrival order of ``seed`` (the fill-up's own order and inflation)."""
    capacity = gpus * GPU_MILLI
    workload_seed, _ = np.random.SeedSequence(seed).spawn(2)
    order = arrival_order(pods, capacity, np.random.default_rng(workload_seed), inflate)
    shares, whole, arrived = arrived_demand(order, capacity, point)
    best_any, st_any = best_allocation(shares, whole, gpus, place_all=False)
    best_all, st_all = best_allocation(shares, whole, gpus, place_all=True)
    statuses = {st_any.lower(), st_all.lower()}
    return Bound(seed=seed, point=point, arrived_gpus=arrived / GPU_MILLI, shared_pods=sum(shares.values()),
                 whole_gpus=whole, any_pct=100.0 * (capacity - best_any) / capacity,
                 all_shared_placed_pct=100.0 * (capacity - best_all) / capacity,
                 status="optimal" if statuses == {"optimal"} else ", ".join(sorted(statuses)))
