"""Allocation ledger: who holds which GPUs, CPU, memory and extended resources, at GPU granularity.

It follows kube-scheduler's cache lifecycle::

                 assume                 confirm
      (absent) ─────────► ASSUMED ──────────────► BOUND
         ▲                  │  │                    │
         │     forget       │  │ release            │ release (pod gone / finished)
         └──────────────────┘  └──────────┬─────────┘
         ▲                                 │
         └─────────────────────────────────┘
      (absent) ── observe (watch saw a bound pod we never assumed) ──► BOUND

``TRANSITIONS`` is that table. The ledger keeps a live ``Snapshot`` up to date
incrementally (no rebuild per decision); ``snapshot()`` hands out a copy.
``check_invariants()`` recomputes everything from the allocations and compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from models.errors import SpecError, ToposchedError
from models.requests import GPU_MILLI
from models.state import StateFile
from models.topology import TopologyArrays
from scheduler.snapshot import NO_GPU, Snapshot


class AllocState(StrEnum):
    ASSUMED = "ASSUMED"
    BOUND = "BOUND"


# (from, verb) -> to; None = absent
TRANSITIONS: dict[tuple[AllocState | None, str], AllocState | None] = {
    (None, "assume"): AllocState.ASSUMED,  # engine decided, binding in flight
    (None, "observe"): AllocState.BOUND,  # watch saw a pod bound by anyone
    (AllocState.ASSUMED, "confirm"): AllocState.BOUND,  # watch saw our binding
    (AllocState.ASSUMED, "forget"): None,  # binding failed
    (AllocState.ASSUMED, "release"): None,  # pod deleted before the watch confirmed
    (AllocState.BOUND, "release"): None,  # pod finished or deleted
    (AllocState.BOUND, "observe"): AllocState.BOUND,  # re-list: idempotent
    (AllocState.ASSUMED, "observe"): AllocState.BOUND,  # watch saw it: same as confirm
}


class LedgerError(ToposchedError):
    """An impossible ledger transition or a broken invariant (a bug, not bad input)."""


@dataclass(frozen=True)
class Allocation:
    """What one pod holds on one node."""

    key: str
    node: int
    gpus: tuple[int, ...]
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    gang: str | None = None
    owner: str | None = None
    extended: tuple[tuple[str, int], ...] = ()  # extended resources by name, sorted


class Ledger:
    """Allocations by pod key, with a live snapshot kept in step."""

    def __init__(self, arrays: TopologyArrays) -> None:
        self.arrays = arrays
        self._allocs: dict[str, tuple[Allocation, AllocState]] = {}
        self._gangs: dict[str, set[str]] = {}  # gang -> keys of its allocations
        self._live = Snapshot.empty(arrays)

    def __len__(self) -> int:
        return len(self._allocs)

    def __contains__(self, key: str) -> bool:
        return key in self._allocs

    def get(self, key: str) -> Allocation | None:
        hit = self._allocs.get(key)
        return hit[0] if hit else None

    def state(self, key: str) -> AllocState | None:
        hit = self._allocs.get(key)
        return hit[1] if hit else None

    def allocations(self) -> list[Allocation]:
        return [a for a, _ in self._allocs.values()]

    def on_node(self, node: int) -> list[Allocation]:
        return [a for a, _ in self._allocs.values() if a.node == node]

    def of_gang(self, gang: str) -> list[Allocation]:
        return [self._allocs[k][0] for k in sorted(self._gangs.get(gang, ()))]

    def snapshot(self) -> Snapshot:
        """A copy of the live free-capacity snapshot for one decision."""
        return self._live.copy()

    @property
    def live(self) -> Snapshot:
        """The live snapshot itself (read-only by convention; for hot loops)."""
        return self._live

    def _step(self, key: str, verb: str) -> AllocState | None:
        cur = self.state(key)
        if (cur, verb) not in TRANSITIONS:
            raise LedgerError(f"ledger: cannot {verb} {key!r} in state {cur.value if cur else 'absent'}")
        return TRANSITIONS[(cur, verb)]

    def _check_fits(self, a: Allocation) -> None:
        snap = self._live
        if not 0 <= a.node < self.arrays.n_nodes:
            raise LedgerError(f"ledger: {a.key}: node index {a.node} out of range")
        for g in a.gpus:
            if not 0 <= g < int(self.arrays.gpu_count[a.node]):
                raise LedgerError(f"ledger: {a.key}: GPU {g} not on node {self.arrays.node_names[a.node]}")
            if snap.gpu_free[a.node, g] < a.gpu_milli:
                raise LedgerError(
                    f"ledger: {a.key}: GPU {g} of {self.arrays.node_names[a.node]} has "
                    f"{snap.gpu_free[a.node, g]}m free, needs {a.gpu_milli}m"
                )
        if len(set(a.gpus)) != len(a.gpus):
            raise LedgerError(f"ledger: {a.key}: GPU listed twice {a.gpus}")
        for name, amount in a.extended:
            k = self.arrays.ext_index(name)
            free = int(snap.free_ext[a.node, k]) if k >= 0 else 0
            if amount > free:
                raise LedgerError(f"ledger: {a.key}: {self.arrays.node_names[a.node]} has {free} {name} free, "
                                  f"needs {amount}")

    def assume(self, a: Allocation) -> None:
        """Record a placement before binding; refuses one that would over-commit a GPU."""
        self._step(a.key, "assume")
        self._check_fits(a)
        self._allocs[a.key] = (a, AllocState.ASSUMED)
        self._join(a)
        self._live.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, owner=a.owner,
                         extended=a.extended)

    def confirm(self, key: str) -> None:
        nxt = self._step(key, "confirm")
        a, _ = self._allocs[key]
        self._allocs[key] = (a, nxt)  # type: ignore[assignment]

    def observe(self, a: Allocation, force: bool = False) -> None:
        """A bound pod seen by the watch. Pods bound by others are counted even when they
        over-commit a GPU (``force``): the API server is the truth."""
        cur = self.state(a.key)
        self._step(a.key, "observe")
        if cur is not None:
            old, _ = self._allocs[a.key]
            if old == a:
                self._allocs[a.key] = (a, AllocState.BOUND)
                return
            self._remove(a.key)
        if not force:
            self._check_fits(a)
        self._allocs[a.key] = (a, AllocState.BOUND)
        self._join(a)
        self._live.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, owner=a.owner,
                         extended=a.extended)

    def forget(self, key: str) -> None:
        self._step(key, "forget")
        self._remove(key)

    def release(self, key: str) -> None:
        self._step(key, "release")
        self._remove(key)

    def _join(self, a: Allocation) -> None:
        if a.gang is not None:
            self._gangs.setdefault(a.gang, set()).add(a.key)

    def _remove(self, key: str) -> None:
        a, _ = self._allocs.pop(key)
        if a.gang is not None:
            keys = self._gangs[a.gang]
            keys.discard(key)
            if not keys:
                del self._gangs[a.gang]
        self._live.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, sign=-1, owner=a.owner,
                         extended=a.extended)

    def set_failed(self, node: int, failed: bool) -> None:
        """Mark a node failed (its GPUs leave the free pool) or recovered."""
        self._live.failed[node] = failed
        self._live._cache.clear()

    def check_invariants(self) -> None:
        """Recompute free capacity from the allocations; raise on any difference."""
        fresh = Snapshot.empty(self.arrays)
        owners: dict[str, list[int]] = {}
        for a, _ in self._allocs.values():
            fresh.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, extended=a.extended)
            if a.owner is not None:
                owners.setdefault(a.owner, []).append(a.node)
        live = self._live
        for name in ("free_cpu", "free_mem", "free_pods", "gpu_free", "free_ext"):
            if not np.array_equal(getattr(fresh, name), getattr(live, name)):
                raise LedgerError(f"ledger: {name} drifted from the allocations")
        present = live.gpu_free != NO_GPU
        bad = present & ((live.gpu_free < 0) | (live.gpu_free > GPU_MILLI))
        if bad.any():
            n, g = np.argwhere(bad)[0]
            raise LedgerError(
                f"ledger: GPU {g} of {self.arrays.node_names[n]} has {live.gpu_free[n, g]}m free (over-committed)"
            )
        if (live.free_ext < 0).any():
            n, k = np.argwhere(live.free_ext < 0)[0]
            raise LedgerError(f"ledger: {self.arrays.ext_names[k]} of {self.arrays.node_names[n]} is over-committed "
                              f"({-int(live.free_ext[n, k])} more taken than it has)")
        gangs: dict[str, set[str]] = {}
        for a, _ in self._allocs.values():
            if a.gang is not None:
                gangs.setdefault(a.gang, set()).add(a.key)
        if gangs != self._gangs:
            raise LedgerError("ledger: gang index drifted from the allocations")
        for owner, nodes in owners.items():
            if sorted(live.owner_nodes.get(owner, [])) != sorted(nodes):
                raise LedgerError(f"ledger: owner {owner} node list drifted")


def load_state(ledger: Ledger, state: StateFile, source: str) -> None:
    """Apply a state file to a ledger; every problem names the file and the entry."""
    arrays = ledger.arrays
    seen: set[str] = set()
    for i, a in enumerate(state.allocations):
        where = f"allocations[{i}]"
        if a.pod in seen:
            raise SpecError("pod listed twice", source=source, path=f"{where}.pod", value=a.pod)
        seen.add(a.pod)
        if a.node not in arrays.node_index:
            raise SpecError("unknown node", source=source, path=f"{where}.node", value=a.node,
                            fix="use a node name of the cluster")
        node = arrays.node_index[a.node]
        n_gpus = int(arrays.gpu_count[node])
        for g in a.gpus:
            if not 0 <= g < n_gpus:
                raise SpecError(f"GPU {g} out of range (node {a.node} has {'0-' + str(n_gpus - 1) if n_gpus else 'no GPUs'})",
                                source=source, path=f"{where}.gpus")
        if a.gpu_milli < GPU_MILLI and len(a.gpus) != 1:
            raise SpecError("a shared allocation (gpu_milli < 1000) holds exactly one GPU", source=source,
                            path=f"{where}.gpus", value=list(a.gpus))
        try:
            ledger.observe(Allocation(a.pod, node, tuple(a.gpus), a.gpu_milli, a.cpu_milli, a.memory_mib,
                                      gang=a.gang, owner=a.owner, extended=tuple(sorted(a.extended.items()))))
        except LedgerError as exc:
            raise SpecError(f"does not fit what is already allocated: {exc}", source=source, path=where) from None
    for i, name in enumerate(state.failed_nodes):
        if name not in arrays.node_index:
            raise SpecError("unknown node", source=source, path=f"failed_nodes[{i}]", value=name)
        ledger.set_failed(arrays.node_index[name], True)
