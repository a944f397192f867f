"""Preemption planning latency: a full cluster of lower-priority pods, one high-priority unit.

Clusters as in ``bench_placement.py`` (racks of 32 dgx-h100 nodes, blocks of 512), every
GPU in use: per node, by a seeded draw, one 8-GPU pod (40%), a member of an 8-node gang
of 8-GPU pods (30%), or eight 1-GPU pods (30%); priorities drawn from 0 / 10 / 100, a
gang's members sharing one. The preemptor (priority 1000) is a 1-GPU pod, an 8-GPU pod, or
a gang of 8 x 8 or 32 x 8 GPUs (required level: rack). Rows: p50 / p99 of
``plan_preemption`` (ms), pods evicted, the highest victim priority, peak RSS.

    python benchmarks/bench_preemption.py               # the table in docs/benchmarks.md
    python benchmarks/bench_preemption.py --quick
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_placement import cluster, machine, pct  # noqa: E402

from models.requests import GangRequest, GangRole, PodRequest  # noqa: E402
from plugins.base import Context  # noqa: E402
from scheduler.engine import Engine, PlacementConfig  # noqa: E402
from scheduler.ledger import Allocation  # noqa: E402
from scheduler.preemption import Holder, plan_preemption  # noqa: E402
from scheduler.snapshot import PodShape, Snapshot  # noqa: E402
from scheduler.workload_mix import WorkloadMix  # noqa: E402

PRIORITIES = (0, 10, 100)
CPU_PER_GPU, MEM_PER_GPU = 8_000, 65_536


def full_cluster(arrays, seed: int) -> tuple[Snapshot, list[Holder]]:
    """Every GPU taken by lower-priority pods (see the module docstring)."""
    rng = np.random.default_rng(seed)
    snap = Snapshot.empty(arrays)
    holders: list[Holder] = []

    def take(key: str, node: int, gpus: tuple[int, ...], priority: int, gang: str | None = None) -> None:
        a = Allocation(key, node, gpus, 1000, CPU_PER_GPU * len(gpus), MEM_PER_GPU * len(gpus), gang=gang)
        snap.apply(node, gpus, 1000, a.cpu_milli, a.memory_mib)
        holders.append(Holder(a, priority))

    node = 0
    while node < arrays.n_nodes:
        kind = rng.choice(3, p=(0.4, 0.3, 0.3))
        prio = int(rng.choice(PRIORITIES))
        if kind == 1 and node + 8 <= arrays.n_nodes:
            for m in range(8):
                take(f"ns/g{node}-{m}", node + m, tuple(range(8)), prio, gang=f"ns/g{node}")
            node += 8
            continue
        if kind == 2:
            for g in range(8):
                take(f"ns/p{node}-{g}", node, (g,), int(rng.choice(PRIORITIES)))
        else:
            take(f"ns/w{node}", node, tuple(range(8)), prio)
        node += 1
    return snap, holders


def requests() -> list[tuple[str, object]]:
    def gang(members: int) -> GangRequest:
        return GangRequest(name="ml/big", priority=1000, required_level="rack",
                           roles=(GangRole(count=members, gpus=8, cpu_milli=8 * CPU_PER_GPU,
                                           memory_mib=8 * MEM_PER_GPU),))
    return [("pod 1 GPU", PodRequest(name="ml/one", gpus=1, cpu_milli=CPU_PER_GPU, memory_mib=MEM_PER_GPU,
                                     priority=1000)),
            ("pod 8 GPU", PodRequest(name="ml/eight", gpus=8, cpu_milli=8 * CPU_PER_GPU,
                                     memory_mib=8 * MEM_PER_GPU, priority=1000)),
            ("gang 64 GPU (8x8)", gang(8)), ("gang 256 GPU (32x8)", gang(32))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="*", default=[512, 1024, 4096])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no 4,096-node cluster")
    ap.add_argument("--mix", action="store_true",
                    help="plan with the running pods as the arriving mix, as the live scheduler plans with its mix")
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.reps = [n for n in args.nodes if n <= 1024], 5
    print(machine())
    print("| nodes | preemptor | p50 ms | p99 ms | pods evicted (median) | highest victim priority |")
    print("|---:|---|---:|---:|---:|---|")
    engine = Engine.from_config(PlacementConfig(profile="toposched"))
    for n in args.nodes:
        arrays = cluster(n)
        for label, req in requests():
            times, evicted, highest = [], [], Counter()
            for rep in range(args.reps):
                snap, holders = full_cluster(arrays, args.seed + rep)
                ctx = None
                if args.mix:
                    shapes = [PodShape(cpu_milli=h.allocation.cpu_milli, memory_mib=h.allocation.memory_mib,
                                       gpus=len(h.allocation.gpus)) for h in holders]
                    ctx = Context(mix=WorkloadMix.from_shapes(shapes))
                t = time.perf_counter()
                plan = plan_preemption(engine, snap, holders, req, ctx=ctx)
                times.append(time.perf_counter() - t)
                evicted.append(len(plan.victim_pods) if plan else 0)
                highest[plan.highest_victim_priority if plan else "none"] += 1
            hi = ", ".join(f"{k}: {v}" for k, v in sorted(highest.items(), key=lambda kv: str(kv[0])))
            print(f"| {n} | {label} | {pct(times, 50):.1f} | {pct(times, 99):.1f} | {int(np.median(evicted))} | "
                  f"{hi} |", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
