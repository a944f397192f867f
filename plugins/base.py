"""Plugin protocol and registry.

A plugin filters nodes and/or scores candidate placements for ONE pod shape. It works on
whole arrays at once (one call per decision, not one per node): a Python call per node
would cost more than the whole placement budget on a 4,096-node cluster.

- ``prepare(shape, snap, ctx) -> state``: optional per-request precomputation.
- ``filter(shape, snap, state) -> FilterResult``: which nodes can host the pod, and why
  the others cannot (reasons sum across nodes, as kube-scheduler's do).
- ``score(shape, snap, cand, state) -> float array``: one value per candidate in 0..1,
  higher is better. The engine multiplies by the plugin's weight and adds up.

A plugin does no I/O, never mutates its inputs and never logs per node. Plugins import
only ``models`` and ``scheduler.snapshot``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from scheduler.snapshot import PodShape, Snapshot


@dataclass
class FilterResult:
    """Feasible nodes plus, for the others, masks with a reason each."""

    ok: np.ndarray  # bool [N]
    reasons: list[tuple[np.ndarray, str]] = field(default_factory=list)

    @classmethod
    def single(cls, ok: np.ndarray, reason: str) -> FilterResult:
        return cls(ok, [(~ok, reason)])

    @classmethod
    def all(cls, n: int) -> FilterResult:
        return cls(np.ones(n, dtype=bool), [])


@dataclass
class Candidates:
    """Possible placements of one pod: node, GPU choice and the GPU state it leaves.

    ``gpu_after[m]`` is the free milli of every GPU of ``node[m]`` after the placement
    (``-1`` for absent GPUs). ``gpus[m]`` is the exact GPU set.
    """

    node: np.ndarray  # int32 [M]
    gpus: list[tuple[int, ...]]
    gpu_after: np.ndarray  # int32 [M, G]
    link_score: np.ndarray  # float [M]: 0..1 intra-node quality of the chosen set
    locality: np.ndarray | None = None  # float [M]: 0..1 NUMA/NIC locality of the chosen set
    gpu: np.ndarray | None = None  # int [M]: for a shared-GPU pod, the GPU of each candidate

    def __len__(self) -> int:
        return len(self.node)


@dataclass
class Context:
    """What a decision knows beyond the snapshot: the arriving workload mix, an RNG."""

    mix: Any = None  # scheduler.workload_mix.WorkloadMix or None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@runtime_checkable
class Plugin(Protocol):
    name: str

    def prepare(self, shape: PodShape, snap: Snapshot, ctx: Context) -> Any: ...

    def filter(self, shape: PodShape, snap: Snapshot, state: Any) -> FilterResult | None: ...

    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None: ...


class BasePlugin:
    """Defaults: no preparation, no filtering, no scoring."""

    name = "base"

    def prepare(self, shape: PodShape, snap: Snapshot, ctx: Context) -> Any:
        return None

    def filter(self, shape: PodShape, snap: Snapshot, state: Any) -> FilterResult | None:
        return None

    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None:
        return None


_REGISTRY: dict[str, Callable[..., Plugin]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a plugin available by name in configs."""

    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def create(name: str, **args: Any) -> Plugin:
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown plugin {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**args)


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    import importlib
    import pkgutil

    import plugins

    for mod in pkgutil.iter_modules(plugins.__path__):
        if mod.name != "base":
            importlib.import_module(f"plugins.{mod.name}")
