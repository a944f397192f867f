"""Reports of time-based runs: a text table, ``summary.json``, per-job CSVs and PNG plots.

``summary.json``::

    {"cluster": "superpod-4su", "workload": "...", "hours": 24, "warmup_hours": 4, "seed": 1,
     "command": "toposched simulate workload ...", "generated": {...how the workload was drawn...},
     "policies": {"toposched": {"gpu_allocation": 0.93, "gpu_utilisation": 0.91,
                                "startup_wait_s": {"n": ..., "mean": ..., "p50": ..., "p90": ...}, ...}}}

Plots: ``allocation.png`` (GPU allocation over time), ``startup_wait_cdf.png``,
``jct_cdf.png`` and ``tier_crossings.png`` (placements by tiers beyond the most compact).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simulations.timesim_metrics import RunResult

PLOTS = ("allocation.png", "startup_wait_cdf.png", "jct_cdf.png", "tier_crossings.png")


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 3600:
        return f"{v / 3600:.1f}h"
    return f"{v:.0f}s" if v >= 10 else f"{v:.1f}s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """One line per policy: utilisation, waits, JCT, communication, failures."""
    head = ["policy", "alloc", "util", "wait mean", "wait p90", "dist. wait", "not started", "JCT p50", "JCT/dur",
            "slowdown", "excess tiers", "interrupted", "repair mean", "rdv t/o"]
    rows = [head]
    for s in summaries:
        rows.append([
            s["policy"], _pct(s["gpu_allocation"]), _pct(s["gpu_utilisation"]), _fmt_s(s["startup_wait_s"]["mean"]),
            _fmt_s(s["startup_wait_s"]["p90"]), _fmt_s(s["startup_wait_distributed_s"]["mean"]),
            f"{s['jobs_never_started']}/{s['jobs_arrived']}", _fmt_s(s["jct_s"]["p50"]),
            "-" if s["jct_over_duration"]["mean"] is None else f"{s['jct_over_duration']['mean']:.2f}",
            "-" if s["slowdown_mean"] is None else f"{s['slowdown_mean']:.3f}",
            "-" if s["excess_tiers_mean"] is None else f"{s['excess_tiers_mean']:.2f}",
            str(s["jobs_interrupted"]), _fmt_s(s["time_to_repair_s"]["mean"]),
            str(s["counters"].get("rendezvous_timeouts", 0)),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def preemption_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One line per policy run with preemption: evictions, work lost, waits of the highest priority
    ("" when no run had preemption on)."""
    runs = [s for s in summaries if "preemption" in s]
    if not runs:
        return ""
    head = ["policy", "preemptions", "job evictions", "jobs hit", "replicas evicted", "PDB violations",
            "lost GPU-h", "top prio", "its wait mean", "its wait p90", "replica wait p90"]
    rows = [head]
    for s in runs:
        p = s["preemption"]
        by_prio = p["startup_wait_by_priority_s"]
        top = next(iter(by_prio), None)  # highest priority first
        w = by_prio[top] if top is not None else {"mean": None, "p90": None}
        rows.append([s["policy"], str(p["preemptions"]), str(p["job_evictions"]), str(p["jobs_preempted"]),
                     str(p["replicas_preempted"]), str(p["pdb_violations"]), f"{p['lost_gpu_hours']:.1f}", "-" if top is None else top,
                     _fmt_s(w["mean"]), _fmt_s(w["p90"]), _fmt_s(p["replica_wait_s"]["p90"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_report(runs: Sequence[RunResult], out: Path, meta: dict[str, Any], plots: bool = True) -> dict[str, Any]:
    """``summary.json``, ``jobs_<policy>.csv`` and the plots into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = [r.summary() for r in runs]
    doc = {**meta, "policies": {s["policy"]: s for s in summaries}}
    (out / "summary.json").write_text(json.dumps(doc, indent=2, sort_keys=False, default=_json_default) + "\n")
    for r in runs:
        write_jobs_csv(r, out / f"jobs_{r.policy}.csv")
    if plots:
        write_plots(runs, out)
    return doc


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_jobs_csv(run: RunResult, path: Path) -> None:
    """One row per job: arrival, size, start-up wait, JCT, interruptions (and with preemption on:
    priority, times preempted)."""
    cols = ["name", "arrival_s", "gpus", "pods", "duration_s", "startup_wait_s", "jct_s", "state", "interruptions",
            "restarts", "rendezvous_timeouts"]
    if run.preemption is not None:
        cols += ["priority", "preemptions"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for j in run.jobs:
            w.writerow(["" if j[c] is None else (round(j[c], 3) if isinstance(j[c], float) else j[c]) for c in cols])


def allocation_curve(run: RunResult, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean GPU allocation share over consecutive windows of ``step_s`` (hours, share)."""
    horizon = run.hours * 3600.0
    edges = np.arange(0.0, horizon + step_s, step_s)
    edges[-1] = min(edges[-1], horizon)
    t = np.array([row[0] for row in run.timeline] + [horizon])
    v = np.array([row[1] for row in run.timeline], dtype=float)
    cum = np.concatenate([[0.0], np.cumsum(v * np.diff(t))])

    def area(x: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(v) - 1)
        return cum[i] + v[i] * (x - t[i])

    a = area(edges)
    widths = np.diff(edges)
    share = np.divide(np.diff(a), widths * run.capacity_gpus, out=np.zeros(len(widths)), where=widths > 0)
    return edges[1:] / 3600.0, share


def _cdf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(np.asarray(values, dtype=float))
    return x, np.arange(1, len(x) + 1) / max(len(x), 1)


def write_plots(runs: Sequence[RunResult], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(runs[0].hours * 3600.0 / 288, 60.0) if runs else 300.0
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in runs:
        x, y = allocation_curve(r, step)
        ax.plot(x, 100 * y, label=r.policy, linewidth=1.2)
    if runs and runs[0].warmup_hours:
        ax.axvspan(0, runs[0].warmup_hours, color="0.9", label="warm-up")
    ax.set(xlabel="hours", ylabel="GPUs allocated (%)", ylim=(0, 105), title="GPU allocation over time")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "allocation.png", dpi=120)
    plt.close(fig)

    for name, key, title in (("startup_wait_cdf.png", "startup_wait_s", "Gang start-up wait (started jobs)"),
                             ("jct_cdf.png", "jct_s", "Job completion time (completed jobs)")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            w0 = r.warmup_hours * 3600.0
            vals = [j[key] for j in r.jobs if j[key] is not None and j["arrival_s"] >= w0]
            if vals:
                x, y = _cdf(np.maximum(vals, 1e-1))
                ax.step(x, y, where="post", label=r.policy)
        ax.set(xscale="log", xlabel="seconds (log)", ylabel="share of jobs", title=title, ylim=(0, 1.01))
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    hists = [r.summary()["excess_tiers_hist"] for r in runs]
    keys = sorted({k for h in hists for k in h}) or [0]
    width = 0.8 / max(len(runs), 1)
    for i, (r, h) in enumerate(zip(runs, hists, strict=True)):
        total = max(sum(h.values()), 1)
        ax.bar(np.arange(len(keys)) + i * width, [100 * h.get(k, 0) / total for k in keys], width, label=r.policy)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [str(k) for k in keys])
    ax.set(xlabel="tiers crossed beyond the most compact placement", ylabel="placements (%)",
           title="Tier crossings of multi-GPU placements")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "tier_crossings.png", dpi=120)
    plt.close(fig)
