"""Resource fit: free GPUs (whole or a shared slice), CPU, memory, pod slots and extended resources."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, FilterResult, register
from scheduler.snapshot import PodShape, Snapshot

NAME = "resource-fit"


def fits_gpu(shape: PodShape, snap: Snapshot) -> tuple[np.ndarray, str]:
    """Nodes with room for the pod's GPUs, and the reason for the others."""
    if shape.gpus == 0:
        return np.ones(snap.n_nodes, dtype=bool), ""
    if shape.is_shared:
        ok = (snap.gpu_free >= shape.gpu_milli).any(axis=1)
        return ok, f"had no GPU with {shape.gpu_milli}m free"
    ok = snap.full_free_count() >= shape.gpus
    noun = "GPU" if shape.gpus == 1 else "GPUs"
    return ok, f"had fewer than {shape.gpus} free {noun}"


@register(NAME)
class ResourceFit(BasePlugin):
    def filter(self, shape: PodShape, snap: Snapshot, state: Any) -> FilterResult:
        gpu_ok, gpu_why = fits_gpu(shape, snap)
        cpu_ok = snap.free_cpu >= shape.cpu_milli
        mem_ok = snap.free_mem >= shape.memory_mib
        pods_ok = snap.free_pods >= 1
        ok = gpu_ok & cpu_ok & mem_ok & pods_ok
        reasons = [(~gpu_ok, gpu_why), (~cpu_ok, "Insufficient cpu"), (~mem_ok, "Insufficient memory"),
                   (~pods_ok, "Too many pods")]
        for name, amount in shape.extended:
            ext_ok = fits_extended(snap, name, amount)
            ok = ok & ext_ok
            reasons.append((~ext_ok, f"Insufficient {name}"))
        return FilterResult(ok, [(m, w) for m, w in reasons if w])


def fits_extended(snap: Snapshot, name: str, amount: int) -> np.ndarray:
    """Nodes with ``amount`` of extended resource ``name`` free (none where no node offers it)."""
    k = snap.arrays.ext_index(name)
    if k < 0:
        return np.zeros(snap.n_nodes, dtype=bool)
    return snap.free_ext[:, k] >= amount
