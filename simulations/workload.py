"""Workload files for the time-based simulator, and the generator calibrated from published traces.

A workload file (YAML or JSON) describes what arrives at a cluster over time::

    name: llm-mix
    training:               # generated training gangs (arrivals, sizes, durations)
      calibration: kalos    # job-size and run-time statistics of a published trace
      target_load: 0.8      # offered GPU-time / GPU capacity: sets the arrival rate
    inference:              # Deployments that scale up and down like an HPA
      services: [{name: chat, gpus_per_replica: 8, min_replicas: 2, max_replicas: 6}]
    failures: {node_mtbf_hours: 2000, repair_mean_hours: 4}
    jobs: []                # explicit jobs (a trace), on top of the generated ones
    node_failures: []       # explicit failures: {node, at_s, repair_s}

Generation, in phases (every draw from one seeded RNG, so a seed fixes the workload):

1. **Sizes.** GPUs per job are powers of two from 1 to ``max_gpus``. A share
   ``single_gpu_share`` of jobs takes one GPU (the published medians are 1 GPU, so at
   least half do); the rest follow a geometric law in log2(size), P(2^k) ~ q^k, with
   ``q`` solved so the mean matches the calibration's mean GPUs per job.
2. **Durations.** Log-normal with the calibration's median and mean
   (``sigma = sqrt(2 ln(mean / median))``), clamped to ``max_duration_s``. This is the
   run time on the most compact placement; the simulator stretches it by the
   communication model (``simulations.comm_model``).
3. **Arrivals.** Poisson; the rate makes the offered GPU-time ``target_load`` x the
   cluster's GPU capacity (or ``arrival_rate_per_hour`` when given).
4. **Shapes.** Up to a node (``gpus_per_node``): one pod with every GPU, or with
   probability ``split_share`` one pod per GPU. Beyond a node: whole-node workers of
   ``gpus_per_node`` GPUs. Jobs with more than one pod get a CPU-only launcher
   (MPIJob-style launcher + workers).
5. **Services** (inference): replicas follow a diurnal demand between ``min_replicas``
   and ``max_replicas`` with seeded noise; the simulator's HPA turns it into replicas.
6. **Failures.** Each node fails after an exponential time with mean
   ``node_mtbf_hours`` and comes back after ``repair_mean_hours`` (fixed or exponential).

The calibration numbers and their sources are in ``CALIBRATIONS`` and
docs/workload-simulator.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.errors import SpecError
from models.spec import parse_document, read_text, validate_model
from models.topology import TopologyArrays


@dataclass(frozen=True)
class Calibration:
    """Published per-cluster statistics of GPU jobs (times in seconds)."""

    name: str
    source: str
    mean_gpus: float
    median_gpus: float
    max_gpus: int
    mean_run_s: float
    median_run_s: float
    mean_queue_s: float
    median_queue_s: float


# The GPU-job columns of the Acme trace's cluster summary (InternLM/AcmeTrace,
# data/cluster_summary.csv; Hu et al., "Characterization of Large Language Model
# Development in the Datacenter", NSDI'24), which restates Philly (Jeon et al., ATC'19)
# and Helios (Hu et al., SC'21) next to the two Acme clusters. tests/simulations checks
# these numbers against the CSV when ../shared is present.
CALIBRATIONS: dict[str, Calibration] = {
    "seren": Calibration("seren", "Acme Seren (Hu et al., NSDI'24)", 5.68, 1.0, 1024, 1414.335, 122.0, 445.984, 1.0),
    "kalos": Calibration("kalos", "Acme Kalos (Hu et al., NSDI'24)", 26.77, 1.0, 1024, 1259.689, 124.0, 214.179,
                         17.0),
    "philly": Calibration("philly", "Philly (Jeon et al., ATC'19)", 1.928, 1.0, 128, 18006.055, 874.0, 3760.604,
                          189.0),
    "helios": Calibration("helios", "Helios (Hu et al., SC'21)", 3.716, 1.0, 2048, 6651.681, 206.0, 862.047, 0.0),
}


PreemptionPolicy = Literal["PreemptLowerPriority", "Never"]  # a pod's spec.preemptionPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Share = Annotated[float, Field(ge=0.0, le=1.0)]
GENERATED_NAME = re.compile(r"train/j[0-9]{5,}")  # generated jobs' names (explicit ones may not take them)
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]  # an infinite rate or duration never ends


class TrainingMix(_Strict):
    """Generated training gangs."""

    calibration: Literal["seren", "kalos", "philly", "helios"] = "kalos"
    target_load: Annotated[float, Field(gt=0.0, le=5.0)] | None = 0.8
    arrival_rate_per_hour: Positive | None = None
    single_gpu_share: Share = 0.5
    mean_gpus: Positive | None = None  # default: the calibration's
    max_gpus: Annotated[int, Field(ge=1)] = 512
    median_duration_s: Positive | None = None
    mean_duration_s: Positive | None = None
    max_duration_s: Positive = 86_400.0
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = 8
    split_share: Share = 0.5
    launcher_cpu_milli: Annotated[int, Field(ge=0)] = 2000
    launcher_memory_mib: Annotated[int, Field(ge=0)] = 4096
    cpu_milli_per_gpu: Annotated[int, Field(ge=0)] = 8000
    memory_mib_per_gpu: Annotated[int, Field(ge=0)] = 65536
    comm_share_min: Share = 0.1
    comm_share_max: Share = 0.4
    preferred_level: str | None = None
    required_level: str | None = None
    rail_aligned: bool = True
    priority: int = 0
    preemption_policy: PreemptionPolicy = "PreemptLowerPriority"

    @model_validator(mode="after")
    def _check(self) -> TrainingMix:
        if self.comm_share_min > self.comm_share_max:
            raise ValueError(f"comm_share_min {self.comm_share_min} exceeds comm_share_max {self.comm_share_max}")
        med, mean = self.median_s, self.mean_s
        if mean < med:
            raise ValueError(f"mean duration {mean} s is below the median {med} s (a log-normal needs mean >= median)")
        if self.target_load is None and self.arrival_rate_per_hour is None:
            raise ValueError("give target_load or arrival_rate_per_hour")
        mg = self.mean_gpus if self.mean_gpus is not None else CALIBRATIONS[self.calibration].mean_gpus
        if mg > self.max_gpus:
            raise ValueError(f"mean GPUs {mg} exceeds max_gpus {self.max_gpus}")
        if mg < 1:
            raise ValueError(f"mean_gpus {mg} is below 1: every training job has at least one GPU")
        if not 0 < _clamped_mean_check(med, mean, self.max_duration_s) < math.inf:
            raise ValueError(f"durations (median {med} s, mean {mean} s, max {self.max_duration_s} s) give no "
                             "finite mean run time: bring the mean closer to the median")
        return self

    @property
    def calib(self) -> Calibration:
        return CALIBRATIONS[self.calibration]

    @property
    def median_s(self) -> float:
        return self.median_duration_s if self.median_duration_s is not None else self.calib.median_run_s

    @property
    def mean_s(self) -> float:
        return self.mean_duration_s if self.mean_duration_s is not None else self.calib.mean_run_s

    @property
    def target_mean_gpus(self) -> float:
        return self.mean_gpus if self.mean_gpus is not None else self.calib.mean_gpus


class ServiceSpec(_Strict):
    """An inference Deployment: replicas of ``gpus_per_replica`` GPUs, scaled on a diurnal demand."""

    name: str
    count: Annotated[int, Field(ge=1, le=1000)] = 1  # this many services of this kind (name-0, name-1, ...)
    gpus_per_replica: Annotated[int, Field(ge=1, le=64)] = 1
    cpu_milli: Annotated[int, Field(ge=0)] = 8000
    memory_mib: Annotated[int, Field(ge=0)] = 65536
    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 4
    peak_hour: Annotated[float, Field(ge=0.0, lt=24.0)] = 14.0
    noise: Share = 0.1  # std-dev of the demand noise, as a share of (max - min)
    spread_level: str | None = None
    priority: int = 10
    preemption_policy: PreemptionPolicy = "PreemptLowerPriority"
    # a PodDisruptionBudget over the service's replicas (one of the two, absolute numbers)
    max_unavailable: Annotated[int, Field(ge=0)] | None = None
    min_available: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> ServiceSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        if self.max_unavailable is not None and self.min_available is not None:
            raise ValueError("give max_unavailable or min_available, not both (a PodDisruptionBudget has one)")
        return self


class InferenceMix(_Strict):
    """Inference services and the HPA that scales them (Kubernetes defaults: 15 s sync, 300 s down-scale window)."""

    services: tuple[ServiceSpec, ...] = ()
    sync_period_s: Positive = 60.0
    scale_down_stabilization_s: Annotated[float, Field(ge=0.0)] = 300.0


class FailureSpec(_Strict):
    """Random node failures (none when ``node_mtbf_hours`` is unset)."""

    node_mtbf_hours: Positive | None = None
    repair_mean_hours: Positive = 4.0
    repair_distribution: Literal["fixed", "exponential"] = "exponential"
    detection_s: Annotated[float, Field(ge=0.0)] = 30.0  # Ready=False/Unknown for this long counts as failed
    recreate_s: Annotated[float, Field(ge=0.0)] = 2.0  # the job controller recreates lost pods after this


class JobSpec(_Strict):
    """One explicit training job (a trace row)."""

    name: str
    arrival_s: Annotated[float, Field(ge=0.0)] = 0.0
    workers: Annotated[int, Field(ge=1, le=4096)] = 1
    gpus_per_worker: Annotated[int, Field(ge=0, le=64)] = 8
    launcher: bool | None = None  # default: when there is more than one worker
    duration_s: Positive = 3600.0
    comm_share: Share = 0.2
    cpu_milli_per_gpu: Annotated[int, Field(ge=0)] = 8000
    memory_mib_per_gpu: Annotated[int, Field(ge=0)] = 65536
    preferred_level: str | None = None
    required_level: str | None = None
    rail_aligned: bool = False
    priority: int = 0
    preemption_policy: PreemptionPolicy = "PreemptLowerPriority"


class NodeFailureSpec(_Strict):
    """One explicit node failure."""

    node: str
    at_s: Annotated[float, Field(ge=0.0)]
    repair_s: Positive | None = None  # None: the node never comes back


class CommSpec(_Strict):
    """The communication model's parameters (see simulations/comm_model.py)."""

    gradient_mib: Positive = 1024.0
    base_latency_us: Annotated[float, Field(ge=0.0)] = 5.0
    hop_latency_us: Annotated[float, Field(ge=0.0)] = 1.0


class RecoverySpec(_Strict):
    """What an interrupted job loses and pays to restart."""

    checkpoint_interval_s: Positive = 1800.0
    restart_overhead_s: Annotated[float, Field(ge=0.0)] = 60.0
    rendezvous_timeout_s: Positive = 600.0  # members started without their gang give up after this


class WorkloadFile(_Strict):
    """A workload: generated training and inference, failures, explicit jobs."""

    name: str = "workload"
    description: str = ""
    training: TrainingMix | None = None
    inference: InferenceMix | None = None
    failures: FailureSpec = FailureSpec()
    recovery: RecoverySpec = RecoverySpec()
    comm: CommSpec = CommSpec()
    jobs: tuple[JobSpec, ...] = ()
    node_failures: tuple[NodeFailureSpec, ...] = ()

    @model_validator(mode="after")
    def _names(self) -> WorkloadFile:
        seen: set[str] = set()
        for j in self.jobs:
            if j.name in seen:
                raise ValueError(f"job name {j.name!r} used twice")
            if GENERATED_NAME.fullmatch(j.name):
                raise ValueError(f"job name {j.name!r} is how generated jobs are named (train/jNNNNN): pick another")
            seen.add(j.name)
        if self.inference is not None:
            names = [s.name for s in self.inference.services]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate service names {names}")
        return self


def load_workload(path: str | Path) -> WorkloadFile:
    """Read and validate a workload file; problems raise ``SpecError`` naming file and field."""
    source = str(path)
    return validate_model(WorkloadFile, parse_document(read_text(path), source), source)


def check_against(wl: WorkloadFile, arrays: TopologyArrays, source: str) -> None:
    """Level and node names in the workload must exist in the cluster."""
    levels = {*arrays.level_names, "host", "node", "clique"}
    for where, name in _level_refs(wl):
        if name is not None and name not in levels:
            raise SpecError(f"unknown level {name!r}", source=source, path=where,
                            fix=f"use one of {', '.join(arrays.level_names)}, host")
    for i, f in enumerate(wl.node_failures):
        if f.node not in arrays.node_index:
            raise SpecError("unknown node", source=source, path=f"node_failures[{i}].node", value=f.node)
    most = int(arrays.gpu_count.max()) if arrays.n_nodes else 0
    if wl.training is not None and wl.training.gpus_per_node > most:
        raise SpecError(f"generated jobs would take {wl.training.gpus_per_node} GPUs per node, but no node of the "
                        f"cluster has more than {most}", source=source, path="training.gpus_per_node",
                        value=wl.training.gpus_per_node, fix=f"set it to {most} or less")


def _level_refs(wl: WorkloadFile) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    if wl.training is not None:
        out += [("training.preferred_level", wl.training.preferred_level),
                ("training.required_level", wl.training.required_level)]
    if wl.inference is not None:
        out += [(f"inference.services[{i}].spread_level", s.spread_level) for i, s in enumerate(wl.inference.services)]
    for i, j in enumerate(wl.jobs):
        out += [(f"jobs[{i}].preferred_level", j.preferred_level), (f"jobs[{i}].required_level", j.required_level)]
    return out


# ---------------------------------------------------------------------------- generated items


@dataclass(frozen=True)
class Job:
    """One training job as the simulator runs it."""

    name: str
    arrival_s: float
    workers: int
    gpus_per_worker: int
    launcher: bool
    duration_s: float  # run time on the most compact placement
    comm_share: float
    cpu_milli_per_gpu: int = 8000
    memory_mib_per_gpu: int = 65536
    launcher_cpu_milli: int = 2000
    launcher_memory_mib: int = 4096
    preferred_level: str | None = None
    required_level: str | None = None
    rail_aligned: bool = False
    priority: int = 0
    preempts: bool = True  # preemptionPolicy PreemptLowerPriority (False: Never)

    @property
    def gpus(self) -> int:
        return self.workers * self.gpus_per_worker

    @property
    def pods(self) -> int:
        return self.workers + int(self.launcher)


@dataclass(frozen=True)
class Service:
    """One inference Deployment with its demand curve parameters."""

    name: str
    gpus_per_replica: int
    cpu_milli: int
    memory_mib: int
    min_replicas: int
    max_replicas: int
    peak_hour: float
    noise: float
    spread_level: str | None
    priority: int
    preempts: bool = True  # preemptionPolicy PreemptLowerPriority (False: Never)
    max_unavailable: int | None = None  # its PodDisruptionBudget, if any
    min_available: int | None = None

    def demand(self, t_s: float, rng: np.random.Generator) -> int:
        """Desired replicas at time ``t_s``: a diurnal curve peaking at ``peak_hour``, plus noise."""
        phase = 2 * math.pi * (t_s / 86_400.0 - self.peak_hour / 24.0)
        level = 0.5 * (1.0 + math.cos(phase))
        span = self.max_replicas - self.min_replicas
        value = self.min_replicas + span * level + rng.normal(0.0, self.noise * max(span, 1))
        return int(min(max(round(value), self.min_replicas), self.max_replicas))


@dataclass(frozen=True)
class NodeFailure:
    node: str
    at_s: float
    repair_s: float | None


@dataclass
class Generated:
    """Everything a run replays: jobs by arrival, services, failures, and how they were drawn."""

    jobs: list[Job]
    services: list[Service]
    failures: list[NodeFailure]
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- phases 1-3


def size_law(mean_gpus: float, single_share: float, max_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    """Phase 1: sizes (powers of two up to ``max_gpus``) and their probabilities."""
    k_max = int(math.floor(math.log2(max_gpus)))
    sizes = 2 ** np.arange(k_max + 1)
    if k_max == 0:
        return sizes, np.ones(1)
    rest = sizes[1:].astype(float)
    target = (mean_gpus - single_share) / (1.0 - single_share) if single_share < 1 else 1.0

    def probs(q: float) -> np.ndarray:
        w = q ** np.arange(1, k_max + 1, dtype=float)
        return w / w.sum()

    lo_mean, hi_mean = float(rest[0]), float(rest[-1])
    if single_share >= 1.0 or target <= lo_mean:
        p_rest = np.zeros(len(rest))
        p_rest[0] = 1.0
        if single_share < 1.0 and target < lo_mean:
            # the mean is below what any multi-GPU job allows: give the 1-GPU share what it needs
            share = (lo_mean - mean_gpus) / (lo_mean - 1.0)
            return sizes, np.concatenate([[share], (1 - share) * p_rest])
    elif target >= hi_mean:
        p_rest = np.zeros(len(rest))
        p_rest[-1] = 1.0
    else:
        lo, hi = 1e-9, 1e9  # mean of rest grows with q: bisection in log space
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if float(probs(mid) @ rest) < target:
                lo = mid
            else:
                hi = mid
        p_rest = probs(math.sqrt(lo * hi))
    return sizes, np.concatenate([[single_share], (1.0 - single_share) * p_rest])


def lognormal_params(median_s: float, mean_s: float) -> tuple[float, float]:
    """Phase 2: (mu, sigma) of the log-normal with this median and mean."""
    return math.log(median_s), math.sqrt(max(2.0 * math.log(mean_s / median_s), 0.0))


def clamped_mean(mu: float, sigma: float, cap: float) -> float:
    """E[min(X, cap)] for a log-normal X."""
    if sigma == 0:
        return min(math.exp(mu), cap)
    z = (math.log(cap) - mu) / sigma
    phi = 0.5 * (1 + math.erf((z - sigma) / math.sqrt(2)))
    tail = 1 - 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return math.exp(mu + sigma * sigma / 2) * phi + cap * tail


def _clamped_mean_check(median_s: float, mean_s: float, cap: float) -> float:
    """``clamped_mean`` of these durations, NaN where the numbers overflow (for validation)."""
    try:
        value = clamped_mean(*lognormal_params(median_s, mean_s), cap)
    except (OverflowError, ValueError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def arrival_rate_per_s(mix: TrainingMix, capacity_gpus: int) -> float:
    """Phase 3: Poisson rate giving ``target_load`` of the capacity (or the explicit rate)."""
    if mix.arrival_rate_per_hour is not None:
        return mix.arrival_rate_per_hour / 3600.0
    sizes, probs = size_law(mix.target_mean_gpus, mix.single_gpu_share, min(mix.max_gpus, capacity_gpus))
    mu, sigma = lognormal_params(mix.median_s, mix.mean_s)
    gpu_s = float(probs @ sizes) * clamped_mean(mu, sigma, mix.max_duration_s)
    assert mix.target_load is not None
    return mix.target_load * capacity_gpus / gpu_s


def _shape(mix: TrainingMix, gpus: int, rng: np.random.Generator) -> tuple[int, int, bool]:
    """Phase 4: (workers, GPUs per worker, launcher) for a job of ``gpus`` GPUs."""
    per_node = mix.gpus_per_node
    if gpus <= per_node:
        if gpus > 1 and rng.random() < mix.split_share:
            return gpus, 1, True
        return 1, gpus, False
    return -(-gpus // per_node), per_node, True


def generate(wl: WorkloadFile, arrays: TopologyArrays, hours: float, seed: int) -> Generated:
    """Phases 1-6 for ``hours`` of simulated time."""
    rng = np.random.default_rng(seed)
    horizon = hours * 3600.0
    jobs: list[Job] = []
    info: dict = {}
    capacity = arrays.total_gpus
    mix = wl.training
    if mix is not None:
        cap_gpus = min(mix.max_gpus, capacity)
        sizes, probs = size_law(mix.target_mean_gpus, mix.single_gpu_share, cap_gpus)
        mu, sigma = lognormal_params(mix.median_s, mix.mean_s)
        rate = arrival_rate_per_s(mix, capacity)
        info.update(calibration=mix.calib.source, arrival_rate_per_hour=rate * 3600.0,
                    size_law={int(s): float(p) for s, p in zip(sizes, probs, strict=True)},
                    mean_gpus=float(probs @ sizes), duration_mu=mu, duration_sigma=sigma,
                    mean_duration_s=clamped_mean(mu, sigma, mix.max_duration_s))
        t, i = 0.0, 0
        while True:
            t += float(rng.exponential(1.0 / rate))
            if t >= horizon:
                break
            gpus = int(rng.choice(sizes, p=probs))
            dur = float(min(rng.lognormal(mu, sigma), mix.max_duration_s))
            workers, per, launcher = _shape(mix, gpus, rng)
            share = float(rng.uniform(mix.comm_share_min, mix.comm_share_max)) if gpus > 1 else 0.0
            jobs.append(Job(f"train/j{i:05d}", t, workers, per, launcher, max(dur, 1.0), share,
                            mix.cpu_milli_per_gpu, mix.memory_mib_per_gpu, mix.launcher_cpu_milli,
                            mix.launcher_memory_mib, mix.preferred_level if gpus > 1 else None,
                            mix.required_level if gpus > 1 else None, mix.rail_aligned and per > 1, mix.priority,
                            mix.preemption_policy != "Never"))
            i += 1
    for j in wl.jobs:
        launcher = j.launcher if j.launcher is not None else j.workers > 1
        jobs.append(Job(j.name, j.arrival_s, j.workers, j.gpus_per_worker, launcher, j.duration_s,
                        j.comm_share, j.cpu_milli_per_gpu, j.memory_mib_per_gpu,
                        preferred_level=j.preferred_level, required_level=j.required_level,
                        rail_aligned=j.rail_aligned, priority=j.priority, preempts=j.preemption_policy != "Never"))
    jobs = [j for j in jobs if j.arrival_s < horizon]
    jobs.sort(key=lambda j: (j.arrival_s, j.name))
    services: list[Service] = []
    if wl.inference is not None:
        for s in wl.inference.services:
            for k in range(s.count):
                name = s.name if s.count == 1 else f"{s.name}-{k}"
                services.append(Service(f"serve/{name}", s.gpus_per_replica, s.cpu_milli, s.memory_mib,
                                        s.min_replicas, s.max_replicas, s.peak_hour, s.noise, s.spread_level,
                                        s.priority, s.preemption_policy != "Never", s.max_unavailable,
                                        s.min_available))
    failures = [NodeFailure(f.node, f.at_s, f.repair_s) for f in wl.node_failures if f.at_s < horizon]
    fs = wl.failures
    if fs.node_mtbf_hours is not None:
        mtbf = fs.node_mtbf_hours * 3600.0
        repair = fs.repair_mean_hours * 3600.0
        for node in arrays.node_names:
            t = float(rng.exponential(mtbf))
            while t < horizon:
                r = repair if fs.repair_distribution == "fixed" else float(rng.exponential(repair))
                failures.append(NodeFailure(node, t, r))
                t += r + float(rng.exponential(mtbf))
    failures.sort(key=lambda f: (f.at_s, f.node))
    info.update(jobs=len(jobs), services=len(services), node_failures=len(failures))
    return Generated(jobs, services, failures, info)
