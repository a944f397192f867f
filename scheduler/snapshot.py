"""Snapshot: free capacity per node, built once per decision; read-only views for plugins.

Static facts (topology, capacity) live in ``TopologyArrays``; what changes lives here in
dense arrays indexed by node (Kueue's split): free CPU milli, free memory MiB, free pod
slots, free milli-GPU of every GPU (``-1`` where a node has fewer GPUs than the widest
node), free extended resources (columns ``arrays.ext_names``), and node health. ``PodShape`` is the hot-path form of one pod's request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from models.requests import GPU_MILLI, Resources, Toleration
from models.topology import TopologyArrays

NO_GPU = -1


@dataclass(frozen=True, slots=True)
class PodShape:
    """One pod's request as the engine uses it (hashable: shapes are cached)."""

    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_milli: int = GPU_MILLI
    gpu_models: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    owner: str | None = None
    spread_level: str | None = None
    extended: tuple[tuple[str, int], ...] = ()  # extended resources by name, sorted

    @property
    def is_shared(self) -> bool:
        return self.gpus == 1 and self.gpu_milli < GPU_MILLI

    @property
    def gpu_milli_total(self) -> int:
        return self.gpus * self.gpu_milli

    @classmethod
    def of(cls, r: Resources, owner: str | None = None, spread_level: str | None = None) -> PodShape:
        return cls(
            cpu_milli=r.cpu_milli, memory_mib=r.memory_mib, gpus=r.gpus, gpu_milli=r.gpu_milli,
            gpu_models=tuple(r.gpu_models), node_selector=tuple(sorted(r.node_selector.items())),
            tolerations=tuple(r.tolerations), owner=owner, spread_level=spread_level,
            extended=tuple(sorted(r.extended.items())),
        )

    def describe(self) -> str:
        parts = []
        if self.gpus:
            parts.append(f"{self.gpus} GPU" if self.gpu_milli == GPU_MILLI else f"{self.gpu_milli}m of 1 GPU")
        if self.cpu_milli:
            parts.append(f"{self.cpu_milli}m CPU")
        if self.memory_mib:
            parts.append(f"{self.memory_mib} MiB")
        parts += [f"{amount} {name}" for name, amount in self.extended]
        return ", ".join(parts) or "nothing"


@dataclass
class Snapshot:
    """Free capacity of every node at one instant. Plugins must not mutate it.

    Capacity changes go through :meth:`apply`, which stamps the node with a new generation
    (``node_gen``, ``gen``): plugins that keep per-node state find the nodes changed since
    they last looked without comparing every array. A snapshot written to directly (a test
    setting up a state) must be written before the engine first sees it."""

    arrays: TopologyArrays
    free_cpu: np.ndarray  # int64 [N]
    free_mem: np.ndarray  # int64 [N]
    free_pods: np.ndarray  # int32 [N]
    gpu_free: np.ndarray  # int32 [N, G]: free milli per GPU, NO_GPU where absent
    failed: np.ndarray  # bool [N]: node counted as failed (its GPUs leave the pool)
    owner_nodes: dict[str, list[int]] = field(default_factory=dict)  # replica owner -> nodes used
    # int32 [N, G+1]: resident GPU pods per kind (column 0: shared-GPU pods, column k: pods
    # holding k whole GPUs); None when the caller does not track it
    gpu_pods: np.ndarray | None = None
    free_ext: np.ndarray = None  # type: ignore[assignment]  # int64 [N, K]: free extended resources
    _cache: dict = field(default_factory=dict, repr=False)
    gen: int = 0  # capacity changes so far (calls of apply)
    node_gen: np.ndarray = None  # type: ignore[assignment]  # int64 [N]: gen of each node's last change
    # per-node values derived from a node's free capacity, kept across apply (each entry
    # records the node_gen it was computed at); a copy starts empty
    node_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.free_ext is None:
            self.free_ext = self.arrays.ext_alloc.astype(np.int64).copy()
        if self.node_gen is None:
            self.node_gen = np.zeros(self.arrays.n_nodes, dtype=np.int64)

    @classmethod
    def empty(cls, arrays: TopologyArrays) -> Snapshot:
        """All capacity free."""
        n, g = arrays.n_nodes, max(arrays.max_gpus, 1)
        gpu_free = np.full((n, g), NO_GPU, dtype=np.int32)
        present = np.arange(g)[None, :] < arrays.gpu_count[:, None]
        gpu_free[present] = GPU_MILLI
        return cls(
            arrays=arrays,
            free_cpu=arrays.cpu_milli.astype(np.int64).copy(),
            free_mem=arrays.memory_mib.astype(np.int64).copy(),
            free_pods=arrays.max_pods.astype(np.int32).copy(),
            gpu_free=gpu_free,
            failed=np.zeros(n, dtype=bool),
            gpu_pods=np.zeros((n, g + 1), dtype=np.int32),
            free_ext=arrays.ext_alloc.astype(np.int64).copy(),
        )

    def copy(self) -> Snapshot:
        return Snapshot(
            arrays=self.arrays,
            free_cpu=self.free_cpu.copy(),
            free_mem=self.free_mem.copy(),
            free_pods=self.free_pods.copy(),
            gpu_free=self.gpu_free.copy(),
            failed=self.failed.copy(),
            owner_nodes={k: list(v) for k, v in self.owner_nodes.items()},
            gpu_pods=None if self.gpu_pods is None else self.gpu_pods.copy(),
            free_ext=self.free_ext.copy(),
        )

    @property
    def n_nodes(self) -> int:
        return self.arrays.n_nodes

    def usable(self) -> np.ndarray:
        """Nodes new pods may go to: ready, not cordoned, not failed."""
        a = self.arrays
        return a.ready & ~a.unschedulable & ~self.failed

    def full_free(self) -> np.ndarray:
        """bool [N, G]: GPUs with nothing allocated."""
        return self.gpu_free == GPU_MILLI

    def full_free_count(self) -> np.ndarray:
        return self.full_free().sum(axis=1)

    def free_gpu_milli(self) -> np.ndarray:
        """int64 [N]: free milli-GPU per node (partial GPUs included)."""
        return np.where(self.gpu_free > 0, self.gpu_free, 0).sum(axis=1, dtype=np.int64)

    def apply(self, node: int, gpus: tuple[int, ...], gpu_milli: int, cpu_milli: int, memory_mib: int,
              sign: int = 1, owner: str | None = None, extended: Iterable[tuple[str, int]] = ()) -> None:
        """Take (sign=1) or give back (sign=-1) one pod's resources on ``node``.

        ``extended``: (name, amount) pairs; a name no node offers changes nothing (either sign).
        """
        self.gen += 1
        self.node_gen[node] = self.gen
        self.free_cpu[node] -= sign * cpu_milli
        if extended:
            names = self.arrays.ext_names
            for name, amount in extended:
                if name in names:
                    self.free_ext[node, names.index(name)] -= sign * amount
        self.free_mem[node] -= sign * memory_mib
        self.free_pods[node] -= sign
        for g in gpus:
            self.gpu_free[node, g] -= sign * gpu_milli
        if gpus and self.gpu_pods is not None:
            self.gpu_pods[node, 0 if gpu_milli < GPU_MILLI else len(gpus)] += sign
        if owner is not None:
            lst = self.owner_nodes.setdefault(owner, [])
            if sign > 0:
                lst.append(node)
            elif node in lst:
                lst.remove(node)
        self._cache.clear()
