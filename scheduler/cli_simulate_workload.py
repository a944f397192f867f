"""``toposched simulate workload``: the time-based simulator on a cluster and a workload file.

    toposched simulate workload --cluster superpod-4su --workload examples/workload-superpod.yaml \\
        --hours 24 --warmup 4 --policy all --seed 1 --out out/superpod

Generates the workload once from the file and the seed, runs every policy on it (same
arrivals, durations and node failures), shows a progress bar on stderr, prints a summary
table and writes ``summary.json``, ``jobs_<policy>.csv`` and PNG plots into ``--out``.
``scheduler.cli_simulate`` registers this as its ``workload`` trace kind.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from models.errors import SpecError

KIND = "workload"


def add_workload_parser(kinds: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``workload`` under ``toposched simulate``."""
    w = kinds.add_parser(KIND, help="time-based simulation: training gangs, inference, node failures",
                         description="Simulate hours of arrivals, run times, departures and node failures on a "
                                     "cluster; compare policies on GPU utilisation, start-up wait, JCT, "
                                     "communication cost and repair.")
    w.add_argument("--cluster", required=True, help="cluster preset name (e.g. superpod-4su) or spec file")
    w.add_argument("--workload", required=True, help="workload file (YAML/JSON), e.g. examples/workload-superpod.yaml")
    w.add_argument("--hours", type=float, default=24.0, help="simulated hours (default: %(default)s)")
    w.add_argument("--warmup", type=float, default=0.0,
                   help="hours left out of the metrics at the start, while the cluster fills (default: %(default)s)")
    w.add_argument("--policy", default="all",
                   help="comma list of default, volcano, topo-greedy, toposched, or 'all' (default: %(default)s)")
    w.add_argument("--seed", type=int, default=0, help="seed of the workload and of every run (default: %(default)s)")
    w.add_argument("--gang-solver", choices=("greedy", "cpsat"),
                   help="toposched's gang solver: greedy tree descent, or CP-SAT warm-started from it (default: greedy)")
    w.add_argument("--gang-time-limit", type=float, default=0.2,
                   help="CP-SAT time limit per gang, seconds (default: %(default)s)")
    w.add_argument("--preemption", action="store_true",
                   help="every policy preempts: a unit that does not fit evicts lower-priority jobs and replicas")
    w.add_argument("--preemption-grace", type=float, default=0.0, metavar="SECONDS",
                   help="with --preemption: victims hold their resources this long after the eviction "
                        "(terminationGracePeriodSeconds) and the preemptor waits for them (default: %(default)s)")
    w.add_argument("--out", default="out/workload", help="output folder (default: %(default)s)")
    w.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    return w


def run_workload(args: argparse.Namespace) -> int:
    """Run the simulation the arguments describe; 0 on success."""
    from models.cluster import load_cluster
    from models.topology import build_arrays
    from simulations.timesim import SimConfig, TimeSim, resolve_policies
    from simulations.timesim_report import preemption_table, table, write_report
    from simulations.workload import check_against, generate, load_workload

    if not 0 < args.hours <= 24 * 365:
        raise SpecError(f"hours {args.hours} out of range", source="--hours", fix="use a value in (0, 8760]")
    if not 0 <= args.warmup < args.hours:
        raise SpecError(f"warm-up {args.warmup} h must be below --hours {args.hours}", source="--warmup")
    if not (math.isfinite(args.gang_time_limit) and args.gang_time_limit > 0):
        raise SpecError("must be a positive number of seconds", source="--gang-time-limit", value=args.gang_time_limit)
    if args.seed < 0:
        raise SpecError("must be an integer >= 0", source="--seed", value=args.seed)
    if not (math.isfinite(args.preemption_grace) and args.preemption_grace >= 0):
        raise SpecError("must be a number of seconds >= 0", source="--preemption-grace", value=args.preemption_grace)
    if args.preemption_grace and not args.preemption:
        raise SpecError("only applies with --preemption", source="--preemption-grace", value=args.preemption_grace,
                        fix="add --preemption, or leave --preemption-grace out")
    policies = resolve_policies(args.policy)
    cluster = load_cluster(args.cluster)
    arrays = build_arrays(cluster)
    if arrays.total_gpus == 0:
        raise SpecError("the cluster has no GPUs", source=args.cluster)
    wl = load_workload(args.workload)
    check_against(wl, arrays, args.workload)
    cfg = SimConfig(hours=args.hours, seed=args.seed, warmup_hours=args.warmup, gang_solver=args.gang_solver,
                    gang_time_limit_s=args.gang_time_limit, preemption=args.preemption,
                    preemption_grace_s=args.preemption_grace)
    gen = generate(wl, arrays, cfg.hours, cfg.seed)
    from scheduler.cli_simulate import prepare_out

    out = prepare_out(args.out)

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(policies) * args.hours, unit="h", file=sys.stderr, dynamic_ncols=True,
                   bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} simulated h [{elapsed}<{remaining}]")
    runs = []
    for pol in policies:
        done = [0.0]

        def progress(t_s: float, done: list[float] = done) -> None:
            h = min(t_s / 3600.0, args.hours)
            if bar is not None and h > done[0]:
                bar.update(h - done[0])
                done[0] = h

        if bar is not None:
            bar.set_description(pol.name)
        runs.append(TimeSim(arrays, gen, wl, pol, cfg, progress if bar is not None else None).run())
        progress(args.hours * 3600.0)
    if bar is not None:
        bar.n = bar.total
        bar.close()
    meta = {
        "cluster": args.cluster, "nodes": arrays.n_nodes, "capacity_gpus": arrays.total_gpus,
        "workload": wl.name, "workload_file": args.workload, "hours": args.hours, "warmup_hours": args.warmup,
        "seed": args.seed, "gang_solver": args.gang_solver, "command": _command(args), "generated": gen.info,
        "policy_descriptions": {p.name: p.description for p in policies},
    }
    if args.preemption:
        meta["preemption"] = True
        meta["preemption_grace_s"] = args.preemption_grace
    doc = write_report(runs, out, meta, plots=not args.no_plots)
    print(f"{wl.name} on {args.cluster}: {gen.info.get('jobs', 0)} jobs, {gen.info.get('services', 0)} services, "
          f"{gen.info.get('node_failures', 0)} node failures over {args.hours:g} h (warm-up {args.warmup:g} h), "
          f"seed {args.seed}")
    print(table(list(doc["policies"].values())))
    extra = preemption_table(list(doc["policies"].values()))
    if extra:
        print("\npreemption:\n" + extra)
    print(f"wrote {out / 'summary.json'}" + ("" if args.no_plots else " and plots"))
    return 0


def _command(args: argparse.Namespace) -> str:
    parts = ["toposched", "simulate", "workload", "--cluster", args.cluster, "--workload", args.workload,
             "--hours", f"{args.hours:g}", "--warmup", f"{args.warmup:g}", "--policy", args.policy,
             "--seed", str(args.seed), "--out", args.out]
    if args.gang_solver:
        parts += ["--gang-solver", args.gang_solver, "--gang-time-limit", f"{args.gang_time_limit:g}"]
    if args.preemption:
        parts.append("--preemption")
        if args.preemption_grace:
            parts += ["--preemption-grace", f"{args.preemption_grace:g}"]
    return shlex.join(parts)
