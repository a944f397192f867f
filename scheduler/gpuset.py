"""The exact GPU set inside one node: which free GPUs a pod gets.

Pure functions over a ``NodeTypeArrays`` and a free mask; no I/O. Three policies:

``best-effort`` (default) ranks every feasible set ``S`` (size ``k``, inside the free
set ``F``, holding every required GPU) by this key, first difference wins:

1. **Partition value** ``score(S) + best(F - S)``: the set's own link score plus the best
   total score the GPUs left free can still reach when split into further groups of
   ``k`` (one smaller group takes the remainder). This is the go-gpuallocator
   best-effort objective: a set that wrecks the neighbours' links loses to one that
   leaves the rest well connected.
2. **Set score** ``score(S)``: among equally good partitions, this pod gets the best
   links. (Upstream returns the best group of the *first* best partition it finds, so
   it can hand out a weaker set than an equally good partition offers; see
   docs/gpu-sets.md.)
3. **NUMA/NIC locality** ``numa_nic_score(S)``.
4. **NUMA best fit**: fewest free GPUs left on the NUMA nodes ``S`` touches, so whole
   sockets stay free.
5. **Island best fit**: fewest free GPUs left in the NVLink islands ``S`` touches.
6. **Lowest indices** (the lexicographically first sorted tuple).

Scores are go-gpuallocator pair weights (``NodeTypeArrays.pair_weight``: PCIe relation
weight plus 100 per NVLink); ``score(S)`` sums them over the unordered pairs of ``S``.

How a call is answered (phases):

- *Uniform* node types (NVSwitch or any full mesh with the same NVLink count on every
  pair): every set is equal on links, so steps 1-2 are skipped and the set is built in
  O(n log n) from NUMA nodes (largest share on one socket, best fit, NIC-local GPUs
  first, lowest index).
- *Exact* (up to ``EXACT_MAX_GPUS`` GPUs): per node type and size, computed once and
  cached: every size-``k`` subset as a bitmask with its score and locality, and the
  best partition value of every subset of the node (a DP over ``2^n`` masks). A call
  is a vectorised filter over at most ``C(n, k)`` bitmasks (70 on 8 GPUs) and a lookup.
- *Ranked* (up to ``RANKED_MAX_SETS`` subsets, e.g. any size on 16 GPUs): as exact but
  without step 1 (the DP would cost seconds); steps 2-6 still apply.
- *Greedy* (beyond that): from every free GPU (or from the required GPUs) grow the set
  by the GPU with the highest summed weight to it; the best result by steps 2-6 wins.

``static-dgx``: fixed groups per size (``static_groups``), the best partition of the
whole node into groups of ``k`` (``k`` must divide the GPU count); a request takes the
first listed group that is free and holds the required GPUs. On DGX-1 and DGX-2 this
reproduces go-gpuallocator's static DGX tables.

``simple``: the required GPUs, then the lowest free indices.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import comb

import numpy as np

from models.topology import NodeTypeArrays

POLICIES = ("best-effort", "static-dgx", "simple")
EXACT_MAX_GPUS = 10  # partition DP over 2^n masks: ~1k masks, built in well under a second
RANKED_MAX_SETS = 12_870  # C(16, 8): every size on a 16-GPU node stays ranked
_MASK_MAX_GPUS = 62  # subsets are int64 bitmasks


# ---------------------------------------------------------------------------- public API


def choose_gpus(
    t: NodeTypeArrays,
    free: np.ndarray | Sequence[bool] | int,
    size: int,
    required: Iterable[int] = (),
    policy: str = "best-effort",
) -> tuple[int, ...] | None:
    """The GPUs (sorted local indices) a request of ``size`` gets, or None if impossible.

    ``free`` is a boolean mask of length ``t.n_gpus`` or an int bitmask (bit i = GPU i
    free). Every GPU in ``required`` must be free and is always part of the answer.
    ``size`` 0 gives ``()``.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    n = t.n_gpus
    free_bits = _free_bits(free, n)
    req = _required_bits(required, n)
    if size == 0:
        return () if req == 0 else None
    if req & ~free_bits or req.bit_count() > size or free_bits.bit_count() < size:
        return None
    if policy == "simple":
        return _simple(free_bits, req, size, n)
    if policy == "static-dgx":
        return _static(t, free_bits, req, size)
    cache = _cache(t)
    if cache.uniform:
        return _uniform(cache, free_bits, req, size)
    if n <= _MASK_MAX_GPUS and comb(n, size) <= RANKED_MAX_SETS:
        return _ranked(cache, _table(cache, size), free_bits, req)
    return _greedy(cache, free_bits, req, size)


def set_score(t: NodeTypeArrays, gpus: Iterable[int]) -> int:
    """Sum of pair weights over the unordered pairs of ``gpus`` (go-gpuallocator score)."""
    idx = np.fromiter(gpus, dtype=np.int64)
    if len(idx) < 2:
        return 0
    return int(t.pair_weight[np.ix_(idx, idx)].sum()) // 2


def best_set_score(t: NodeTypeArrays, size: int) -> int:
    """The highest ``set_score`` any ``size`` GPUs of this node type reach (0 if none)."""
    if size < 2 or size > t.n_gpus:
        return 0
    cache = _cache(t)
    if cache.uniform:
        return set_score(t, _uniform(cache, (1 << t.n_gpus) - 1, 0, size) or ())
    if t.n_gpus <= _MASK_MAX_GPUS and comb(t.n_gpus, size) <= RANKED_MAX_SETS:
        return int(_table(cache, size).scores.max())
    return set_score(t, _greedy(cache, (1 << t.n_gpus) - 1, 0, size) or ())


def numa_nic_score(t: NodeTypeArrays, gpus: Iterable[int]) -> float:
    """NUMA and NIC locality of a GPU set, 0..1 (1 = one NUMA node, a local NIC for each).

    Mean of two shares: the largest share of the set on one NUMA node, and the share of
    its GPUs that have a local NIC. A node type whose spec links no NIC to any GPU
    scores on NUMA alone. The empty set scores 1.
    """
    idx = np.fromiter(gpus, dtype=np.int64)
    if len(idx) == 0:
        return 1.0
    numa_share = np.bincount(t.numa[idx].astype(np.int64)).max() / len(idx)
    if not (t.nic_gbps > 0).any():
        return float(numa_share)
    nic_share = float((t.nic_gbps[idx] > 0).sum()) / len(idx)
    return float((numa_share + nic_share) / 2.0)


def island_of(t: NodeTypeArrays, gpus: Iterable[int]) -> int | None:
    """Index in ``t.islands`` of the NVLink island holding all of ``gpus``; None if they span islands."""
    cache = _cache(t)
    found: int | None = None
    for g in gpus:
        isl = int(cache.island[int(g)])
        if found is None:
            found = isl
        elif isl != found:
            return None
    return found


def static_groups(t: NodeTypeArrays, size: int) -> tuple[tuple[int, ...], ...] | None:
    """Fixed groups of the ``static-dgx`` policy for ``size``; None if ``size`` does not divide the GPU count.

    The best partition of the whole node into groups of ``size`` (highest total score,
    ties to the lexicographically first partition), listed by lowest GPU.
    """
    n = t.n_gpus
    if size <= 0 or n == 0 or n % size:
        return None
    cache = _cache(t)
    key = ("static", size)
    if key not in cache.extra:
        cache.extra[key] = _static_partition(cache, size)
    return cache.extra[key]


def mask_of(gpus: Iterable[int]) -> int:
    """Int bitmask of GPU indices (bit i = GPU i)."""
    bits = 0
    for g in gpus:
        bits |= 1 << int(g)
    return bits


def gpus_of(bits: int) -> tuple[int, ...]:
    """Sorted GPU indices of an int bitmask."""
    out = []
    while bits:
        low = bits & -bits
        out.append(low.bit_length() - 1)
        bits ^= low
    return tuple(out)


# ---------------------------------------------------------------- per node type caches


@dataclass
class _SizeTable:
    """Every size-k subset of one node type, lexicographic order (first = lowest indices)."""

    masks: np.ndarray  # int64 [C]
    scores: np.ndarray  # int64 [C]
    numa_nic: np.ndarray  # float64 [C]
    numa_reach: np.ndarray  # int64 [C]: GPUs of the NUMA nodes the set touches
    island_reach: np.ndarray  # int64 [C]: GPUs of the NVLink islands the set touches
    rest: np.ndarray | None  # int64 [2^n]: best partition value of every mask (exact path)


@dataclass
class _TypeCache:
    t: NodeTypeArrays
    weight: np.ndarray  # int64 [G, G]
    numa_ids: np.ndarray  # int64 [G]: dense NUMA id
    numa_masks: tuple[int, ...]  # GPUs of each dense NUMA id
    island: np.ndarray  # int64 [G]: index in t.islands
    island_masks: tuple[int, ...]
    has_nic: np.ndarray  # bool [G]
    any_nic: bool
    uniform: bool
    tables: dict[int, _SizeTable] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


_CACHES: dict[int, _TypeCache] = {}


def _cache(t: NodeTypeArrays) -> _TypeCache:
    """The precomputation of one node type, keyed on the object's identity."""
    hit = _CACHES.get(id(t))
    if hit is not None and hit.t is t:
        return hit
    n = t.n_gpus
    _, numa_ids = np.unique(np.asarray(t.numa, dtype=np.int64), return_inverse=True)
    numa_ids = numa_ids.astype(np.int64).reshape(n)
    numa_masks = tuple(mask_of(np.flatnonzero(numa_ids == j)) for j in range(int(numa_ids.max(initial=-1)) + 1))
    island = np.zeros(n, dtype=np.int64)
    for i, members in enumerate(t.islands):
        island[list(members)] = i
    off = ~np.eye(n, dtype=bool)
    nvl = np.asarray(t.nvlinks)[off]
    uniform = n <= 1 or bool(nvl.min() > 0 and nvl.min() == nvl.max())
    cache = _TypeCache(
        t=t,
        weight=np.asarray(t.pair_weight, dtype=np.int64),
        numa_ids=numa_ids,
        numa_masks=numa_masks,
        island=island,
        island_masks=tuple(mask_of(m) for m in t.islands),
        has_nic=np.asarray(t.nic_gbps) > 0,
        any_nic=bool((np.asarray(t.nic_gbps) > 0).any()),
        uniform=uniform,
    )
    _CACHES[id(t)] = cache
    weakref.finalize(t, _CACHES.pop, id(t), None)
    return cache


def _table(cache: _TypeCache, k: int) -> _SizeTable:
    """Size-k subsets of a node type with scores and locality (built once, then cached)."""
    table = cache.tables.get(k)
    if table is not None:
        return table
    n = cache.t.n_gpus
    combos = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    member = np.zeros((len(combos), n), dtype=np.int64)
    np.put_along_axis(member, combos, 1, axis=1)
    masks = member @ (np.int64(1) << np.arange(n, dtype=np.int64))
    scores = ((member @ cache.weight) * member).sum(axis=1) // 2
    numa_nic = np.array([_numa_nic(cache, row) for row in combos], dtype=np.float64)
    numa_reach = _reach(member, cache.numa_ids, cache.numa_masks)
    island_reach = _reach(member, cache.island, cache.island_masks)
    rest = _partition_values(cache, k) if n <= EXACT_MAX_GPUS else None
    table = _SizeTable(masks, scores, numa_nic, numa_reach, island_reach, rest)
    cache.tables[k] = table
    return table


def _reach(member: np.ndarray, group_of: np.ndarray, group_masks: tuple[int, ...]) -> np.ndarray:
    """Per subset: union bitmask of the groups (NUMA nodes, islands) its GPUs belong to."""
    if not group_masks:
        return np.zeros(len(member), dtype=np.int64)
    onehot = np.zeros((len(group_of), len(group_masks)), dtype=np.int64)
    onehot[np.arange(len(group_of)), group_of] = 1
    touched = (member @ onehot) > 0
    gm = np.array(group_masks, dtype=np.int64)
    return np.bitwise_or.reduce(np.where(touched, gm, 0), axis=1)


def _numa_nic(cache: _TypeCache, gpus: np.ndarray) -> float:
    numa_share = np.bincount(cache.numa_ids[gpus]).max() / len(gpus)
    if not cache.any_nic:
        return float(numa_share)
    return float((numa_share + cache.has_nic[gpus].sum() / len(gpus)) / 2.0)


def _partition_values(cache: _TypeCache, k: int) -> np.ndarray:
    """Best partition value of every mask: groups of k plus one remainder group.

    DP over masks in increasing order: the group holding the lowest GPU of a mask is
    either a full group (k GPUs) or the remainder group (``popcount % k`` GPUs, only
    while one is still owed); the rest of the mask is a smaller, solved mask.
    """
    n = cache.t.n_gpus
    full = 1 << n
    bits = ((np.arange(full, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(np.int64)
    subset_score = ((bits @ cache.weight) * bits).sum(axis=1) // 2
    s = subset_score.tolist()
    value = [0] * full
    for mask in range(1, full):
        low = mask & -mask
        others = gpus_of(mask ^ low)
        m = len(others) + 1
        sizes = {k} if m >= k else set()
        if m % k:
            sizes.add(m % k)
        best = -1
        for g in sizes:
            for combo in itertools.combinations(others, g - 1):
                grp = low
                for c in combo:
                    grp |= 1 << c
                v = s[grp] + value[mask ^ grp]
                if v > best:
                    best = v
        value[mask] = best
    return np.array(value, dtype=np.int64)


# ---------------------------------------------------------------------- best-effort paths


def _ranked(cache: _TypeCache, table: _SizeTable, free_bits: int, req: int) -> tuple[int, ...] | None:
    """Exact / ranked path: filter the precomputed subsets, then apply the ranking key."""
    masks = table.masks
    ok = ((masks & ~np.int64(free_bits)) == 0) & ((masks & np.int64(req)) == req)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return None
    if table.rest is not None:
        total = table.scores[idx] + table.rest[free_bits & ~masks[idx]]
        idx = idx[total == total.max()]
    if len(idx) > 1:
        sc = table.scores[idx]
        idx = idx[sc == sc.max()]
    if len(idx) > 1:
        nn = table.numa_nic[idx]
        idx = idx[nn >= nn.max() - 1e-12]
    if len(idx) > 1:
        best, best_key = int(idx[0]), None
        for i in idx.tolist():
            mask = int(masks[i])
            key = (-(free_bits & int(table.numa_reach[i]) & ~mask).bit_count(),
                   -(free_bits & int(table.island_reach[i]) & ~mask).bit_count())
            if best_key is None or key > best_key:
                best, best_key = i, key
        return gpus_of(int(masks[best]))
    return gpus_of(int(masks[int(idx[0])]))


def _uniform(cache: _TypeCache, free_bits: int, req: int, k: int) -> tuple[int, ...] | None:
    """All pairs equal on links: fill from the NUMA node that can hold most of the set.

    Phase 1 picks the home NUMA node: the largest share of the set it can hold (GPUs
    required elsewhere count against it), then the best fit (fewest free GPUs), then
    the lowest id. Phase 2 takes the required GPUs, then home GPUs (NIC-local first,
    then lowest index), then the other NUMA nodes in the same order of preference.
    """
    if free_bits.bit_count() < k:
        return None
    chosen = req
    need = k - req.bit_count()
    left = [(free_bits & nm & ~req) for nm in cache.numa_masks]
    req_in = [(req & nm).bit_count() for nm in cache.numa_masks]

    def pick(j: int, count: int) -> int:
        pool = sorted(gpus_of(left[j]), key=lambda g: (not cache.has_nic[g], g))
        got = 0
        for g in pool[:count]:
            got |= 1 << g
        return got

    order = list(range(len(left)))
    home = min(order, key=lambda j: (-min(req_in[j] + left[j].bit_count(), k - (req.bit_count() - req_in[j])),
                                     left[j].bit_count(), j))
    take = min(need, left[home].bit_count())
    chosen |= pick(home, take)
    need -= take
    rest = [j for j in order if j != home]
    while need > 0:
        fits = [j for j in rest if left[j].bit_count() >= need]
        j = min(fits, key=lambda j: (left[j].bit_count(), j)) if fits else \
            min(rest, key=lambda j: (-left[j].bit_count(), j))
        take = min(need, left[j].bit_count())
        chosen |= pick(j, take)
        need -= take
        rest.remove(j)
    return gpus_of(chosen)


def _greedy(cache: _TypeCache, free_bits: int, req: int, k: int) -> tuple[int, ...] | None:
    """Large non-uniform nodes: grow a set from every seed by best summed weight."""
    n = cache.t.n_gpus
    free_idx = np.array(gpus_of(free_bits), dtype=np.int64)
    seeds = [gpus_of(req)] if req else [(int(g),) for g in free_idx]
    best: tuple[int, ...] | None = None
    best_key: tuple | None = None
    for seed in seeds:
        inset = np.zeros(n, dtype=bool)
        inset[list(seed)] = True
        gain = cache.weight[:, list(seed)].sum(axis=1)
        for _ in range(k - len(seed)):
            cand = free_idx[~inset[free_idx]]
            g = int(cand[np.argmax(gain[cand])])  # first max = lowest index
            inset[g] = True
            gain = gain + cache.weight[:, g]
        gpus = tuple(int(g) for g in np.flatnonzero(inset))
        mask = mask_of(gpus)
        numa_reach = 0
        island_reach = 0
        for g in gpus:
            numa_reach |= cache.numa_masks[int(cache.numa_ids[g])]
            island_reach |= cache.island_masks[int(cache.island[g])]
        key = (set_score(cache.t, gpus), round(_numa_nic(cache, np.array(gpus)), 12),
               -(free_bits & numa_reach & ~mask).bit_count(), -(free_bits & island_reach & ~mask).bit_count(),
               tuple(-g for g in gpus))
        if best_key is None or key > best_key:
            best, best_key = gpus, key
    return best


# ------------------------------------------------------------------- other policies


def _simple(free_bits: int, req: int, k: int, n: int) -> tuple[int, ...]:
    chosen = req
    for g in range(n):
        if chosen.bit_count() >= k:
            break
        if free_bits >> g & 1:
            chosen |= 1 << g
    return gpus_of(chosen)


def _static(t: NodeTypeArrays, free_bits: int, req: int, k: int) -> tuple[int, ...] | None:
    groups = static_groups(t, k)
    if groups is None:
        return None
    for grp in groups:
        m = mask_of(grp)
        if m & ~free_bits == 0 and m & req == req:
            return grp
    return None


def _static_partition(cache: _TypeCache, k: int) -> tuple[tuple[int, ...], ...]:
    """Best partition of the whole node into groups of k (k divides n)."""
    t = cache.t
    n = t.n_gpus
    if cache.uniform:
        order = sorted(range(n), key=lambda g: (int(cache.numa_ids[g]), g))
        groups = [tuple(sorted(order[i:i + k])) for i in range(0, n, k)]
        return tuple(sorted(groups))
    if n <= EXACT_MAX_GPUS:
        value = _table(cache, k).rest
        assert value is not None
        weight = cache.weight
        mask = (1 << n) - 1
        out = []
        while mask:
            low = mask & -mask
            others = gpus_of(mask ^ low)
            for combo in itertools.combinations(others, k - 1):
                grp = (low.bit_length() - 1, *combo)
                gm = mask_of(grp)
                idx = list(grp)
                if int(weight[np.ix_(idx, idx)].sum()) // 2 + int(value[mask ^ gm]) == int(value[mask]):
                    out.append(grp)
                    mask ^= gm
                    break
        return tuple(out)
    out = []
    free = (1 << n) - 1
    while free:
        grp = choose_gpus(t, free, k)
        assert grp is not None
        out.append(grp)
        free &= ~mask_of(grp)
    return tuple(sorted(out))


# ------------------------------------------------------------------------ input checks


def _free_bits(free: np.ndarray | Sequence[bool] | int, n: int) -> int:
    if isinstance(free, (int, np.integer)) and not isinstance(free, bool):
        bits = int(free)
        if bits < 0 or bits >> n:
            raise ValueError(f"free bitmask {bits:#x} names GPUs outside 0-{n - 1}")
        return bits
    arr = np.asarray(free)
    if arr.shape != (n,):
        raise ValueError(f"free mask must have one entry per GPU ({n}), got shape {arr.shape}")
    return mask_of(np.flatnonzero(arr.astype(bool)).tolist())


def _required_bits(required: Iterable[int], n: int) -> int:
    bits = 0
    for g in required:
        g = int(g)
        if not 0 <= g < n:
            raise ValueError(f"required GPU {g} out of range (node has GPUs 0-{n - 1})")
        bits |= 1 << g
    return bits
