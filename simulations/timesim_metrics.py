"""Results of a time-based run: raw records and the summary the report prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Segment:
    """Useful GPU work: ``gpus x rate`` from ``t0`` to ``t1`` (ideal GPU-seconds per second)."""

    t0: float
    t1: float
    gpu_rate: float


@dataclass
class RunResult:
    """One (workload, policy, seed) run: raw records and the summary."""

    policy: str
    seed: int
    hours: float
    warmup_hours: float
    capacity_gpus: int
    timeline: list[tuple[float, int, int]]  # (t, allocated GPUs, healthy GPUs) after each change
    segments: list[Segment]
    lost_gpu_s: list[tuple[float, float, float]]  # (t, ideal GPU-seconds of work lost, done since)
    jobs: list[dict]
    placements: list[dict]  # per (re)start of a multi-GPU job: its comm cost
    replica_repairs: list[tuple[float, float]]  # (repaired at, seconds it took)
    counters: dict[str, int]
    wall_s: float
    info: dict = field(default_factory=dict)
    # with preemption on: {"plans": N, "events": [{"t", "unit", "priority", "jobs", "replicas", "pods"}],
    # "lost_gpu_s": [(t, GPU-s)], "replica_waits": [(t bound, wait s)]}; None when off
    preemption: dict | None = None

    def summary(self) -> dict[str, Any]:
        """The numbers the report prints (times in seconds, shares in 0..1)."""
        w0, w1 = self.warmup_hours * 3600.0, self.hours * 3600.0
        span = max(w1 - w0, 1e-9)
        alloc_gpu_s = _integrate(self.timeline, w0, w1, 1)
        useful = sum(max(0.0, min(s.t1, w1) - max(s.t0, w0)) * s.gpu_rate for s in self.segments)
        useful -= sum(_in_window(loss, w0, w1) for loss in self.lost_gpu_s)
        cap = self.capacity_gpus * span
        measured = [j for j in self.jobs if j["arrival_s"] >= w0]
        started = [j for j in measured if j["startup_wait_s"] is not None]
        waits = np.array([j["startup_wait_s"] for j in started], dtype=float)
        censored = np.array([j["startup_wait_s"] if j["startup_wait_s"] is not None else w1 - j["arrival_s"]
                             for j in measured], dtype=float)
        dist = [j for j in started if j["pods"] > 1]
        dwaits = np.array([j["startup_wait_s"] for j in dist], dtype=float)
        done = [j for j in measured if j["jct_s"] is not None]
        jct = np.array([j["jct_s"] for j in done], dtype=float)
        stretch = np.array([j["jct_s"] / j["duration_s"] for j in done], dtype=float)
        multi = [p for p in self.placements if w0 <= p["t"] <= w1]
        repair = np.array([r for j in measured for r in j["repair_times_s"]], dtype=float)
        excess = np.array([p["excess_tiers"] for p in multi], dtype=float)
        slow = np.array([p["slowdown"] for p in multi], dtype=float)
        bw = np.array([p["bottleneck_gbps"] for p in multi if p["bottleneck_gbps"] is not None], dtype=float)
        crossings: dict[str, int] = {}
        for p in multi:
            for k, v in p["crossings"].items():
                crossings[k] = crossings.get(k, 0) + v
        out = {
            "policy": self.policy,
            "seed": self.seed,
            "gpu_allocation": alloc_gpu_s / cap,
            "gpu_utilisation": useful / cap,
            "jobs_arrived": len(measured),
            "jobs_started": len(started),
            "jobs_completed": len(done),
            "jobs_never_started": len(measured) - len(started),
            "startup_wait_s": _stats(waits),
            "startup_wait_censored_mean_s": float(censored.mean()) if len(censored) else None,
            "startup_wait_distributed_s": _stats(dwaits),
            "jct_s": _stats(jct),
            "jct_over_duration": _stats(stretch),
            "placements": len(multi),
            "excess_tiers_mean": float(excess.mean()) if len(excess) else None,
            "excess_tiers_hist": {int(k): int(v) for k, v in zip(*np.unique(excess, return_counts=True), strict=True)},
            "bottleneck_gbps_mean": float(bw.mean()) if len(bw) else None,
            "slowdown_mean": float(slow.mean()) if len(slow) else None,
            "crossings": crossings,
            # like every job metric: over the jobs that arrived in the measured window
            "jobs_interrupted": sum(1 for j in measured if j["interruptions"]),
            "interruptions": sum(j["interruptions"] for j in measured),
            "time_to_repair_s": _stats(repair),
            "replica_repair_s": _stats(np.array([d for t, d in self.replica_repairs if w0 <= t <= w1], dtype=float)),
            "counters": dict(self.counters),
            "wall_s": self.wall_s,
        }
        if self.preemption is not None:
            out["preemption"] = self._preemption_summary(w0, w1, measured)
        return out

    def _preemption_summary(self, w0: float, w1: float, measured: list[dict]) -> dict[str, Any]:
        """Evictions in the window, the work they cost, and start-up waits by priority."""
        pre = self.preemption
        assert pre is not None
        events = [e for e in pre["events"] if w0 <= e["t"] <= w1]
        jobs = [name for e in events for name in e["jobs"]]
        waits: dict[int, list[float]] = {}
        for j in measured:
            if j["startup_wait_s"] is not None:
                waits.setdefault(j["priority"], []).append(j["startup_wait_s"])
        return {
            "preemptions": len(events),
            "plans": pre["plans"],
            "job_evictions": len(jobs),
            "jobs_preempted": len(set(jobs)),
            "replicas_preempted": sum(e["replicas"] for e in events),
            "pods_preempted": sum(e["pods"] for e in events),
            "pdb_violations": sum(e["pdb_violations"] for e in events),
            "lost_gpu_hours": sum(_in_window(loss, w0, w1) for loss in pre["lost_gpu_s"]) / 3600.0,
            "startup_wait_by_priority_s": {str(p): _stats(np.array(waits[p], dtype=float))
                                           for p in sorted(waits, reverse=True)},
            "replica_wait_s": _stats(np.array([w for t, w in pre["replica_waits"] if w0 <= t <= w1], dtype=float)),
        }


def _stats(x: np.ndarray) -> dict[str, float | int | None]:
    if not len(x):
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    return {"n": int(len(x)), "mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
            "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}


def _integrate(timeline: list[tuple[float, int, int]], w0: float, w1: float, col: int) -> float:
    """Integral of a step function column over [w0, w1]."""
    total = 0.0
    for i, row in enumerate(timeline):
        t = row[0]
        t_next = timeline[i + 1][0] if i + 1 < len(timeline) else w1
        lo, hi = max(t, w0), min(t_next, w1)
        if hi > lo:
            total += (hi - lo) * row[col]
    return total


def _in_window(loss: tuple[float, ...], w0: float, w1: float) -> float:
    """The part of a loss ``(t, GPU-s, since)`` done inside ``[w0, w1]`` (the work was done at an
    even rate between ``since`` and ``t``; an older two-element loss counts whole at ``t``)."""
    t, gpu_s = loss[0], loss[1]
    since = loss[2] if len(loss) > 2 else t
    if t <= since:
        return gpu_s if w0 <= t <= w1 else 0.0
    return gpu_s * max(0.0, min(t, w1) - max(since, w0)) / (t - since)
