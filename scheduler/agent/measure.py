"""Time-bounded copy bandwidth of a node's GPUs: host<->device, on-device and GPU<->GPU.

The copies are behind a seam, ``CopyTimer``: ``TorchTimer`` runs them with torch and times
each with CUDA events; tests give a fake. ``measure`` does the planning and the math:

1. Plan one task per GPU for H2D, D2H and D2D, and one per ordered GPU pair that can use
   peer access (P2P). Pairs without peer access get no number (the table value stays).
2. Give each task an equal share of what is left of the budget; a task makes one
   untimed warm-up copy, then timed copies until it has ``max_reps`` or has used its
   share with at least ``min_reps``. The whole run stops at the budget's end; tasks
   not reached get no number and a note.
3. A rate is bytes over the median copy time, in Gbit/s (1 GB/s = 8 Gbit/s): the unit of
   ``bandwidth_gbps`` everywhere. D2D counts the bytes read plus those written.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.errors import ToposchedError

DEFAULT_BUDGET_S = 60.0
DEFAULT_BYTES = 256 * 1024 * 1024
KINDS = ("h2d", "d2h", "d2d", "p2p")


class MeasureError(ToposchedError):
    """Bandwidth cannot be measured here (no torch, no GPU visible, GPU count mismatch)."""


class CopySkipped(Exception):  # noqa: N818 - a per-task outcome, not a failure of the run
    """One task cannot run (allocation failed, peer copy refused); the reason becomes a note."""


class CopyTimer(Protocol):
    """Runs one copy and says how long it took on the GPU."""

    def device_count(self) -> int: ...

    def bus_ids(self) -> list[str | None]:
        """Normalized PCI bus id of each device, to line devices up with NVML's order."""

    def can_access_peer(self, src: int, dst: int) -> bool: ...

    def copy_seconds(self, kind: str, src: int, dst: int, nbytes: int) -> float:
        """Seconds of one copy of ``nbytes``; ``kind`` one of h2d, d2h, d2d, p2p."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Task:
    kind: str
    src: int
    dst: int

    @property
    def label(self) -> str:
        if self.kind == "p2p":
            return f"p2p GPU {self.src}->{self.dst}"
        return f"{self.kind} GPU {self.dst if self.kind == 'h2d' else self.src}"


@dataclass(frozen=True)
class BandwidthReport:
    """Measured rates in Gbit/s; None where nothing was measured."""

    n_gpus: int
    h2d_gbps: tuple[float | None, ...]
    d2h_gbps: tuple[float | None, ...]
    d2d_gbps: tuple[float | None, ...]
    p2p_gbps: tuple[tuple[float | None, ...], ...]
    budget_s: float
    elapsed_s: float
    bytes_per_copy: int
    notes: tuple[str, ...] = ()

    def p2p_matrix(self) -> list[list[float]]:
        """``measured_p2p_gbps`` for the topology: 0 on the diagonal and where unmeasured (table value kept)."""
        return [[round(v, 1) if v is not None and a != b else 0.0 for b, v in enumerate(row)]
                for a, row in enumerate(self.p2p_gbps)]

    def has_p2p(self) -> bool:
        return any(v for row in self.p2p_gbps for v in row)

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {
            "unit": "Gbit/s", "budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 2),
            "bytes_per_copy": self.bytes_per_copy,
            "h2d_gbps": [r(v) for v in self.h2d_gbps], "d2h_gbps": [r(v) for v in self.d2h_gbps],
            "d2d_gbps": [r(v) for v in self.d2d_gbps], "p2p_gbps": [[r(v) for v in row] for row in self.p2p_gbps],
            "notes": list(self.notes),
        }


def plan(timer: CopyTimer, n: int) -> tuple[list[Task], list[str]]:
    """Phase 1: the tasks, and a note for each pair without peer access."""
    tasks = [Task(kind, g, g) for g in range(n) for kind in ("h2d", "d2h", "d2d")]
    no_peer = []
    for a in range(n):
        for b in range(n):
            if a != b:
                if timer.can_access_peer(a, b):
                    tasks.append(Task("p2p", a, b))
                else:
                    no_peer.append(f"{a}->{b}")
    notes = [f"no peer access for GPU pairs {', '.join(no_peer)}; their table values stay"] if no_peer else []
    return tasks, notes


def rate_gbps(kind: str, nbytes: int, seconds: list[float]) -> float | None:
    """Phase 3: Gbit/s from the median copy time (D2D counts read plus write)."""
    good = [s for s in seconds if s > 0]
    if not good:
        return None
    moved = nbytes * (2 if kind == "d2d" else 1)
    return moved * 8 / statistics.median(good) / 1e9


@dataclass
class _Run:
    timer: CopyTimer
    budget_s: float
    nbytes: int
    min_reps: int
    max_reps: int
    clock: Callable[[], float]
    notes: list[str] = field(default_factory=list)

    def task(self, t: Task, share_s: float, deadline: float) -> float | None:
        """Phase 2 for one task: warm-up, then timed copies within its share."""
        start = self.clock()
        try:
            self.timer.copy_seconds(t.kind, t.src, t.dst, self.nbytes)  # warm-up: allocation, P2P mapping
            times: list[float] = []
            while len(times) < self.max_reps:
                now = self.clock()
                if now >= deadline or (len(times) >= self.min_reps and now - start >= share_s):
                    break
                times.append(self.timer.copy_seconds(t.kind, t.src, t.dst, self.nbytes))
        except CopySkipped as exc:
            self.notes.append(f"{t.label}: {exc}")
            return None
        return rate_gbps(t.kind, self.nbytes, times)


def measure(timer: CopyTimer, n: int, *, budget_s: float = DEFAULT_BUDGET_S, nbytes: int = DEFAULT_BYTES,
            min_reps: int = 3, max_reps: int = 20, clock: Callable[[], float] = time.monotonic) -> BandwidthReport:
    """Measure the copy bandwidths of ``n`` GPUs within ``budget_s`` seconds (see the module docstring)."""
    if budget_s <= 0:
        raise MeasureError(f"the measurement budget must be positive (got {budget_s:g} s)")
    visible = timer.device_count()
    if visible != n:
        raise MeasureError(f"torch sees {visible} GPU(s) but the node has {n}; measure with every GPU visible "
                           "(unset CUDA_VISIBLE_DEVICES)")
    run = _Run(timer, budget_s, nbytes, min_reps, max_reps, clock)
    tasks, notes = plan(timer, n)
    run.notes.extend(notes)
    start = clock()
    deadline = start + budget_s
    results: dict[Task, float | None] = {}
    for k, t in enumerate(tasks):
        left = deadline - clock()
        if left <= 0:
            run.notes.append(f"budget of {budget_s:g} s spent after {k} of {len(tasks)} measurements; "
                             "the rest keep their table values")
            break
        results[t] = run.task(t, left / (len(tasks) - k), deadline)
    elapsed = clock() - start

    def per_gpu(kind: str) -> tuple[float | None, ...]:
        return tuple(results.get(Task(kind, g, g)) for g in range(n))

    p2p = tuple(tuple(results.get(Task("p2p", a, b)) if a != b else None for b in range(n)) for a in range(n))
    return BandwidthReport(n, per_gpu("h2d"), per_gpu("d2h"), per_gpu("d2d"), p2p, budget_s, elapsed, nbytes,
                           tuple(run.notes))


def reorder(report: BandwidthReport, order: list[int]) -> BandwidthReport:
    """The report with device ``order[i]`` as GPU ``i`` (torch order -> NVML order)."""
    def pick(values: tuple[float | None, ...]) -> tuple[float | None, ...]:
        return tuple(values[j] for j in order)

    p2p = tuple(tuple(report.p2p_gbps[a][b] for b in order) for a in order)
    return BandwidthReport(report.n_gpus, pick(report.h2d_gbps), pick(report.d2h_gbps), pick(report.d2d_gbps), p2p,
                           report.budget_s, report.elapsed_s, report.bytes_per_copy, report.notes)


def device_order(torch_bus: list[str | None], node_bus: list[str | None]) -> list[int]:
    """For each node GPU, the torch device with the same PCI bus id (identity when either is unknown)."""
    n = len(node_bus)
    if len(torch_bus) != n or None in torch_bus or None in node_bus:
        return list(range(n))
    where = {b: i for i, b in enumerate(torch_bus)}
    missing = [b for b in node_bus if b not in where]
    if missing:
        raise MeasureError(f"torch sees no GPU at PCI bus id(s) {', '.join(str(b) for b in missing)}; "
                           "measure with every GPU visible (unset CUDA_VISIBLE_DEVICES)")
    return [where[b] for b in node_bus]


# --------------------------------------------------------------------------- torch


class TorchTimer:
    """``CopyTimer`` with torch: pinned host buffers, device buffers, CUDA event timing."""

    def __init__(self) -> None:
        # torch numbers devices fastest first unless told otherwise; NVML numbers them by PCI bus id
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        try:
            import torch
        except ImportError:
            raise MeasureError("--measure needs PyTorch, which is not installed "
                               "(pip install 'toposched[agent]')") from None
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            raise MeasureError("torch sees no CUDA GPU (no driver, a CPU-only torch build, or "
                               "CUDA_VISIBLE_DEVICES hides them)")
        self.torch = torch
        self._buffers: dict[tuple[str, int], Any] = {}

    def device_count(self) -> int:
        return int(self.torch.cuda.device_count())

    def bus_ids(self) -> list[str | None]:
        out: list[str | None] = []
        for i in range(self.device_count()):
            p = self.torch.cuda.get_device_properties(i)
            parts = [getattr(p, k, None) for k in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
            out.append(None if None in parts else f"{parts[0]:04x}:{parts[1]:02x}:{parts[2]:02x}.0")
        return out

    def can_access_peer(self, src: int, dst: int) -> bool:
        return bool(self.torch.cuda.can_device_access_peer(src, dst))

    def _buffer(self, where: str, device: int, nbytes: int, slot: int = 0) -> Any:
        key = (f"{where}{slot}", device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() != nbytes:
            torch = self.torch
            try:
                if where == "host":
                    buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
                else:
                    buf = torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{device}")
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                raise CopySkipped(f"cannot allocate {nbytes >> 20} MiB on "
                                  f"{'pinned host memory' if where == 'host' else f'GPU {device}'}: "
                                  f"{str(exc).splitlines()[0]}") from None
            self._buffers[key] = buf
        return buf

    def copy_seconds(self, kind: str, src: int, dst: int, nbytes: int) -> float:
        torch = self.torch
        if kind == "h2d":
            a, b, dev = self._buffer("host", 0, nbytes), self._buffer("gpu", dst, nbytes), dst
        elif kind == "d2h":
            a, b, dev = self._buffer("gpu", src, nbytes), self._buffer("host", 0, nbytes), src
        elif kind == "d2d":
            a, b, dev = self._buffer("gpu", src, nbytes), self._buffer("gpu", src, nbytes, slot=1), src
        else:
            a, b, dev = self._buffer("gpu", src, nbytes), self._buffer("gpu", dst, nbytes, slot=1), src
        with torch.cuda.device(dev):  # a peer copy runs on the source device's current stream
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            b.copy_(a, non_blocking=True)
            end.record()
            end.synchronize()
            if kind == "p2p":
                torch.cuda.synchronize(dst)
        return float(start.elapsed_time(end)) / 1000.0

    def close(self) -> None:
        self._buffers.clear()
        self.torch.cuda.empty_cache()
