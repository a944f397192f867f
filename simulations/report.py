"""Reports of fill-up runs: one CSV per run, ``summary.json``, PNG plots, a text table.

``summary.json``::

    {"trace": ..., "seeds": [...], "inflate": 1.3, "nodes": ..., "capacity_gpus": ...,
     "policies": {"FGD": {"unallocated_gpu_pct": {"100": mean, "130": mean},
                          "unallocated_gpu_pct_sd": {"100": sd, "130": sd},
                          "per_seed": {"42": {"100": ..., "130": ...}},
                          "curves": {"unallocated_gpu_pct": {"0": ..., ..., "130": ...}, ...},
                          "failed_pods": ..., "failed_by_kind": {...},
                          "first_failure_arrived_pct": {"8-gpu": {"mean": ..., "min": ..., "runs": ...}},
                          "wall_s": ...}},
     "bound": {"unallocated_gpu_pct_min": {"any": mean, "all_shared_placed": mean},   # with --bound
               "per_seed": {"42": {"any": ..., "all_shared_placed": ..., ...}}}}

Means and standard deviations (sample, ddof=1) are over the seeds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simulations.fillup import RunResult

REPORT_POINTS = (100, 130)
CURVES = ("unallocated_gpu_pct", "alloc_gpu_pct", "frag_gpu_pct", "frag_ratio_pct")


def run_csv_name(run: RunResult) -> str:
    return f"{run.policy}_seed{run.seed}.csv"


def write_run_csv(run: RunResult, path: Path) -> None:
    """Every event of one run: arrival order, placement, arrived/used/fragmented/idle GPU milli."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event", "pod", "placed", "node", "arrived_gpu_milli", "used_gpu_milli", "frag_gpu_milli",
                    "idle_gpu_milli", "arrived_pct", "unallocated_gpu_pct"])
        cap = run.capacity_milli
        for i in range(len(run.pods)):
            w.writerow([i, run.pods[i], int(run.placed[i]), int(run.node[i]), int(run.arrived_milli[i]),
                        int(run.used_milli[i]), round(float(run.frag_milli[i]), 3), int(run.idle_milli[i]),
                        round(100.0 * run.arrived_milli[i] / cap, 4), round(100.0 - 100.0 * run.used_milli[i] / cap, 4)])


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd over the seeds that reached the point (None when none did)."""
    arr = np.array([v for v in values if v is not None], dtype=float)
    if not len(arr):
        return None, None
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return round(float(arr.mean()), 4), round(sd, 4)


def summarize(runs: Sequence[RunResult], trace: str, extra: dict | None = None) -> dict:
    """The ``summary.json`` document for runs of one trace (any policies, any seeds)."""
    if not runs:
        raise ValueError("no runs to summarize")
    seeds = sorted({r.seed for r in runs})
    doc: dict = {"trace": trace, "seeds": seeds, "inflate": runs[0].inflate,
                 "capacity_gpus": runs[0].capacity_milli // 1000, "policies": {}}
    if extra:
        doc.update(extra)
    by_policy: dict[str, list[RunResult]] = {}
    for r in runs:
        by_policy.setdefault(r.policy, []).append(r)
    for policy, prs in by_policy.items():
        prs = sorted(prs, key=lambda r: r.seed)
        binned = [r.binned() for r in prs]
        entry: dict = {"unallocated_gpu_pct": {}, "unallocated_gpu_pct_sd": {}, "unallocated_gpu_pct_runs": {},
                       "per_seed": {}}
        for pt in REPORT_POINTS:
            vals = [b["unallocated_gpu_pct"].get(pt) for b in binned]
            entry["unallocated_gpu_pct"][str(pt)], entry["unallocated_gpu_pct_sd"][str(pt)] = _mean_sd(vals)
            # a coarse trace may skip a point in some runs: the mean is over the runs that reached it
            entry["unallocated_gpu_pct_runs"][str(pt)] = sum(v is not None for v in vals)
        for r, b in zip(prs, binned, strict=True):
            entry["per_seed"][str(r.seed)] = {str(pt): b["unallocated_gpu_pct"].get(pt) for pt in REPORT_POINTS}
        entry["curves"] = {}
        for name in CURVES:
            points = sorted({k for b in binned for k in b[name]})
            entry["curves"][name] = {str(k): round(float(np.mean([b[name][k] for b in binned if k in b[name]])), 4)
                                     for k in points}
        kinds: dict[str, list[float]] = {}
        for r in prs:
            for kind, (count, milli) in r.failed_by_kind.items():
                acc = kinds.setdefault(kind, [0.0, 0.0])
                acc[0] += count / len(prs)
                acc[1] += milli / len(prs)
        entry["failed_pods"] = round(float(np.mean([r.n_failed for r in prs])), 2)
        entry["failed_by_kind"] = {k: {"pods": round(v[0], 2), "gpu_milli": round(v[1], 1)}
                                   for k, v in sorted(kinds.items())}
        # how early each kind is first turned away (arrived demand, % of capacity), over the
        # runs where it was turned away at all
        cap = prs[0].capacity_milli
        first: dict[str, list[float]] = {}
        for r in prs:
            for kind, milli in r.first_failure.items():
                first.setdefault(kind, []).append(100.0 * milli / cap)
        entry["first_failure_arrived_pct"] = {k: {"mean": round(float(np.mean(v)), 2), "min": round(min(v), 2),
                                                  "runs": len(v)} for k, v in sorted(first.items())}
        entry["pods"] = prs[0].n_pods
        entry["wall_s"] = round(float(np.mean([r.wall_s for r in prs])), 3)
        entry["cpu_s"] = round(float(np.mean([r.cpu_s for r in prs])), 3)
        doc["policies"][policy] = entry
    return doc


def bound_summary(bounds: Sequence[Any]) -> dict:
    """The ``bound`` entry of ``summary.json``: means over seeds and each seed's ``Bound``."""
    return {"point": 100,
            "unallocated_gpu_pct_min": {"any": round(float(np.mean([b.any_pct for b in bounds])), 3),
                                        "all_shared_placed": round(float(np.mean([b.all_shared_placed_pct
                                                                                  for b in bounds])), 3)},
            "per_seed": {str(b.seed): b.to_json() for b in bounds}}


def table(doc: dict) -> str:
    """The summary as a fixed-width text table."""
    head = f"{'policy':<14} {'unalloc@100%':>16} {'unalloc@130%':>16} {'failed pods':>12} {'cpu s/run':>10}"
    one = len(doc["seeds"]) == 1  # no spread to show
    what = "one seed" if one else "mean +- sd over seeds"
    lines = [f"trace {doc['trace']}, seeds {_seed_text(doc['seeds'])}, inflate {doc['inflate']}",
             f"unallocated GPU % of capacity ({what}), by arrived demand", head, "-" * len(head)]
    partial = False
    for policy, e in doc["policies"].items():
        u, sd = e["unallocated_gpu_pct"], e["unallocated_gpu_pct_sd"]
        runs = e.get("unallocated_gpu_pct_runs", {})
        cells = [f"{'-':>16}" if u[p] is None else f"{u[p]:>16.2f}" if one else f"{u[p]:>9.2f} +-{sd[p]:>5.2f}"
                 for p in ("100", "130")]
        for i, p in enumerate(("100", "130")):
            if u[p] is not None and runs.get(p, len(doc["seeds"])) < len(doc["seeds"]):
                cells[i] = f"{cells[i].strip() + '*':>16}"
                partial = True
        lines.append(f"{policy:<14} {cells[0]} {cells[1]} {e['failed_pods']:>12.1f} {e['cpu_s']:>10.1f}")
    if partial:
        lines.append("* over the seeds whose runs had an event at that arrived % (the trace is too coarse for "
                     "the others; unallocated_gpu_pct_runs in summary.json)")
    if "bound" in doc:
        least = doc["bound"]["unallocated_gpu_pct_min"]
        over = "" if one else ", mean over seeds"
        lines.append(f"least possible @100% (relaxed{over}): {least['any']:.2f} for any policy, "
                     f"{least['all_shared_placed']:.2f} placing every shared pod that arrives")
    return "\n".join(lines)


def _seed_text(seeds: Sequence[int]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def write_report(runs: Sequence[RunResult], out: Path, trace: str, extra: dict | None = None,
                 plots: bool = True) -> dict:
    """Write the per-run CSVs, ``summary.json`` and (unless ``plots`` is False) the PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        write_run_csv(r, out / run_csv_name(r))
    doc = summarize(runs, trace, extra)
    (out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    if plots:
        write_plots(doc, out)
    return doc


def write_plots(doc: dict, out: Path) -> list[Path]:
    """unallocated_vs_arrived.png, fragmentation_vs_arrived.png, unallocated_at_100.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    title = f"{doc['trace']} (seeds {_seed_text(doc['seeds'])}, inflate {doc['inflate']})"
    for name, ylabel, fname in (("unallocated_gpu_pct", "unallocated GPU (% of capacity)", "unallocated_vs_arrived.png"),
                                ("frag_gpu_pct", "fragmented GPU (% of capacity)", "fragmentation_vs_arrived.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        top = 0.0
        for policy, e in doc["policies"].items():
            curve = e["curves"][name]
            xs = [int(k) for k in curve]
            ax.plot(xs, [curve[str(x)] for x in xs], label=policy, linewidth=1.6)
            top = max([top] + [curve[str(x)] for x in xs if x >= 70])
        ax.set_xlabel("arrived GPU demand (% of capacity)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if name == "unallocated_gpu_pct":
            ax.set_xlim(70, 130)
            ax.set_ylim(0, max(top * 1.1, 1.0))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
        paths.append(out / fname)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(doc["policies"])
    values = [doc["policies"][p]["unallocated_gpu_pct"]["100"] for p in names]
    means = [m if m is not None else 0.0 for m in values]
    sds = [doc["policies"][p]["unallocated_gpu_pct_sd"]["100"] or 0.0 for p in names]
    bars = ax.bar(names, means, yerr=sds, capsize=4, color="#4c72b0")
    for b, m in zip(bars, values, strict=True):  # no run reached 100%: no bar, "n/a"
        ax.annotate("n/a" if m is None else f"{m:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("unallocated GPU at 100% arrived (% of capacity)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "unallocated_at_100.png", dpi=120)
    plt.close(fig)
    paths.append(out / "unallocated_at_100.png")
    return paths
