"""Fragmentation gradient: prefer the placement that grows the mix's fragmentation least.

For a typical pod kind ``t`` of the arriving mix (``Context.mix``), the fragmentation of a
node is the free GPU milli ``t`` cannot use there; the node's fragmentation ``F`` is the
frequency-weighted sum over kinds, and a candidate scores by its descent ``F(now) -
F(after)``. Two measures:

- ``fgd`` (Weng et al., USENIX ATC'23, "FGD"): ``t`` sees all free GPU milli as fragment
  when it cannot run on the node at all (too little CPU, fewer than ``t.gpus`` GPUs with
  ``t``'s share free, a GPU model it does not accept, or it needs no GPU); else only the
  milli on GPUs whose free share is below ``t``'s. Closed form::

      F = free_total - sum over GPU kinds t of freq_t * [t fits once] * above_t

  with ``above_t`` the free milli on GPUs holding ``t``'s share. The score is the paper's
  integer ``int(sigmoid(descent / 1000) * 100)`` out of 100.
- ``capacity`` (ours, plugin ``fragmentation``): the same, except that a kind can only use
  as many GPUs as the node's free CPU and memory can feed: with ``n_t = min(cpu //
  t.cpu, memory // t.memory)`` pods of ``t``, it uses the ``n_t * t.gpus`` GPUs with the
  most free milli among those holding its share; the rest is fragment. FGD asks "can one
  more pod of t come here"; this asks "how much of this node's GPU can t still fill".
  A node with 8 free GPUs and CPU for 2 more pods is mostly fragment here, not for FGD.

The ``capacity`` plugin also keeps *protection levels* (``protect``, on by default): a
kind whose remaining places in the cluster are about to run out is worth protecting. With
``N_t`` the pods of kind ``t`` the cluster could still take (per node ``min(GPUs holding
t's share // t.gpus, CPU // t.cpu, memory // t.memory)``, summed) and ``E_t`` the pods of
``t`` expected before the free GPU is used up (``freq_t * free GPU milli / mean GPU milli
per arriving pod``, summed over ``t``'s place group: the kinds with the same GPUs that fit
the same node types, see :func:`place_groups`), one place of ``t`` is worth ``t``'s GPU
milli times the chance that ``t`` still needs it, ``P(Poisson(E_t) >= N_t)`` (the
expected-marginal-revenue rule of airline seat protection). A candidate's descent is
lowered by the worth of the places it takes (the dearest kind of each group once; not the
pod's own group, of which it takes a place anywhere). Kinds with plenty of places are
worth ~0 and change nothing; the rare kinds that only a few nodes can host (8-GPU pods of
120 cores, pods that accept one rare model) keep their nodes until their expected
arrivals are covered.

Per decision, in phases: (1) nodes whose free CPU, memory or GPUs changed since the last
decision (read from the snapshot's generations, or found by comparing arrays for a
snapshot not seen before) get their fragmentation recomputed; (2) scores
cached for the pod's kind are reused for unchanged nodes, the others are computed from
the node's state after the placement; (3) the candidates gather their values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins.base import BasePlugin, Candidates, Context, register
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workload_mix import PodKind

NAME = "fragmentation"
NAME_FGD = "fgd"
GPU_MILLI = 1000
MODES = ("fgd", "capacity")


class MixModel:
    """The typical kinds of one mix version, arranged for a given cluster."""

    def __init__(self, mix_arrays: Any, models: tuple[str, ...], mode: str = "fgd") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fragmentation mode {mode!r}; known: {', '.join(MODES)}")
        a = mix_arrays
        self.mode = mode
        self.version = a.version
        gpu = a.gpu_milli > 0  # CPU-only kinds see every free GPU as fragment: they add nothing below
        self.freq = a.freq[gpu].astype(float)
        self.t_cpu = a.cpu_milli[gpu]
        self.t_mem = np.asarray(getattr(a, "memory_mib", np.zeros(len(a.freq))), dtype=float)[gpu]
        self.t_gpus = a.gpus[gpu]
        shares = a.gpu_milli[gpu]
        self.u = np.unique(shares) if len(shares) else np.zeros(0, dtype=np.int64)
        self.t_u = np.searchsorted(self.u, shares)
        kinds = [k for k in a.kinds if k.gpu_milli > 0]
        # access[m, t]: may kind t use GPUs of model m
        self.access = np.array([[not k.models or m in k.models for k in kinds] for m in models],
                               dtype=bool).reshape(len(models), len(kinds))
        # integer divisors for "how many pods of t fit": CPU, and memory where the kind's memory
        # is known (1 MiB otherwise, which never binds before CPU does)
        self.t_cpu_div = np.maximum(self.t_cpu, 1)
        self.t_mem_div = np.maximum(np.ceil(self.t_mem), 1).astype(np.int64)

    def frag(self, model_id: np.ndarray, cpu: np.ndarray, mem: np.ndarray, gpu_free: np.ndarray) -> np.ndarray:
        """Node fragmentation F (milli-GPU) per row of (model, free CPU, free memory, free GPUs).

        F depends on the GPUs' free milli as a multiset, so many rows are the same state
        (idle nodes, a shared pod on equally free GPUs): large batches are evaluated once
        per distinct state."""
        if len(gpu_free) < 64:
            return self._frag(model_id, cpu, mem, gpu_free)
        key = np.empty((len(gpu_free), gpu_free.shape[1] + 3), dtype=np.int64)
        key[:, 0], key[:, 1], key[:, 2] = model_id, cpu, mem if self.mode != "fgd" else 0
        key[:, 3:] = np.sort(gpu_free, axis=1)
        rows = np.ascontiguousarray(key).view(np.dtype((np.void, key.itemsize * key.shape[1]))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        if len(first) > 0.7 * len(rows):
            return self._frag(model_id, cpu, mem, gpu_free)
        u = key[first]
        return self._frag(u[:, 0], u[:, 1], u[:, 2], u[:, 3:])[inverse.ravel()]

    def _frag(self, model_id: np.ndarray, cpu: np.ndarray, mem: np.ndarray, gpu_free: np.ndarray) -> np.ndarray:
        free = np.maximum(gpu_free, 0)
        total = free.sum(axis=1)
        if not len(self.freq):
            return total.astype(float)
        fit = (free[:, :, None] >= self.u).sum(axis=1)[:, self.t_u]  # [R, T]: GPUs holding the kind's share
        if self.mode == "fgd":
            above = (free[:, :, None] * (free[:, :, None] >= self.u)).sum(axis=1)[:, self.t_u]
            ok = self.access[model_id] & (fit >= self.t_gpus) & (cpu[:, None] >= self.t_cpu)
            return total - (ok * above) @ self.freq
        pods = np.minimum(cpu[:, None] // self.t_cpu_div, mem[:, None] // self.t_mem_div)
        ok = self.access[model_id] & (fit >= self.t_gpus)  # no pod fits: 0 GPUs used below
        # the GPUs holding a share are the largest ones: a kind fills the n*gpus largest of them,
        # i.e. all free milli but that of the G - n*gpus smallest GPUs
        g = free.shape[1]
        smallest = np.zeros((len(free), g + 1), dtype=np.int64)
        np.cumsum(np.sort(free, axis=1), axis=1, out=smallest[:, 1:])
        used = np.minimum(fit, pods * self.t_gpus)
        usable = total[:, None] - smallest[np.arange(len(free))[:, None], g - used]
        return total - (ok * usable) @ self.freq


class NodeStats:
    """Per-node fragmentation of the free state, recomputed lazily for nodes that changed."""

    def __init__(self, model: MixModel, snap: Snapshot) -> None:
        self.model = model
        self.arrays = snap.arrays
        self.cpu = snap.free_cpu.copy()
        self.mem = snap.free_mem.copy()
        self.gpu_free = snap.gpu_free.copy()
        self._frag = model.frag(snap.arrays.model_id, self.cpu, self.mem, self.gpu_free)
        self.dirty = np.zeros(snap.n_nodes, dtype=bool)
        self.version = np.zeros(snap.n_nodes, dtype=np.int64)
        self._next = 1
        self._seen = (snap, snap.gen)  # the snapshot last read, and its generation then

    @property
    def frag(self) -> np.ndarray:
        """F per node of the current state."""
        if self.dirty.any():
            self._recompute(np.flatnonzero(self.dirty))
        return self._frag

    def refresh(self, snap: Snapshot) -> None:
        """Find the nodes whose free CPU, memory or GPUs differ from what was seen last; update
        them. The snapshot read last time tells by its generations (``Snapshot.apply``); any
        other is compared array by array."""
        last, gen = self._seen
        if snap is last:
            if snap.gen == gen:
                return
            idx = np.flatnonzero(snap.node_gen > gen)
        else:
            changed = (snap.gpu_free != self.gpu_free).any(axis=1)
            changed |= snap.free_cpu != self.cpu
            changed |= snap.free_mem != self.mem
            idx = np.flatnonzero(changed)
        self._seen = (snap, snap.gen)
        if len(idx):
            self.update(snap, idx)

    def update(self, snap: Snapshot, idx: np.ndarray) -> None:
        """Re-read nodes ``idx`` (known to have changed) from ``snap``; F is recomputed when needed."""
        self.cpu[idx] = snap.free_cpu[idx]
        self.mem[idx] = snap.free_mem[idx]
        self.gpu_free[idx] = snap.gpu_free[idx]
        self.dirty[idx] = True
        self.version[idx] = np.arange(self._next, self._next + len(idx))
        self._next += len(idx)

    def _recompute(self, idx: np.ndarray) -> None:
        self._frag[idx] = self.model.frag(self.arrays.model_id[idx], self.cpu[idx], self.mem[idx], self.gpu_free[idx])
        self.dirty[idx] = False

    def descent(self, shape: PodShape, nodes: np.ndarray) -> np.ndarray:
        """F(now) - F(after) for ``shape`` on each of ``nodes``: [K], or [K, G] for a shared pod
        (one value per GPU; -inf where the GPU lacks the share). Whole GPUs are taken lowest
        index first; which ones does not matter to F. Changed nodes' F(now) is computed in the
        same call as F(after)."""
        gf = self.gpu_free[nodes]
        if shape.is_shared:
            rows, gpus = np.nonzero(gf >= shape.gpu_milli)
            after = gf[rows]
            after[np.arange(len(rows)), gpus] -= shape.gpu_milli
        else:
            rows = np.arange(len(nodes))
            after = gf
            if shape.gpus:
                full = gf == GPU_MILLI
                after = np.where(full & (np.cumsum(full, axis=1) <= shape.gpus), 0, gf)
        stale = np.flatnonzero(self.dirty[nodes])
        at = nodes[rows]
        both = np.concatenate([at, nodes[stale]])
        values = self.model.frag(self.arrays.model_id[both],
                                 np.concatenate([self.cpu[at] - shape.cpu_milli, self.cpu[nodes[stale]]]),
                                 np.concatenate([self.mem[at] - shape.memory_mib, self.mem[nodes[stale]]]),
                                 np.concatenate([after, gf[stale]]))
        if len(stale):
            self._frag[nodes[stale]] = values[len(rows):]
            self.dirty[nodes[stale]] = False
        d = self._frag[at] - values[:len(rows)]
        if not shape.is_shared:
            return d
        out = np.full(gf.shape, -np.inf)
        out[rows, gpus] = d
        return out


_LOG_FACT = np.zeros(1)


def _log_factorial(upto: int) -> np.ndarray:
    """log(i!) for i = 0..upto (grown on demand, shared)."""
    global _LOG_FACT
    if len(_LOG_FACT) <= upto:
        n = max(upto + 1, 2 * len(_LOG_FACT))
        _LOG_FACT = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n)))))
    return _LOG_FACT


def poisson_tail(n: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """P(X >= n) for X ~ Poisson(lam), elementwise (n integer, lam >= 0).

    Terms more than ``10 sqrt(lam) + 30`` from ``n`` are below double precision and are
    skipped, so the cost does not grow with ``n``."""
    n = np.asarray(n, dtype=np.int64)
    lam = np.asarray(lam, dtype=float)
    out = np.where(n <= 0, 1.0, 0.0)
    width = np.ceil(10.0 * np.sqrt(lam)).astype(np.int64) + 30
    live = np.flatnonzero((n > 0) & (lam > 0) & (n <= lam + width))
    if not len(live):
        return out
    nn, ll, ww = n[live], lam[live], width[live]
    below = nn <= ll  # sum the head below n and take 1 - head; else sum the tail from n on
    lo = np.where(below, np.maximum(nn - ww, 0), nn)
    hi = np.where(below, nn, nn + ww)
    span = int((hi - lo).max())
    i = lo[:, None] + np.arange(span)[None, :]
    lf = _log_factorial(int(i.max()))
    terms = np.exp(i * np.log(ll)[:, None] - ll[:, None] - lf[i]) * (i < hi[:, None])
    s = terms.sum(axis=1)
    out[live] = np.clip(np.where(below, 1.0 - s, s), 0.0, 1.0)
    return out


def place_groups(model: MixModel, arrays: Any) -> np.ndarray:
    """Group id per GPU kind of ``model``: kinds that take the same GPUs (count and share)
    and fit the same node types (model, GPUs, CPU and memory of an empty node) compete for
    the same places, so their expected arrivals are pooled when their places are priced.

    Two 8-GPU kinds of 120 cores that differ in memory, say, both fit only the 128-core
    nodes: each alone expects fewer pods than there are such nodes, together more."""
    shapes = np.unique(np.stack([arrays.model_id, arrays.gpu_count, arrays.cpu_milli, arrays.memory_mib], axis=1),
                       axis=0)
    fits = (model.access[shapes[:, 0]]
            & (shapes[:, 1, None] >= np.maximum(model.t_gpus, 1))
            & (shapes[:, 2, None] >= model.t_cpu)
            & (shapes[:, 3, None] >= model.t_mem))  # [node shapes, kinds]
    ids: dict[tuple, int] = {}
    out = np.zeros(len(model.t_gpus), dtype=np.int64)
    for t in range(len(out)):
        key = (int(model.t_gpus[t]), int(model.t_u[t]), fits[:, t].tobytes())
        out[t] = ids.setdefault(key, len(ids))
    return out


class Protection:
    """Protection levels: the worth (milli-GPU) of one more place of each GPU kind of the mix.

    Keeps ``slots[n, t]`` (pods of kind ``t`` node ``n`` could still take) for the nodes
    :class:`NodeStats` saw change, and their column sums ``N``; ``group`` and
    ``pooled_rate`` are the kinds' place groups and the expected arrivals per milli-GPU of
    each kind's group (:func:`place_groups`)."""

    CUTOFF_MILLI = 1.0  # kinds whose place is worth less than this are left out of a decision
    LOG_CUTOFF = 0.0  # log(CUTOFF_MILLI)

    def __init__(self, mix_arrays: Any, stats: NodeStats) -> None:
        a = mix_arrays
        model = stats.model
        gpu = a.gpu_milli > 0
        self.stats = stats
        self.t_cpu, self.t_mem, self.t_gpus = model.t_cpu_div, model.t_mem_div, model.t_gpus
        self.u, self.t_u, self.access = model.u, model.t_u, model.access
        self.u_div = np.maximum(self.u, 1)
        self.demand = (a.gpus * a.gpu_milli)[gpu].astype(float)  # GPU milli per pod of the kind
        self.column = {k: i for i, k in enumerate(k for k in a.kinds if k.gpu_milli > 0)}
        self.log_demand = np.log(np.maximum(self.demand, 1e-300))
        # expected pods of kind t per milli-GPU that arrives: freq_t / mean GPU milli per pod
        mean = float((a.freq * a.gpus * a.gpu_milli).sum())
        self.rate = a.freq[gpu] / mean if mean > 0 else np.zeros(int(gpu.sum()))
        # kinds that compete for the same places share their expected arrivals (see place_groups)
        self.group = place_groups(model, stats.arrays)
        self.pooled_rate = np.bincount(self.group, weights=self.rate, minlength=len(self.rate))[self.group] \
            if len(self.rate) else self.rate
        self.seen = np.full(len(stats.version), -1, dtype=np.int64)
        self.slots = np.zeros((len(stats.version), len(self.demand)), dtype=np.int64)
        self.total = np.zeros(len(self.demand), dtype=np.int64)
        self.node_free = np.zeros(len(stats.version), dtype=np.int64)  # free GPU milli per node
        self.free_milli = 0

    def places(self, model_id: np.ndarray, cpu: np.ndarray, mem: np.ndarray, gpu_free: np.ndarray,
               kinds: np.ndarray | None = None) -> np.ndarray:
        """Pods of each kind (all, or the columns ``kinds``) each row's (model, CPU, memory,
        GPUs) could take."""
        free = np.maximum(gpu_free, 0)
        if kinds is None:  # share-sized pieces per distinct share, then per kind
            pieces = (free[:, :, None] // self.u_div).sum(axis=1)[:, self.t_u]
            gpus, t_cpu, t_mem, access = self.t_gpus, self.t_cpu, self.t_mem, self.access[model_id]
        else:
            pieces = (free[:, :, None] // self.u_div[self.t_u[kinds]]).sum(axis=1)
            gpus, t_cpu, t_mem = self.t_gpus[kinds], self.t_cpu[kinds], self.t_mem[kinds]
            access = self.access[model_id[:, None], kinds[None, :]]
        n = np.minimum(pieces // gpus, np.minimum(cpu[:, None] // t_cpu, mem[:, None] // t_mem))
        return np.maximum(n, 0) * access

    def sync(self) -> None:
        st = self.stats
        changed = np.flatnonzero(self.seen != st.version)
        if len(changed):
            gpu_free = st.gpu_free[changed]
            new = self.places(st.arrays.model_id[changed], st.cpu[changed], st.mem[changed], gpu_free)
            self.total += (new - self.slots[changed]).sum(axis=0)
            self.slots[changed] = new
            node_free = np.maximum(gpu_free, 0).sum(axis=1)
            self.free_milli += int(node_free.sum() - self.node_free[changed].sum())
            self.node_free[changed] = node_free
            self.seen[changed] = st.version[changed]

    def worth(self, skip: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(kinds, worth of one place of each): ``demand * P(Poisson(E) >= N)``, for the kinds
        whose worth can reach the cutoff, leaving out the place group of kind ``skip``."""
        lam = self.pooled_rate * self.free_milli
        n = np.maximum(self.total, 1)
        # Chernoff: P(X >= n) <= exp(n - lam + n log(lam / n)) for n > lam; keep what may reach the cutoff
        bound = np.where(n > lam, n - lam + n * np.log(np.maximum(lam, 1e-300) / n), 0.0)
        live = np.flatnonzero((bound + self.log_demand >= self.LOG_CUTOFF) & (self.total > 0))  # 0 places: none to lose
        if skip >= 0:
            live = live[self.group[live] != self.group[skip]]
        if not len(live):
            return live, np.zeros(0)
        worth = self.demand[live] * poisson_tail(self.total[live], lam[live])
        keep = worth >= self.CUTOFF_MILLI
        return live[keep], worth[keep]

    def penalty(self, shape: PodShape, cand: Candidates) -> np.ndarray | None:
        """Worth of the places each candidate takes (milli-GPU), or None when nothing is scarce."""
        own = self.column.get(PodKind.of(shape), -1)  # a pod takes a place of its own group wherever it goes
        if len(self.demand) - (own >= 0) <= 0:
            return None
        self.sync()
        hot, worth = self.worth(skip=own)
        if not len(hot):
            return None
        st = self.stats
        hot_slots = self.slots[:, hot]
        holds = hot_slots.any(axis=1)  # a node with no place of a hot kind loses none
        rows = np.flatnonzero(holds[cand.node])
        out = np.zeros(len(cand))
        if len(rows):
            nodes = cand.node[rows]
            after = self.places(st.arrays.model_id[nodes], st.cpu[nodes] - shape.cpu_milli,
                                st.mem[nodes] - shape.memory_mib, cand.gpu_after[rows], hot)
            lost = (hot_slots[nodes] - after) * worth
            groups = self.group[hot]
            if len(np.unique(groups)) == len(groups):
                out[rows] = lost.sum(axis=1)
            else:  # kinds of one group lose the same places: count the dearest of them once
                order = np.argsort(groups, kind="stable")
                g = groups[order]
                starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
                out[rows] = np.maximum.reduceat(lost[:, order], starts, axis=1).sum(axis=1)
        return out


class Fragmentation(BasePlugin):
    """Score = descent of the mix's fragmentation, mapped into 0..1.

    ``levels`` > 0 rounds the score down to ``1/levels`` steps (the FGD paper uses 100), so
    that placements whose descents differ by a few milli tie and the tie-break decides.
    ``protect`` lowers each descent by the worth of the scarce places it takes
    (:class:`Protection`)."""

    mode = "capacity"
    protect = True

    def __init__(self, levels: int = 100, scale_milli: float = 1000.0, mode: str | None = None,
                 coverage: float | None = 1.0, protect: bool | None = None) -> None:
        self.levels = int(levels)
        if protect is not None:
            self.protect = bool(protect)
        self.scale = float(scale_milli)
        if mode is not None:
            self.mode = mode
        # the kinds scored against: 1.0 = every kind of the mix; None = the mix's typical pods
        self.coverage = coverage
        self._stats: NodeStats | None = None
        self._protection: Protection | None = None
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # kind -> (node version seen, descents, scores)

    def prepare(self, shape: PodShape, snap: Snapshot, ctx: Context) -> Any:
        mix = ctx.mix
        if mix is None or not len(mix):
            return None
        st = self._stats
        if st is None or st.arrays is not snap.arrays or st.model.version != mix.version:
            arrays = mix.arrays(self.coverage)
            st = self._stats = NodeStats(MixModel(arrays, snap.arrays.models, self.mode), snap)
            self._protection = Protection(arrays, st) if self.protect else None
            self._cache.clear()
        else:
            st.refresh(snap)
        return st

    def score(self, shape: PodShape, snap: Snapshot, cand: Candidates, state: Any) -> np.ndarray | None:
        if state is None or not len(cand):
            return None
        penalty = self._protection.penalty(shape, cand) if self._protection is not None else None
        if penalty is None:
            return self.cached_scores(shape, cand, state)
        return self.transform(self.cached_scores(shape, cand, state, raw=True) - penalty)

    def cached_scores(self, shape: PodShape, cand: Candidates, st: NodeStats, raw: bool = False) -> np.ndarray:
        """Score per candidate (``raw``: its descent), from the per-kind cache (phases 2 and 3)."""
        key = (shape.cpu_milli, shape.memory_mib, shape.gpus, shape.gpu_milli if shape.gpus else 0, shape.gpu_models)
        hit = self._cache.get(key)
        if hit is None:
            n = len(st.version)
            width = st.gpu_free.shape[1] if shape.is_shared else None
            size = (n, width) if width else n
            hit = (np.full(n, -1, dtype=np.int64), np.zeros(size), np.zeros(size))
            self._cache[key] = hit
        seen, descents, scores = hit
        nodes = cand.node
        if shape.is_shared and len(nodes) > 1:  # candidates come grouped by node
            nodes = nodes[np.concatenate(([True], nodes[1:] != nodes[:-1]))]
        stale = nodes[seen[nodes] != st.version[nodes]]
        if len(stale):
            descents[stale] = st.descent(shape, stale)
            scores[stale] = self.transform(descents[stale])
            seen[stale] = st.version[stale]
        values = descents if raw else scores
        if shape.is_shared:
            gpu = cand.gpu if cand.gpu is not None else np.array([g[0] for g in cand.gpus], dtype=np.int64)
            return values[cand.node, gpu]
        return values[cand.node]

    def transform(self, descent: np.ndarray) -> np.ndarray:
        # descents equal in exact arithmetic must give equal scores: round away float noise
        sig = 1.0 / (1.0 + np.exp(-np.round(descent, 6) / self.scale))
        return np.floor(sig * self.levels) / self.levels if self.levels > 0 else sig


class FgdScore(Fragmentation):
    """The paper's score: ``int(sigmoid(descent / 1000) * 100)``, as a fraction of 100."""

    mode = "fgd"
    protect = False

    def __init__(self) -> None:
        super().__init__(levels=100, scale_milli=1000.0, coverage=None)


register(NAME)(Fragmentation)
register(NAME_FGD)(FgdScore)


def node_fragmentation(snap: Snapshot, mix: Any, mode: str = "fgd") -> np.ndarray:
    """Fragmentation F (milli-GPU) of every node of ``snap`` for the typical pods of ``mix``."""
    return NodeStats(MixModel(mix.arrays(), snap.arrays.models, mode), snap).frag
