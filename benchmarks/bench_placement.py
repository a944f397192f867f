"""Placement latency: one pod and gangs on 512 / 1,024 / 4,096 nodes x 8 GPUs.

Clusters are the ``fabric-4096`` layout cut to size (racks of 32 dgx-h100 nodes,
blocks of 512). Occupancy ``x``: every node's used GPU count is drawn from a
beta-binomial with mean ``8x`` (Beta(x, 1 - x), U-shaped: many nodes empty or full,
some partial) and the used GPUs are a random subset; CPU and memory are taken in
proportion. Each repetition draws a fresh occupancy (seeded), so p99 covers many states.

Rows: p50 / p99 latency of ``place()`` (ms), the gang solver's statuses, how the
CP-SAT answer compares with greedy (lexicographic objective), and peak RSS.

    python benchmarks/bench_placement.py                  # the table in docs/benchmarks.md
    python benchmarks/bench_placement.py --quick          # a smaller, faster sweep
    python benchmarks/bench_placement.py --nodes 500 --batch 1000   # a live batch, with and without a mix
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.cluster import cluster_from_data  # noqa: E402
from models.placement import SolverStatus  # noqa: E402
from models.requests import GangRequest, GangRole, PodRequest  # noqa: E402
from models.topology import build_arrays  # noqa: E402
from plugins.base import Context  # noqa: E402
from scheduler.engine import Engine, PlacementConfig, place  # noqa: E402
from scheduler.snapshot import PodShape, Snapshot  # noqa: E402
from scheduler.workload_mix import WorkloadMix  # noqa: E402

GANGS = {8: (8, 1), 64: (8, 8), 256: (32, 8), 512: (64, 8)}  # GPUs -> (members, GPUs each)


def cluster(n: int):
    spec = {
        "name": f"fabric-{n}",
        "levels": [{"name": "block"}, {"name": "rack"}],
        "groups": [{"name": "node-{g:04d}", "count": n, "type": "dgx-h100",
                    "levels": {"block": {"every": 512, "format": "block{n}"},
                               "rack": {"every": 32, "format": "rack{n:03d}"}}}],
    }
    return build_arrays(cluster_from_data(spec, f"fabric-{n}"))


def occupy(arrays, frac: float, seed: int) -> Snapshot:
    """A snapshot with about ``frac`` of the GPUs in use (see the module docstring)."""
    snap = Snapshot.empty(arrays)
    if frac <= 0:
        return snap
    rng = np.random.default_rng(seed)
    n, g = snap.gpu_free.shape
    q = rng.beta(frac, 1.0 - frac, size=n)
    used = rng.binomial(g, q)
    order = np.argsort(rng.random((n, g)), axis=1)
    taken = order < used[:, None]
    snap.gpu_free[taken] = 0
    share = used / g
    snap.free_cpu -= (arrays.cpu_milli * share * 0.9).astype(np.int64)
    snap.free_mem -= (arrays.memory_mib * share * 0.9).astype(np.int64)
    snap.free_pods -= used.astype(np.int32)
    return snap


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000.0, q))


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ortools

    return (f"platform {platform.platform()}; CPU {cpu}; {os.cpu_count()} cores; python {platform.python_version()}; "
            f"numpy {np.__version__}; ortools {ortools.__version__}")


def bench_pods(engine: Engine, arrays, frac: float, reps: int, seed: int) -> list[str]:
    rows = []
    snap = occupy(arrays, frac, seed)
    for gpus in (1, 8):
        req = [PodRequest(name="bench/pod", gpus=gpus, cpu_milli=8000, memory_mib=65536)]
        place(snap, req, engine)  # warm caches (GPU sets per free mask)
        times, placed = [], 0
        for _ in range(reps):
            t = time.perf_counter()
            d = place(snap, req, engine)
            times.append(time.perf_counter() - t)
            placed += bool(d.placements)
        rows.append(f"| {arrays.n_nodes} | {frac:.0%} | pod {gpus} GPU | {pct(times, 50):.2f} | {pct(times, 99):.2f} "
                    f"| placed {placed}/{reps} | |")
    return rows


def bench_batch(engine: Engine, nodes: int, pods: int, reps: int) -> None:
    """One ``place()`` call deciding ``pods`` one-GPU pods on idle nodes, as the live loop
    decides a batch: each pod sees the ones before it. With and without the arriving mix
    (the pods themselves), which the live scheduler passes so that fragmentation is scored."""
    arrays = cluster(nodes)
    snap = Snapshot.empty(arrays)
    reqs = [PodRequest(name=f"bench/p{i}", gpus=1, cpu_milli=8000, memory_mib=65536) for i in range(pods)]
    mix = WorkloadMix.from_shapes(PodShape.of(r) for r in reqs)
    for label, ctx in (("none", None), ("the pods", Context(mix=mix))):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            d = place(snap, reqs, engine, ctx)
            times.append((time.perf_counter() - t) * 1e3 / pods)
            assert sum(o.placed for o in d.outcomes) == pods
        print(f"| {nodes} | {pods} | {label} | {min(times):.3f} | {float(np.median(times)):.3f} |", flush=True)


def bench_gangs(engine: Engine, arrays, frac: float, reps: int, seed: int, sizes: list[int]) -> list[str]:
    rows = []
    for gpus in sizes:
        members, each = GANGS[gpus]
        req = [GangRequest(name="bench/gang", roles=(GangRole(count=members, gpus=each, cpu_milli=8000,
                                                              memory_mib=65536),))]
        place(occupy(arrays, frac, seed), req, engine)  # warm up: the first solve imports OR-Tools
        times, statuses, versus = [], Counter(), Counter()
        for rep in range(reps):
            snap = occupy(arrays, frac, seed + 1000 * rep + gpus)
            t = time.perf_counter()
            d = place(snap, req, engine)
            times.append(time.perf_counter() - t)
            o = d.outcomes[0]
            statuses[o.report.status.value] += 1
            if o.report.status in (SolverStatus.OPTIMAL, SolverStatus.FEASIBLE) and o.report.greedy_objective:
                ours = tuple(o.report.objective.values())
                theirs = tuple(o.report.greedy_objective.values())
                versus["better" if ours < theirs else "equal" if ours == theirs else "worse"] += 1
            elif o.report.status in (SolverStatus.OPTIMAL, SolverStatus.FEASIBLE):
                versus["greedy found none"] += 1
        st = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        vs = ", ".join(f"{k} {v}" for k, v in sorted(versus.items())) or "-"
        rows.append(f"| {arrays.n_nodes} | {frac:.0%} | gang {gpus} GPU ({members}x{each}) | {pct(times, 50):.2f} "
                    f"| {pct(times, 99):.2f} | {st} | {vs} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="*", default=[512, 1024, 4096])
    ap.add_argument("--occupancy", type=float, nargs="*", default=[0.0, 0.5, 0.9])
    ap.add_argument("--gangs", type=int, nargs="*", default=[8, 64, 256, 512], choices=sorted(GANGS))
    ap.add_argument("--pod-reps", type=int, default=200)
    ap.add_argument("--gang-reps", type=int, default=30)
    ap.add_argument("--time-limit", type=float, default=1.0, help="gang solver time limit, seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--batch", type=int, metavar="PODS",
                    help="instead: one place() call for PODS one-GPU pods on idle --nodes, with and without a mix")
    args = ap.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        ap.error(f"--batch: need at least 1 pod, got {args.batch}")
    if args.quick:
        args.pod_reps, args.gang_reps = 30, 5
    config = PlacementConfig(gang={"time_limit_s": args.time_limit})
    engine = Engine.from_config(config)
    print(machine())
    if args.batch is not None:
        print("| nodes | pods per call | mix | ms per pod (best of 5) | ms per pod (median) |")
        print("|---:|---:|---|---:|---:|")
        for n in args.nodes:
            bench_batch(engine, n, args.batch, 5)
        return 0
    print(f"pod reps {args.pod_reps}, gang reps {args.gang_reps}, gang time limit {args.time_limit:g} s, "
          f"seed {args.seed}")
    print()
    print("| nodes | occupancy | request | p50 ms | p99 ms | status | CP-SAT vs greedy |")
    print("|---:|---:|---|---:|---:|---|---|")
    for n in args.nodes:
        arrays = cluster(n)
        for frac in args.occupancy:
            for row in bench_pods(engine, arrays, frac, args.pod_reps, args.seed):
                print(row, flush=True)
            for row in bench_gangs(engine, arrays, frac, args.gang_reps, args.seed, args.gangs):
                print(row, flush=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print()
    print(f"peak RSS {rss_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
