"""``toposched simulate openb``: the FGD fill-up experiment on an openb trace.

    toposched simulate openb --pods default --policy BestFit,FGD,toposched --seeds 42 --out out/quickstart

Runs every (policy, seed), shows a progress bar on stderr, prints the summary table and
writes ``summary.json``, one CSV per run and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.errors import SpecError

NAME = "simulate"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="replay a trace offline and compare placement policies",
                       description="Offline placement simulation on real traces.")
    kinds = p.add_subparsers(dest="trace_kind", metavar="TRACE")
    o = kinds.add_parser("openb", help="the FGD fill-up experiment on an Alibaba openb pod list",
                         description="Offer the pods of an openb pod list one by one (seeded shuffle, inflated to "
                                     "--inflate x the cluster's GPU capacity) to each policy; report unallocated "
                                     "GPU and fragmentation by arrived demand.")
    o.add_argument("--pods", default="default",
                   help="pod list CSV, or 'default' for the bundled openb_pod_list_default (default: %(default)s)")
    o.add_argument("--nodes", help="node list CSV (default: the bundled openb_node_list_gpu_node.csv)")
    o.add_argument("--variant",
                   help="derive a what-if variant of the pod list first: gpushareP, multigpuP, gpuspecP (P in %%) "
                        "or cpuT (T in tenths of a %%, cpu050 = 5.0%%); rules in docs/simulator.md")
    o.add_argument("--variant-seed", type=int, default=0,
                   help="seed of the variant's random draws (default: %(default)s); every run sees the same list")
    o.add_argument("--policy", default="all",
                   help="policies, comma separated, or 'all': Random, DotProd, GpuClustering, GpuPacking, BestFit, "
                        "FGD, toposched (default: %(default)s)")
    o.add_argument("--seeds", default="42-51", help="seeds: '42-51', '42,43' or '42' (default: %(default)s)")
    o.add_argument("--inflate", type=float, default=1.3,
                   help="total GPU request as a multiple of GPU capacity (default: %(default)s)")
    o.add_argument("--out", default="out/simulate", help="output folder (default: %(default)s)")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    o.add_argument("--bound", action="store_true",
                   help="also compute, per seed, the least unallocated GPU %% any placement can reach at 100%% "
                        "arrived (a relaxation solved exactly; docs/fidelity.md)")
    from scheduler.cli_simulate_workload import add_workload_parser  # time-based simulator (its own module)

    add_workload_parser(kinds)


def prepare_out(text: str) -> Path:
    """The ``--out`` folder, created now: a bad one is refused before any run, not after all of them."""
    out = Path(text)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"cannot write the report there: {exc.strerror or exc}", source="--out",
                        value=str(out), fix="name a folder (it is created when missing)") from None
    return out


MAX_SEEDS = 10_000  # runs of several seconds each: far more than anyone waits for


def parse_seeds(text: str) -> list[int]:
    """``42-51`` -> [42..51]; ``42,45`` -> [42, 45]; ``42`` -> [42]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                if b - a >= MAX_SEEDS:
                    raise SpecError(f"more than {MAX_SEEDS} seeds in {text!r}", source="--seeds",
                                    fix="write e.g. 42-51")
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise SpecError(f"bad seed list {text!r}", source="--seeds", fix="write e.g. 42-51, 42,43 or 42") from None
        if len(seeds) > MAX_SEEDS:
            raise SpecError(f"more than {MAX_SEEDS} seeds in {text!r}", source="--seeds", fix="write e.g. 42-51")
    if not seeds:
        raise SpecError("no seeds given", source="--seeds", fix="write e.g. 42-51")
    if min(seeds) < 0:
        raise SpecError(f"seed {min(seeds)} is negative", source="--seeds", fix="seeds are integers >= 0, e.g. 42-51")
    return list(dict.fromkeys(seeds))


def parse_policies(text: str) -> list[str]:
    from simulations.fillup import POLICIES

    if text.strip().lower() == "all":
        return list(POLICIES)
    known = {p.lower(): p for p in POLICIES}
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part.lower() not in known:
            raise SpecError(f"unknown policy {part!r}", source="--policy", fix=f"use 'all' or any of {', '.join(POLICIES)}")
        out.append(known[part.lower()])
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "trace_kind", None) == "workload":
        from scheduler.cli_simulate_workload import run_workload

        return run_workload(args)
    if getattr(args, "trace_kind", None) != "openb":
        raise SpecError("name the trace kind", source="toposched simulate", fix="run: toposched simulate openb --help")
    from models.readers.openb import BUNDLED_NODES, bundled_text, read_node_file, read_pod_file
    from simulations.fillup import openb_arrays, run_fillup, trace_digest
    from simulations.report import table, write_report

    policies = parse_policies(args.policy)
    seeds = parse_seeds(args.seeds)
    if not 0 < args.inflate <= 10:
        raise SpecError(f"inflate {args.inflate} out of range", source="--inflate", fix="use a ratio in (0, 10], e.g. 1.3")
    pods, trace = read_pod_file(args.pods)
    if not pods:
        raise SpecError("the pod list has no pods", source=args.pods)
    if args.nodes is None:
        node_text, node_source = bundled_text(BUNDLED_NODES), f"bundled {BUNDLED_NODES}"
        node_rows = None
    else:
        node_rows, _ = read_node_file(args.nodes)  # row-level errors name the file and line
        node_text, node_source = Path(args.nodes).read_text(), args.nodes
    variant = (args.variant or "").strip().lower()
    if variant:
        from simulations.variants import make_variant

        if node_rows is None:
            node_rows, _ = read_node_file(None)
        pods = make_variant(pods, variant, args.variant_seed, node_rows)
        trace = f"{trace}+{variant}"
    arrays = openb_arrays(node_text, node_source)
    if int(arrays.gpu_count.sum()) == 0:
        raise SpecError("the node list has no GPUs", source=node_source)
    if not any(p.gpu_milli_total for p in pods):
        raise SpecError("the pod list requests no GPU: a GPU fill-up has nothing to offer", source=args.pods,
                        fix="use a pod list with GPU pods" + (" or another --variant" if variant else ""))
    out = prepare_out(args.out)

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(policies) * len(seeds), unit="run", file=sys.stderr, dynamic_ncols=True,
                   bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}]", mininterval=0.5)

    done = {"runs": 0}

    def progress(i: int, n: int) -> None:
        if bar is not None and (i % 256 == 0 or i == n):
            bar.n = done["runs"] + i / n
            bar.refresh()

    runs = []
    for policy in policies:
        for seed in seeds:
            if bar is not None:
                bar.set_description(f"{policy} seed {seed}")
            runs.append(run_fillup(arrays, pods, policy, seed, trace=trace, inflate=args.inflate, progress=progress))
            done["runs"] += 1
    if bar is not None:
        bar.close()
    extra = {"pods_file": args.pods, "nodes_file": args.nodes or node_source, "nodes": arrays.n_nodes,
             "trace_pods": len(pods), "trace_digest": trace_digest(pods)}
    if variant:
        from simulations.variants import describe

        extra["variant"] = {"name": variant, "seed": args.variant_seed, **describe(pods)}
    if args.bound:
        from simulations.bound import bound_for_seed
        from simulations.report import bound_summary

        gpus = int(arrays.gpu_count.sum())
        extra["bound"] = bound_summary([bound_for_seed(pods, gpus, seed, inflate=args.inflate) for seed in seeds])
    doc = write_report(runs, out, trace, extra, plots=not args.no_plots)
    print(table(doc))
    print(f"wrote {out}/summary.json, {len(runs)} run CSVs" + ("" if args.no_plots else " and 3 plots"))
    return 0
