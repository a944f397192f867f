"""Simulator speed and fidelity: time fill-up runs, or tabulate runs against the FGD artifact.

    python benchmarks/bench_simulator.py                      # one seed of each policy on the default trace
    python benchmarks/bench_simulator.py --sweep              # 6 baselines x seeds 42-51 on one trace
    python benchmarks/bench_simulator.py --fidelity out/fidelity/default out/fidelity/gpushare40 ...
    python benchmarks/bench_simulator.py --waste --trace default --policy FGD,toposched
    python benchmarks/bench_simulator.py --bound --trace default --seeds 42-51
    python benchmarks/bench_simulator.py --first-failures --trace default --seeds 42-51
    python benchmarks/bench_simulator.py --variants gpushare20,multigpu50,gpuspec33,cpu250 --seeds 42-44

``--fidelity`` reads the ``summary.json`` of ``toposched simulate openb`` runs and prints the
markdown table of docs/fidelity.md: our mean unallocated GPU % at 100% and 130% arrived
next to the artifact's cached means (``../shared/data/fgd-atc23-expected-results``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.errors import SpecError  # noqa: E402
from models.readers.openb import BUNDLED_NODES, bundled_text, read_pod_file  # noqa: E402
from simulations.fillup import BASELINES, POLICIES, openb_arrays, run_fillup  # noqa: E402

EXPECTED = ROOT / ".." / "shared" / "data" / "fgd-atc23-expected-results" / "summary_unallocated_by_policy.csv"
TOLERANCE = 0.5


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load average {load:.1f} at start")


def speed(trace: str, policies: list[str], seeds: list[int]) -> None:
    arrays = openb_arrays(bundled_text(BUNDLED_NODES), BUNDLED_NODES)
    pods, name = read_pod_file(trace)
    print(machine())
    print(f"trace {name}, seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"trace {name}, seed {seeds[0]}")
    print("| policy | runs | pods/run | wall s/run | CPU s/run | CPU us/pod | unallocated @100% |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total_wall = total_cpu = 0.0
    for policy in policies:
        wall = cpu = 0.0
        unalloc = []
        n = 0
        for seed in seeds:
            r = run_fillup(arrays, pods, policy, seed, trace=name)
            wall += r.wall_s
            cpu += r.cpu_s
            n = r.n_pods
            unalloc.append(r.binned()["unallocated_gpu_pct"][100])
        k = len(seeds)
        total_wall += wall
        total_cpu += cpu
        print(f"| {policy} | {k} | {n} | {wall / k:.2f} | {cpu / k:.2f} | {1e6 * cpu / k / n:.0f} | "
              f"{sum(unalloc) / k:.2f} |", flush=True)
    print(f"total: wall {total_wall:.0f} s, CPU {total_cpu:.0f} s")


def fidelity(dirs: list[Path]) -> int:
    expected: dict[tuple[str, str, str], tuple[float, float]] = {}
    if EXPECTED.exists():
        for row in csv.DictReader(EXPECTED.open()):
            policy = row["sc_policy"].split("-", 1)[1]
            expected[(row["workload"], policy, row["arrived_pct"])] = (float(row["unalloc_gpu_pct_mean"]),
                                                                       float(row["unalloc_gpu_pct_sd"]))
    else:
        print(f"(no cached results at {EXPECTED}; printing ours only)")
    print("| trace | policy | ours @100% (sd) | artifact @100% (sd) | diff | ours @130% | artifact @130% | diff | within 0.5 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|:---:|")
    misses = 0
    fgd: dict[str, float] = {}
    ours: dict[str, float] = {}
    for d in dirs:
        if not (d / "summary.json").exists():
            print(f"(no summary.json in {d}; skipped)")
            continue
        doc = json.loads((d / "summary.json").read_text())
        trace = doc["trace"]
        for policy, e in doc["policies"].items():
            u, sd = e["unallocated_gpu_pct"], e["unallocated_gpu_pct_sd"]
            cells = [f"{u['100']:.2f} ({sd['100']:.2f})"]
            ok_all = True
            for pt in ("100", "130"):
                exp = expected.get((trace, policy, pt))
                if pt == "130":
                    cells.append(f"{u['130']:.2f}")
                if exp is None:
                    cells += ["-", "-"]
                    ok_all = False if policy in BASELINES else ok_all
                    continue
                diff = u[pt] - exp[0]
                ok_all &= abs(diff) <= TOLERANCE
                cells += [f"{exp[0]:.2f} ({exp[1]:.2f})" if pt == "100" else f"{exp[0]:.2f}", f"{diff:+.2f}"]
            if policy == "FGD":
                fgd[trace] = expected.get((trace, "FGD", "100"), (u["100"], 0))[0]
            if policy == "toposched":
                ours[trace] = u["100"]
            mark = ("yes" if ok_all else "**no**") if policy in BASELINES else "n/a"
            misses += policy in BASELINES and not ok_all
            print(f"| {trace.replace('openb_pod_list_', '')} | {policy} | " + " | ".join(cells) + f" | {mark} |")
    if ours:
        print()
        print("| trace | toposched @100% | FGD (artifact) @100% | ratio | <= 0.85 |")
        print("|---|---:|---:|---:|:---:|")
        for trace, value in ours.items():
            if trace in fgd:
                ratio = value / fgd[trace]
                print(f"| {trace.replace('openb_pod_list_', '')} | {value:.2f} | {fgd[trace]:.2f} | {ratio:.3f} | "
                      f"{'yes' if ratio <= 0.85 else '**no**'} |")
    return 1 if misses else 0


def waste(trace: str, policies: list[str], seed: int) -> None:
    """Where the free GPU is when demand reaches 100% of capacity (free = failed demand then).

    Each free GPU's milli is put in one class: ``small`` (no typical shared share fits it),
    ``starved`` (a share fits, but the node lacks CPU or memory for every typical kind that
    fits), ``usable``. The reference is the shared pods that arrived by then, packed offline
    by first-fit decreasing (``ffd``), and the part of it no packing avoids: every pod
    whose share leaves less room than the smallest share on its GPU strands that room
    (``share floor``), less what the smallest pods can fill."""
    import numpy as np

    from plugins.base import Context
    from scheduler.engine import place_pod
    from scheduler.snapshot import Snapshot
    from simulations.fillup import arrival_order, engine_for, shape_of, typical_mix

    arrays = openb_arrays(bundled_text(BUNDLED_NODES), BUNDLED_NODES)
    pods, name = read_pod_file(trace)
    cap = int(arrays.gpu_count.sum()) * 1000
    mix = typical_mix(pods)
    kinds = [k for k, _ in mix.typical if k.gpus >= 1]
    mem = {k: mix.mean_memory_mib(k) for k in kinds}
    shares = sorted({k.gpu_milli for k in kinds if k.gpu_milli < 1000})
    print(f"trace {name}, seed {seed}: GPU left free at 100% arrived, in GPUs (capacity {cap // 1000})")
    print("| policy | free = failed | small | starved | usable | shared pods placed | ffd waste | share floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for policy in policies:
        workload_seed, placement_seed = np.random.SeedSequence(seed).spawn(2)
        order = arrival_order(pods, cap, np.random.default_rng(workload_seed), 1.3)
        engine = engine_for(policy, seed)
        ctx = Context(mix=mix, rng=np.random.default_rng(placement_seed))
        snap = Snapshot.empty(arrays)
        arrived, placed_shares = 0, []
        for pod in order:
            arrived += pod.gpu_milli_total
            if arrived > cap:
                break
            shape = shape_of(pod)
            choice, _ = place_pod(engine, snap, shape, ctx)
            if choice is not None:
                snap.apply(choice[0], choice[1], shape.gpu_milli, shape.cpu_milli, shape.memory_mib,
                           extended=shape.extended)
                if pod.is_shared:
                    placed_shares.append(pod.gpu_milli)
        cls = {"small": 0, "starved": 0, "usable": 0}
        for n in range(arrays.n_nodes):
            model = arrays.models[arrays.model_id[n]]
            for f in snap.gpu_free[n, : arrays.gpu_count[n]]:
                if f <= 0:
                    continue
                fitting = [k for k in kinds if k.gpu_milli <= f and (not k.models or model in k.models)]
                if not [k for k in fitting if k.gpu_milli < 1000] and f < 1000:
                    cls["small"] += f
                elif any(k.cpu_milli <= snap.free_cpu[n] and mem[k] <= snap.free_mem[n] for k in fitting):
                    cls["usable"] += f
                else:
                    cls["starved"] += f
        bins: list[int] = []
        for share in sorted(placed_shares, reverse=True):
            for i, room in enumerate(bins):
                if room >= share:
                    bins[i] -= share
                    break
            else:
                bins.append(1000 - share)
        smallest = shares[0] if shares else 0
        lonely = [s for s in placed_shares if 1000 - s < smallest * 2 and s > 500]
        fill = sum(s for s in placed_shares if s <= 1000 - max(lonely, default=1000))
        floor = max(0, sum(1000 - s for s in lonely) - fill)
        free = int(np.maximum(snap.gpu_free, 0).sum())
        print(f"| {policy} | {free / 1000:.1f} | {cls['small'] / 1000:.1f} | {cls['starved'] / 1000:.1f} | "
              f"{cls['usable'] / 1000:.1f} | {len(placed_shares)} | {sum(bins) / 1000:.1f} | {floor / 1000:.1f} |",
              flush=True)


def bound(trace: str, seeds: list[int]) -> None:
    """The least GPU any policy can leave free at 100% arrived (``simulations.bound``), per seed."""
    import numpy as np

    from simulations.bound import bound_for_seed

    arrays = openb_arrays(bundled_text(BUNDLED_NODES), BUNDLED_NODES)
    pods, name = read_pod_file(trace)
    gpus = int(arrays.gpu_count.sum())
    print(machine())
    print(f"trace {name}: least GPU left free at 100% arrived (relaxed: no nodes, CPU, memory or models), "
          f"in GPUs of {gpus}")
    print("| seed | arrived GPUs | shared pods | whole GPUs | free, any policy | free, all shared placed | status |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    lows, alls = [], []
    for seed in seeds:
        b = bound_for_seed(pods, gpus, seed)
        lows.append(b.any_pct * gpus / 100)
        alls.append(b.all_shared_placed_pct * gpus / 100)
        print(f"| {seed} | {b.arrived_gpus:.1f} | {b.shared_pods} | {b.whole_gpus} | {lows[-1]:.1f} | "
              f"{alls[-1]:.1f} | {b.status} |", flush=True)
    print(f"| mean | | | | {np.mean(lows):.1f} ({100 * np.mean(lows) / gpus:.2f}%) | "
          f"{np.mean(alls):.1f} ({100 * np.mean(alls) / gpus:.2f}%) | |")


def first_failures(trace: str, seeds: list[int]) -> None:
    """How early each pod kind is first turned away, and the unallocated curve around it, for
    FGD, toposched, and toposched without protection levels (plugin arg ``protect: false``)."""
    import numpy as np

    from scheduler.engine import PlacementConfig, PluginConfig

    arrays = openb_arrays(bundled_text(BUNDLED_NODES), BUNDLED_NODES)
    pods, name = read_pod_file(trace)
    by_name = {p.name: p for p in pods}
    cap = int(arrays.gpu_count.sum()) * 1000
    configs = {"FGD": None, "toposched": None,
               "toposched, no protection": [PluginConfig(name="fragmentation", weight=10.0, args={"protect": False})]}
    points = (80, 85, 90, 95, 100)
    print(machine())
    print(f"trace {name}, seeds {seeds[0]}-{seeds[-1]}: arrived demand (% of capacity) at the first failure of "
          f"each kind (mean, min over seeds; '-' = never before 130%); unallocated GPU % at {points}")
    kinds = ("1-gpu", "2-gpu", "4-gpu", "8-gpu", "shared-gpu", "any +model")
    print("| policy | " + " | ".join(f"first {k} fail" for k in kinds) + " | "
          + " | ".join(f"@{p}%" for p in points) + " | CPU s/run |")
    print("|---|" + "---:|" * (len(kinds) + len(points) + 1))
    for label, plugins in configs.items():
        policy = "FGD" if label == "FGD" else "toposched"
        first: dict[str, list[float]] = {}
        curve: dict[int, list[float]] = {p: [] for p in points}
        cpu = 0.0
        for seed in seeds:
            config = None if plugins is None else PlacementConfig(plugins=plugins, tie_break="ranked", seed=seed)
            r = run_fillup(arrays, pods, policy, seed, trace=name, config=config)
            cpu += r.cpu_s
            for kind, milli in r.first_failure.items():
                if not kind.endswith("+model"):
                    first.setdefault(kind, []).append(100.0 * milli / cap)
            # pods that accept only some models: the first one turned away whose exact kind had
            # been placed before (kinds no node can ever take fail from the start and say nothing)
            placed_kinds: set = set()
            for i in range(1, len(r.pods)):
                pod = by_name[r.pods[i].split("-clone-")[0]]
                if not pod.gpu_spec or not pod.num_gpu:
                    continue
                key = (pod.cpu_milli, pod.num_gpu, pod.gpu_milli, pod.gpu_spec)
                if r.placed[i]:
                    placed_kinds.add(key)
                elif key in placed_kinds:
                    first.setdefault("any +model", []).append(100.0 * r.arrived_milli[i] / cap)
                    break
            b = r.binned()["unallocated_gpu_pct"]
            for p in points:
                curve[p].append(b[p])
        cells = [f"{np.mean(first[k]):.1f} ({min(first[k]):.1f})" if k in first else "-" for k in kinds]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(f"{np.mean(curve[p]):.2f}" for p in points)
              + f" | {cpu / len(seeds):.2f} |", flush=True)


def variants(trace: str, names: list[str], seeds: list[int], variant_seed: int, policies: list[str]) -> None:
    """FGD against toposched on what-if variants of ``trace`` (``simulations.variants``): the
    policy is checked beyond the four development files."""
    import numpy as np

    from models.readers.openb import read_node_file
    from simulations.variants import describe, make_variant

    arrays = openb_arrays(bundled_text(BUNDLED_NODES), BUNDLED_NODES)
    pods, name = read_pod_file(trace)
    nodes, _ = read_node_file(None)
    print(machine())
    print(f"variants of {name} (variant seed {variant_seed}), seeds {seeds[0]}-{seeds[-1]}: mean unallocated GPU % "
          f"at 100% arrived (sd over seeds)")
    print("| variant | pods | shared % of GPU | multi-GPU % of GPU | GPU pods with models % | CPU-only % of pods | "
          + " | ".join(f"{p} @100%" for p in policies) + f" | {policies[-1]} / {policies[0]} | CPU s/run |")
    print("|---|" + "---:|" * (5 + len(policies) + 2))
    for v in names:
        vp = make_variant(pods, v, variant_seed, nodes)
        d = describe(vp)
        means, cpu, runs = [], 0.0, 0
        cells = []
        for policy in policies:
            vals = []
            for seed in seeds:
                r = run_fillup(arrays, vp, policy, seed, trace=f"{name}+{v}")
                vals.append(r.binned()["unallocated_gpu_pct"][100])
                cpu += r.cpu_s
                runs += 1
            means.append(float(np.mean(vals)))
            cells.append(f"{means[-1]:.2f} ({np.std(vals, ddof=1) if len(vals) > 1 else 0.0:.2f})")
        ratio = means[-1] / means[0] if means[0] else float("nan")
        print(f"| {v} | {int(d['pods'])} | {d['gpushare_pct']:.1f} | {d['multigpu_pct']:.1f} | {d['gpuspec_pct']:.1f} | "
              f"{d['cpu_pct']:.1f} | " + " | ".join(cells) + f" | {ratio:.3f} | {cpu / runs:.2f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default="default", help="pod list CSV or 'default' (default: %(default)s)")
    ap.add_argument("--policy", default="all", help="comma separated policies, or 'all' (default: %(default)s)")
    ap.add_argument("--seeds", default="42", help="e.g. 42 or 42-51 (default: %(default)s)")
    ap.add_argument("--sweep", action="store_true", help="6 baselines x seeds 42-51 on --trace")
    ap.add_argument("--fidelity", nargs="+", type=Path, metavar="DIR", help="tabulate summary.json files")
    ap.add_argument("--waste", action="store_true", help="where the free GPU is at 100%% arrived (first seed)")
    ap.add_argument("--bound", action="store_true",
                    help="the least GPU any policy can leave free at 100%% arrived (relaxed, per seed)")
    ap.add_argument("--first-failures", action="store_true",
                    help="first failure per pod kind: FGD, toposched, toposched without protection levels")
    ap.add_argument("--variants", metavar="NAMES",
                    help="FGD and toposched on what-if variants of --trace, e.g. gpushare60,multigpu50,cpu250")
    ap.add_argument("--variant-seed", type=int, default=0, help="seed of the variants' draws (default: %(default)s)")
    args = ap.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    if args.bound:
        bound(args.trace, seeds)
        return 0
    if args.fidelity:
        return fidelity(args.fidelity)
    if args.variants:
        from scheduler.cli_simulate import parse_policies
        from simulations.variants import parse_variant

        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        try:  # a typo in the last name is said before hours of runs, not after
            for v in names:
                parse_variant(v)
            policies = ["FGD", "toposched"] if args.policy == "all" else parse_policies(args.policy)
            if args.variant_seed < 0:
                raise SpecError(f"variant seed {args.variant_seed} is negative", source="--variant-seed")
        except SpecError as exc:
            ap.error(str(exc))
        variants(args.trace, names, seeds, args.variant_seed, policies)
        return 0
    if args.first_failures:
        first_failures(args.trace, seeds)
        return 0
    if args.waste:
        policies = ["FGD", "toposched"] if args.policy == "all" else args.policy.split(",")
        waste(args.trace, policies, int(args.seeds.split("-")[0]))
        return 0
    if args.sweep:
        t0 = time.perf_counter()
        speed(args.trace, list(BASELINES), list(range(42, 52)))
        print(f"sweep wall time {time.perf_counter() - t0:.0f} s")
        return 0
    policies = list(POLICIES) if args.policy == "all" else args.policy.split(",")
    speed(args.trace, policies, seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
