"""Gang capacity and problem building: what fits where, on which candidate nodes.

Phases:

1. **Filters** per role (member shape): the engine's filter plugins over all nodes at
   once; rejected nodes are charged to the first reason (kube-scheduler sums).
2. **Capacity** per node and role: members that fit alone (whole free GPUs // GPUs,
   shared-GPU slices, CPU, memory, pod slots, and one column per extended resource any
   role asks for); with ``rail_aligned`` the primary role
   uses fixed per-slot GPU sets and a node holds as many members as leading slots are free.
3. **Costs** per node and role: link cost of the GPU sets ``choose_gpus`` would cut
   (cached per node type, free mask and count); fragmentation (free whole GPUs of the
   node and of every domain it sits in).
4. **Problem**: candidate nodes in topology order, the level chain (network levels,
   clique), units (members or slices) and, for a required level, only the domains that
   can hold the gang.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.requests import GPU_MILLI, GangRequest
from models.topology import NodeTypeArrays
from plugins.base import Context
from scheduler import gpuset
from scheduler.gang_model import (
    BASE_COLUMNS,
    BIG,
    CPU,
    LINK_SCALE,
    MEM,
    MILLI,
    PODS,
    WHOLE,
    GangProblem,
    Level,
    demand,
    min_count_by,
    unit_capacity,
)
from scheduler.snapshot import PodShape, Snapshot


@dataclass
class GangBase:
    """What does not depend on the level chosen: shapes, per-node capacity, costs."""

    shapes: tuple[PodShape, ...]
    order: tuple[int, ...]
    cap: np.ndarray  # [N, R]
    free: np.ndarray  # [N, C]: BASE_COLUMNS, one per name of ``ext_names``, one per ``shared_sizes``
    need: np.ndarray  # [R, C]
    counts: dict[str, int]  # primary role's filter reasons
    role_counts: list[dict[str, int]]
    fit_nodes: int
    rail_slots: tuple[tuple[int, ...], ...] | None
    full_free: np.ndarray  # [N]
    ok: list[np.ndarray]  # per role: nodes its filters accept
    has_clique: bool
    cache: dict[str, Any] = field(default_factory=dict)
    ext_names: tuple[str, ...] = ()  # extended resources some role asks for (columns BASE_COLUMNS..)
    shared_sizes: tuple[int, ...] = ()  # milli of shared-GPU roles: a slot column each, after the extended ones


def level_index(a: Any, has_clique: bool, name: str) -> int | None:
    """Chain index of a level name: network levels, ``clique`` (if any), ``host``/``node``."""
    if name in a.level_names:
        return a.level_names.index(name)
    if name == "clique" and has_clique:
        return len(a.level_names)
    if name in ("host", "node"):
        return len(a.level_names) + int(has_clique)
    return None


def chain_name(a: Any, has_clique: bool, i: int) -> str:
    names = [*a.level_names, *(["clique"] if has_clique else []), "host"]
    return names[i]


def filter_counts(engine: Any, snap: Snapshot, shape: PodShape, ctx: Context) -> tuple[np.ndarray, dict[str, int]]:
    """The engine's filters for one member shape: feasible mask and rejected nodes per reason
    (``engine.filter_counts``, with each plugin prepared for this shape)."""
    from scheduler.engine import filter_counts as engine_filter_counts

    states = {p.name: p.prepare(shape, snap, ctx) for p in engine.all_plugins}
    return engine_filter_counts(engine, snap, shape, states)


def _weight(shape: PodShape) -> tuple[int, int, int]:
    return (shape.gpus * shape.gpu_milli, shape.cpu_milli, shape.memory_mib)


def gang_base(engine: Any, snap: Snapshot, req: GangRequest, ctx: Context, has_clique: bool) -> GangBase:
    shapes = tuple(PodShape.of(r) for r in req.roles)
    order = tuple(sorted(range(len(shapes)), key=lambda r: (tuple(-w for w in _weight(shapes[r])), r)))
    n, nr = snap.n_nodes, len(shapes)
    gf = snap.gpu_free
    full_free = (gf == GPU_MILLI).sum(axis=1).astype(np.int64)
    ext_names = tuple(sorted({name for s in shapes for name, _ in s.extended}))
    shared_sizes = tuple(sorted({s.gpu_milli for s in shapes if s.is_shared}))
    slot0 = BASE_COLUMNS + len(ext_names)
    cols = slot0 + len(shared_sizes)
    free = np.zeros((n, cols), dtype=np.int64)
    free[:, WHOLE] = full_free
    free[:, MILLI] = np.where(gf > 0, gf, 0).sum(axis=1)
    free[:, CPU] = snap.free_cpu
    free[:, MEM] = snap.free_mem
    free[:, PODS] = snap.free_pods
    for j, name in enumerate(ext_names):
        k = snap.arrays.ext_index(name)
        if k >= 0:  # a resource no node offers stays 0 everywhere
            free[:, BASE_COLUMNS + j] = snap.free_ext[:, k]
    for j, m in enumerate(shared_sizes):
        # slots of m milli: each GPU holds free // m shares of that size. A whole-GPU member
        # takes a fully free GPU, i.e. 1000 // m slots; a shared member of size m' at least
        # m' // m of them. Exact when the gang has one shared size (pooled milli is not: four
        # 600m shares need four GPUs), a necessary condition with several.
        free[:, slot0 + j] = (np.where(gf > 0, gf, 0) // m).sum(axis=1)
    free = np.maximum(free, 0)
    need = np.zeros((nr, cols), dtype=np.int64)
    cap = np.zeros((n, nr), dtype=np.int64)
    role_counts: list[dict[str, int]] = []
    oks = []
    for r, s in enumerate(shapes):
        if s.is_shared:
            need[r, MILLI] = s.gpu_milli
        elif s.gpus:
            need[r, WHOLE] = s.gpus
            need[r, MILLI] = s.gpus * GPU_MILLI
        need[r, CPU], need[r, MEM], need[r, PODS] = s.cpu_milli, s.memory_mib, 1
        for name, amount in s.extended:
            need[r, BASE_COLUMNS + ext_names.index(name)] = amount
        for j, m in enumerate(shared_sizes):
            need[r, slot0 + j] = s.gpu_milli // m if s.is_shared else s.gpus * (GPU_MILLI // m)
        ok, counts = filter_counts(engine, snap, s, ctx)
        oks.append(ok)
        role_counts.append(counts)
        c = np.full(n, BIG, dtype=np.int64)
        if s.is_shared:
            c = np.minimum(c, (np.where(gf > 0, gf, 0) // s.gpu_milli).sum(axis=1))
        for col in (WHOLE, CPU, MEM, PODS, *range(BASE_COLUMNS, cols)):
            if need[r, col] > 0:
                c = np.minimum(c, np.maximum(free[:, col], 0) // need[r, col])
        c[~ok] = 0
        cap[:, r] = np.minimum(c, req.roles[r].count)
    rail = None
    p = order[0]
    if req.rail_aligned and not shapes[p].is_shared and shapes[p].gpus:
        rail = _rail_slots(snap, shapes[p].gpus, cap[:, p] > 0)
        if rail is not None:
            cap[:, p] = np.minimum(cap[:, p], _slot_prefix(snap, rail))
    return GangBase(shapes, order, cap, free, need, role_counts[p], role_counts, int((cap[:, p] > 0).sum()), rail,
                    full_free, oks, has_clique, ext_names=ext_names, shared_sizes=shared_sizes)


def _full_bits(snap: Snapshot, nodes: np.ndarray) -> np.ndarray:
    """Per node, the mask of its wholly free GPUs (unsigned: a 64-GPU node uses bit 63)."""
    full = snap.gpu_free[nodes] == GPU_MILLI
    return (full.astype(np.uint64) << np.arange(full.shape[1], dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def _rail_slots(snap: Snapshot, size: int, ok: np.ndarray) -> tuple[tuple[int, ...], ...] | None:
    """The fixed GPU sets rail-aligned members use (slot j: the same local GPUs on every node).

    Candidates are the set sequences ``choose_gpus`` cuts from the most common free masks
    (and the whole node); the one that lets the most members fit wins.
    """
    a = snap.arrays
    nodes = np.flatnonzero(ok)
    if not len(nodes):
        return None
    types = a.node_type[nodes].astype(np.int64)
    rows = np.stack([types.astype(np.uint64), _full_bits(snap, nodes)], axis=1)  # (type, free mask)
    uniq, cnt = np.unique(rows, axis=0, return_counts=True)
    order = np.lexsort((uniq[:, 1], uniq[:, 0], -cnt))[:4]
    ranked = [(int(uniq[i, 0]), int(uniq[i, 1])) for i in order]
    main_type = int(np.bincount(types).argmax())
    ranked.append((main_type, (1 << int(a.types[main_type].n_gpus)) - 1))
    best, best_fit = None, -1
    for type_id, mask in dict.fromkeys(ranked):
        t = a.types[type_id]
        free, slots = mask, []
        while True:
            s = gpuset.choose_gpus(t, free, size)
            if s is None:
                break
            slots.append(s)
            free &= ~gpuset.mask_of(s)
        if not slots:
            continue
        fit = int(_slot_prefix(snap, tuple(slots))[nodes].sum())
        if fit > best_fit:
            best, best_fit = tuple(slots), fit
    return best


def _slot_prefix(snap: Snapshot, slots: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Per node: how many leading slots have all their GPUs wholly free."""
    full = snap.gpu_free == GPU_MILLI
    out = np.zeros(snap.n_nodes, dtype=np.int64)
    alive = np.ones(snap.n_nodes, dtype=bool)
    for s in slots:
        if max(s) >= full.shape[1]:
            break
        alive &= full[:, list(s)].all(axis=1)
        out += alive
    return out


_LINK_CACHE: dict[tuple[int, int, int, int], tuple[NodeTypeArrays, int]] = {}


def _link_cost(t: NodeTypeArrays, bits: int, size: int, count: int) -> int:
    """Mean link cost (0..LINK_SCALE) of ``count`` sets of ``size`` GPUs cut one after another."""
    if size < 2 or count < 1:
        return 0
    key = (id(t), bits, size, count)
    hit = _LINK_CACHE.get(key)
    if hit is not None and hit[0] is t:
        return hit[1]
    best = max(gpuset.best_set_score(t, size), 1)
    total, done, free = 0.0, 0, bits
    for _ in range(count):
        s = gpuset.choose_gpus(t, free, size)
        if s is None:
            break
        total += 1.0 - gpuset.set_score(t, s) / best
        done += 1
        free &= ~gpuset.mask_of(s)
    cost = round(LINK_SCALE * total / max(done, 1))
    if len(_LINK_CACHE) > 100_000:
        _LINK_CACHE.clear()
    _LINK_CACHE[key] = (t, cost)
    return cost


def _slot_cost(t: NodeTypeArrays, slots: tuple[tuple[int, ...], ...], count: int) -> int:
    size = len(slots[0])
    if size < 2 or count < 1:
        return 0
    best = max(gpuset.best_set_score(t, size), 1)
    return round(LINK_SCALE * sum(1.0 - gpuset.set_score(t, s) / best for s in slots[:count]) / count)


def _link_costs(snap: Snapshot, base: GangBase, nodes: np.ndarray) -> np.ndarray:
    """Per node and role: link cost of the members that fit (computed once per distinct node state)."""
    full = base.cache.get("link")
    if full is None:
        a = snap.arrays
        full = np.zeros((snap.n_nodes, len(base.shapes)), dtype=np.int64)
        for r, s in enumerate(base.shapes):
            if s.is_shared or s.gpus < 2:
                continue
            idx = np.flatnonzero(base.cap[:, r] > 0)
            if not len(idx):
                continue
            cap = np.minimum(base.cap[idx, r], 255)
            rows = np.stack([a.node_type[idx].astype(np.uint64), cap.astype(np.uint64), _full_bits(snap, idx)], axis=1)
            uniq, inv = np.unique(rows, axis=0, return_inverse=True)  # (type, members that fit, free mask)
            vals = np.zeros(len(uniq), dtype=np.int64)
            for u, (type_id, c, bits) in enumerate(uniq.tolist()):
                t = a.types[type_id]
                if r == base.order[0] and base.rail_slots is not None:
                    vals[u] = _slot_cost(t, base.rail_slots, c)
                else:
                    vals[u] = _link_cost(t, bits, s.gpus, c)
            full[idx, r] = vals[inv.reshape(-1)]
        base.cache["link"] = full
    return full[nodes]


def _chain_doms(snap: Snapshot, has_clique: bool) -> list[tuple[str, np.ndarray, tuple[str, ...], np.ndarray | None, bool]]:
    """Per chain level over all cluster nodes: (name, domain id [N], names, parent, is_clique)."""
    a = snap.arrays
    out = []
    for lv, name in enumerate(a.level_names):
        parent = a.domain_parent[lv].astype(np.int64) if lv > 0 else None
        out.append((name, a.domain[lv].astype(np.int64), a.domain_names[lv], parent, False))
    if has_clique:
        nc = len(a.clique_names)
        dom = np.where(a.clique >= 0, a.clique, nc + np.arange(a.n_nodes)).astype(np.int64)
        out.append(("clique", dom, (*a.clique_names, *a.node_names), None, True))
    return out


def build_problem(snap: Snapshot, req: GangRequest, base: GangBase, required: int | None,
             slice_level: int | None, next_ub: int | None = None) -> GangProblem | None:
    """The gang restricted to candidate nodes (and to domains of ``required`` that can hold it).

    With ``next_ub``, domains of ``required`` that need more than ``next_ub`` domains
    one level down (or nodes) to hold the gang are dropped too.
    """
    key = ("problem", required, slice_level, next_ub)
    if key in base.cache:
        return base.cache[key]
    a = snap.arrays
    chain = _chain_doms(snap, base.has_clique)
    if slice_level is not None and required is not None and slice_level <= required:
        # Every slice is inside the one required domain anyway. A gang placed whole needs no
        # slice rule then; an elastic one still counts in whole slices, with the required
        # domain as every slice's domain.
        elastic = req.min_members is not None and req.min_members < req.size
        slice_level = required if elastic else None
    unit = req.slice_size if slice_level is not None else 1
    assert unit is not None
    roles = np.repeat(np.arange(len(req.roles)), [r.count for r in req.roles])
    comp = np.zeros((len(roles) // unit, len(req.roles)), dtype=np.int64)
    np.add.at(comp, (np.arange(len(roles)) // unit, roles), 1)
    types, unit_type = np.unique(comp, axis=0, return_inverse=True)
    min_members = req.min_members if req.min_members is not None else req.size
    min_units = -(-min_members // unit)
    cand = (base.cap > 0).any(axis=1)
    if required is not None and base.has_clique and required == len(a.level_names):
        cand &= a.clique >= 0
    nodes = np.flatnonzero(cand)
    keys = [nodes] + [dom[nodes] for _, dom, _, _, _ in reversed(chain)]
    nodes = nodes[np.lexsort(keys)]
    args = (chain, required, slice_level, unit, comp, types, unit_type, min_units)
    prob = _make(snap, req, base, nodes, *args)
    if required is not None and len(nodes):
        keep = viable(prob, required)
        if next_ub is not None and required < prob.host:
            keep &= next_count_lb(prob, required) <= next_ub
        prob = _make(snap, req, base, nodes[keep], *args)
    out = prob if len(prob.nodes) else None
    base.cache[key] = out
    return out


def _make(snap: Snapshot, req: GangRequest, base: GangBase, nodes: np.ndarray, chain: list, required: int | None,
          slice_level: int | None, unit: int, comp: np.ndarray, types: np.ndarray, unit_type: np.ndarray,
          min_units: int) -> GangProblem:
    levels = []
    for name, dom, names, parent, is_clique in chain:
        d = int(dom.max()) + 1 if len(dom) else 0
        frag = np.bincount(dom, weights=base.full_free, minlength=d).astype(np.int64)
        singleton = np.zeros(d, dtype=bool)
        if is_clique:
            singleton[len(snap.arrays.clique_names):] = True
        levels.append(Level(name, dom[nodes], names, frag, parent, singleton, is_clique))
    balance = None
    if req.balanced and snap.arrays.level_names:
        balance = len(snap.arrays.level_names) - 1
    frag = base.full_free[nodes] + sum((lv.frag[lv.dom] for lv in levels), np.zeros(len(nodes), dtype=np.int64))
    return GangProblem(
        req=req, shapes=base.shapes, order=base.order, nodes=nodes, cap=base.cap[nodes], free=base.free[nodes],
        need=base.need, link=_link_costs(snap, base, nodes), frag=frag, levels=tuple(levels),
        required=required, balance=balance, slice_level=slice_level, unit=unit, comp=comp,
        unit_type=unit_type.reshape(-1).astype(np.int64), types=types, min_units=min_units,
        rail_slots=base.rail_slots, elastic=min_units < len(comp), ext_names=base.ext_names,
    )


def viable(prob: GangProblem, required: int) -> np.ndarray:
    """Mask over candidates: inside a domain of ``required`` that can hold the smallest gang."""
    pos = np.arange(len(prob.nodes))
    if required == prob.host:
        child = pos
    else:
        child = prob.levels[required].dom
    # an elastic gang's slices collapsed into the required domain (slice level = required) need
    # only room for their members there
    slice_mode = prob.slice_level is not None and prob.slice_level != required
    uc, per_role = unit_capacity(prob, pos, child, slice_mode, upper=True)
    d, counts = demand(prob, prob.min_units, slice_mode)
    ok = (uc >= d) & (per_role >= counts).all(axis=1)
    return ok[child]


def next_count_lb(prob: GangProblem, level: int) -> np.ndarray:
    """Per candidate: fewest domains one level below (or nodes) its ``level`` domain needs for the gang."""
    totals = prob.role_counts(prob.max_units)
    per_node = np.minimum(prob.cap, totals[None, :]).sum(axis=1)
    dom = prob.levels[level].dom
    below = np.arange(len(prob.nodes)) if level + 1 == prob.host else prob.levels[level + 1].dom
    width = int(below.max()) + 1
    up, inv = np.unique(dom * width + below, return_inverse=True)
    cap = np.bincount(inv.reshape(-1), weights=per_node).astype(np.int64)
    ids, lb = min_count_by(up // width, cap, prob.min_units * prob.unit)
    lb = np.where(lb == 0, BIG, lb)
    return lb[np.searchsorted(ids, dom)]
