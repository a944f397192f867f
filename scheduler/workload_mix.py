"""The arriving workload mix: the "typical pods" a fragmentation score is measured against.

A pod's *kind* is (CPU milli, per-GPU milli, GPU count, allowed GPU models); memory is
not part of it. The typical pods are the most frequent kinds, taken in decreasing
frequency until they cover ``coverage`` (95%) of all pods counted, with frequencies
renormalised over the kinds kept (FGD, USENIX ATC'23, section 4; equal counts are
ordered by the larger kind first, so the cut is deterministic).

The simulator builds a mix once from the trace it replays; the live scheduler and the
extender count the pods they are asked to place in an :class:`ArrivalMix`, which publishes
a fresh ``WorkloadMix`` now and then. ``version`` changes whenever the typical set may
have changed, so plugins can cache per version (a new version makes the fragmentation
plugins recompute every node once).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from models.requests import GPU_MILLI
from scheduler.snapshot import PodShape

DEFAULT_COVERAGE = 0.95
_VERSIONS = itertools.count(1)


@dataclass(frozen=True, order=True)
class PodKind:
    """What fragmentation looks at in a pod: CPU, GPU share, GPU count, allowed models."""

    cpu_milli: int
    gpu_milli: int  # per GPU; 0 for CPU-only pods
    gpus: int
    models: tuple[str, ...] = ()  # allowed GPU models, empty = any

    @classmethod
    def of(cls, shape: PodShape) -> PodKind:
        if shape.gpus == 0:
            return cls(shape.cpu_milli, 0, 0, ())
        return cls(shape.cpu_milli, shape.gpu_milli, shape.gpus, tuple(shape.gpu_models))

    @property
    def gpu_milli_total(self) -> int:
        return self.gpu_milli * self.gpus


class WorkloadMix:
    """Counts of pod kinds and the typical subset derived from them (lazily, per version)."""

    def __init__(self, counts: Mapping[PodKind, float] | None = None, coverage: float = DEFAULT_COVERAGE) -> None:
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        self.coverage = coverage
        self._counts: dict[PodKind, float] = dict(counts or {})
        self._memory: dict[PodKind, float] = {}  # summed memory MiB of the pods counted per kind
        self._typical: tuple[tuple[PodKind, float], ...] | None = None
        self.version = next(_VERSIONS)

    @classmethod
    def from_shapes(cls, shapes: Iterable[PodShape | tuple[PodShape, float]],
                    coverage: float = DEFAULT_COVERAGE) -> WorkloadMix:
        """A mix of pod shapes, each counted once or, given as ``(shape, n)``, ``n`` times."""
        mix = cls(coverage=coverage)
        for s in shapes:
            shape, weight = s if isinstance(s, tuple) else (s, 1.0)
            mix._add(shape, weight)
        return mix

    def _add(self, shape: PodShape, weight: float) -> None:
        k = PodKind.of(shape)
        self._counts[k] = self._counts.get(k, 0.0) + weight
        self._memory[k] = self._memory.get(k, 0.0) + weight * shape.memory_mib

    @classmethod
    def from_counts(cls, counts: Mapping[PodKind, float], memory_mib: Mapping[PodKind, float],
                    coverage: float = DEFAULT_COVERAGE) -> WorkloadMix:
        """A mix of weighted kind counts; ``memory_mib`` holds each kind's summed memory (MiB x weight)."""
        mix = cls(counts, coverage=coverage)
        mix._memory = {k: float(memory_mib.get(k, 0.0)) for k in mix._counts}
        return mix

    def observe(self, shape: PodShape, weight: float = 1.0) -> None:
        """Count one more arrival of ``shape`` (the live scheduler's feed)."""
        self._add(shape, weight)
        self._typical = None
        self.version = next(_VERSIONS)

    @property
    def total(self) -> float:
        return float(sum(self._counts.values()))

    def __len__(self) -> int:
        return len(self.typical)

    @property
    def typical(self) -> tuple[tuple[PodKind, float], ...]:
        """(kind, frequency) of the typical pods, most frequent first; frequencies sum to 1."""
        if self._typical is None:
            self._typical = typical_kinds(self._counts, self.coverage)
            self._arrays = None
        return self._typical

    def mean_memory_mib(self, kind: PodKind) -> float:
        """Mean memory request of the pods counted as ``kind`` (memory is not part of a kind)."""
        c = self._counts.get(kind, 0.0)
        return self._memory.get(kind, 0.0) / c if c > 0 else 0.0

    def arrays(self, coverage: float | None = None) -> MixArrays:
        """The typical pods as arrays (cached per version); ``coverage`` overrides the mix's own
        (1.0 keeps every kind counted)."""
        typical = self.typical
        if getattr(self, "_arrays", None) is None:
            self._arrays = {}
        key = self.coverage if coverage is None else coverage
        if key not in self._arrays:
            kinds = typical if key == self.coverage else typical_kinds(self._counts, key)
            self._arrays[key] = MixArrays.of(kinds, self.version, [self.mean_memory_mib(k) for k, _ in kinds])
        return self._arrays[key]


@dataclass(frozen=True)
class MixArrays:
    """Typical pods column-wise, for vectorised scoring."""

    version: int
    kinds: tuple[PodKind, ...]
    cpu_milli: np.ndarray  # int64 [T]
    gpu_milli: np.ndarray  # int64 [T], per GPU (0 = CPU-only)
    gpus: np.ndarray  # int64 [T]
    freq: np.ndarray  # float64 [T], sums to 1
    memory_mib: np.ndarray  # float64 [T]: mean memory of the kind's pods (0 = unknown)

    @classmethod
    def of(cls, typical: tuple[tuple[PodKind, float], ...], version: int,
           memory_mib: list[float] | None = None) -> MixArrays:
        kinds = tuple(k for k, _ in typical)
        return cls(
            version=version,
            kinds=kinds,
            cpu_milli=np.array([k.cpu_milli for k in kinds], dtype=np.int64),
            gpu_milli=np.array([k.gpu_milli for k in kinds], dtype=np.int64),
            gpus=np.array([k.gpus for k in kinds], dtype=np.int64),
            freq=np.array([f for _, f in typical], dtype=np.float64),
            memory_mib=np.array(memory_mib if memory_mib is not None else [0.0] * len(kinds), dtype=np.float64),
        )


def typical_kinds(counts: Mapping[PodKind, float], coverage: float = DEFAULT_COVERAGE) -> tuple[tuple[PodKind, float], ...]:
    """The most frequent kinds covering ``coverage`` of the total, renormalised to sum to 1."""
    total = float(sum(counts.values()))
    if total <= 0:
        return ()
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    want = coverage * total
    kept: list[tuple[PodKind, float]] = []
    cum = 0.0
    for kind, c in ranked:
        if cum >= want:
            break
        kept.append((kind, c))
        cum += c
    return tuple((k, c / cum) for k, c in kept)


def is_shared(kind: PodKind) -> bool:
    return kind.gpus == 1 and 0 < kind.gpu_milli < GPU_MILLI


class ArrivalMix:
    """The mix a live scheduler sees: the pods it is asked to place, counted as they arrive.

    Counts fade with a half-life of ``half_life_pods`` arrivals, so the mix follows a
    workload that changes. Every observation goes into pending counts; a new
    :class:`WorkloadMix` is published (``mix``) when ``publish_every`` pods arrived since the
    last one, or, while the mix is young, when the new pods are a tenth of what it already
    holds (so the first pods count at once, and a big cluster is not re-scored per pod).
    Pods that ask for no GPU count too: they are part of what fragmentation is measured
    against (they see every free GPU as fragment). The mix holds the ``max_kinds`` heaviest
    kinds (every kind is scored for every candidate, so a cluster whose pods ask for hundreds
    of different CPU amounts would otherwise pay for each); four times as many are counted,
    so a new kind can grow into it."""

    def __init__(self, half_life_pods: float = 2000.0, publish_every: int = 100,
                 coverage: float = DEFAULT_COVERAGE, max_kinds: int = 256) -> None:
        if half_life_pods <= 0 or publish_every < 1 or max_kinds < 1:
            raise ValueError("half_life_pods must be > 0, publish_every and max_kinds >= 1")
        self.half_life = float(half_life_pods)
        self.publish_every = int(publish_every)
        self.max_kinds = int(max_kinds)
        self.coverage = coverage
        self._counts: dict[PodKind, float] = {}
        self._memory: dict[PodKind, float] = {}
        self._new: list[tuple[PodKind, int]] = []
        self.observed = 0
        self.published = 0  # how many mixes were published
        self.mix: WorkloadMix | None = None

    @property
    def weight(self) -> float:
        return float(sum(self._counts.values()))

    def observe(self, shape: PodShape) -> bool:
        """Count one arriving pod; True when a new mix was published."""
        self._new.append((PodKind.of(shape), int(shape.memory_mib)))
        self.observed += 1
        n = len(self._new)
        if n >= self.publish_every or n >= 0.1 * self.weight:
            self.publish()
            return True
        return False

    def publish(self) -> None:
        """Fold the pending arrivals in (older counts fade by their age in arrivals) and publish."""
        if not self._new:
            return
        fade = 0.5 ** (len(self._new) / self.half_life)
        for k in self._counts:
            self._counts[k] *= fade
            self._memory[k] *= fade
        for kind, mib in self._new:
            self._counts[kind] = self._counts.get(kind, 0.0) + 1.0
            self._memory[kind] = self._memory.get(kind, 0.0) + mib
        self._new.clear()
        for k in [k for k, c in self._counts.items() if c < 1e-3]:  # faded away
            del self._counts[k], self._memory[k]
        ranked = sorted(self._counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        for k, _ in ranked[4 * self.max_kinds:]:  # bounded memory; a new kind has room to grow
            del self._counts[k], self._memory[k]
        top = dict(ranked[: self.max_kinds])  # scoring cost grows with the kinds: publish the heaviest
        self.mix = WorkloadMix.from_counts(top, self._memory, self.coverage)
        self.published += 1
