"""Decode an assignment (members per node and role) into members and exact GPUs, and check it.

Members keep their request order (``<gang>/<role>-<i>``); ranks follow the topology
order of the nodes, slices go whole to their slice-domain. On each node the primary role
takes its rail slots (when aligned) or the set ``choose_gpus`` picks, other whole-GPU
roles follow, shared-GPU members take the fullest GPU that still fits them.
``check`` re-verifies the result against the snapshot before anything is returned.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from models.placement import Placement
from models.requests import GPU_MILLI
from scheduler import gpuset
from scheduler.gang_capacity import level_index
from scheduler.gang_model import Assignment, GangProblem
from scheduler.snapshot import Snapshot


def to_placements(prob: GangProblem, snap: Snapshot, a: Assignment) -> list[Placement] | None:
    """Members and exact GPUs for an assignment; None if it does not fit the snapshot."""
    req = prob.req
    counts = a.counts
    members = req.member_names()[: a.units * prob.unit]
    role_of = {r.name: i for i, r in enumerate(req.roles)}
    placed: dict[int, list[tuple[int, int]]] = {}  # position -> [(member index, role)]
    if prob.slice_level is not None:
        assert a.slice_dom is not None
        sd_all = np.asarray(prob.slice_dom(np.arange(len(prob.nodes))))
        slots: dict[tuple[int, int], deque[int]] = {}
        for pos in np.flatnonzero(counts.sum(axis=1)):
            for r in range(prob.n_roles):
                slots.setdefault((int(sd_all[pos]), r), deque()).extend([int(pos)] * int(counts[pos, r]))
        for i, (_, role) in enumerate(members):
            r = role_of[role.name]
            q = slots.get((int(a.slice_dom[i // prob.unit]), r))
            if not q:
                return None
            placed.setdefault(q.popleft(), []).append((i, r))
        if any(slots.values()):
            return None
    else:
        for r in range(prob.n_roles):
            q = deque(int(p) for p in np.repeat(np.arange(len(prob.nodes)), counts[:, r]))
            ids = [i for i, (_, role) in enumerate(members) if role_of[role.name] == r]
            if len(q) != len(ids):
                return None
            for i in ids:
                placed.setdefault(q.popleft(), []).append((i, r))
    rank = {r: k for k, r in enumerate(prob.order)}
    memo: dict = {}
    out: list[tuple[int, Placement]] = []
    for pos, items in placed.items():
        node = int(prob.nodes[pos])
        got = _node_gpus(prob, snap, node, sorted(items, key=lambda it: (rank[it[1]], it[0])), memo)
        if got is None:
            return None
        for i, r, gpus in got:
            s = prob.shapes[r]
            out.append((i, Placement(members[i][0], snap.arrays.node_names[node], node, gpus, s.gpu_milli,
                                     s.cpu_milli, s.memory_mib, gang=req.name, role=req.roles[r].name,
                                     extended=s.extended)))
    out.sort(key=lambda x: x[0])
    places = [p for _, p in out]
    return places if not check(prob, snap, places, a) else None


def _node_gpus(prob: GangProblem, snap: Snapshot, node: int, items: list[tuple[int, int]],
               memo: dict) -> list[tuple[int, int, tuple[int, ...]]] | None:
    """Exact GPUs for the members on one node: rail slots, then ``choose_gpus``, then shared best fit."""
    t = snap.arrays.type_of(node)
    free = snap.gpu_free[node, : t.n_gpus].astype(np.int64).copy()
    out = []
    slot = 0
    for i, r in items:
        s = prob.shapes[r]
        if s.gpus == 0:
            out.append((i, r, ()))
            continue
        if s.is_shared:
            fit = np.flatnonzero(free >= s.gpu_milli)
            if not len(fit):
                return None
            g = int(fit[np.lexsort((fit, free[fit]))[0]])
            free[g] -= s.gpu_milli
            out.append((i, r, (g,)))
            continue
        if r == prob.primary and prob.rail_slots is not None:
            if slot >= len(prob.rail_slots):
                return None
            gpus = prob.rail_slots[slot]
            slot += 1
            if (free[list(gpus)] != GPU_MILLI).any():
                return None
        else:
            whole = np.flatnonzero(free == GPU_MILLI)
            if len(whole) == s.gpus:
                gpus = tuple(int(g) for g in whole)
            else:
                key = (id(t), gpuset.mask_of(whole.tolist()), s.gpus)
                if key not in memo:
                    memo[key] = gpuset.choose_gpus(t, key[1], s.gpus)
                chosen = memo[key]
                if chosen is None:
                    return None
                gpus = chosen
        free[list(gpus)] = 0
        out.append((i, r, tuple(int(g) for g in gpus)))
    return out


def check(prob: GangProblem, snap: Snapshot, places: list[Placement], a: Assignment) -> list[str]:
    """What is wrong with these placements (empty when they are valid)."""
    bad = []
    req = prob.req
    gf = {}
    ext_names = snap.arrays.ext_names
    for p in places:
        n = p.node_index
        if n not in gf:
            gf[n] = [snap.gpu_free[n].astype(np.int64).copy(), int(snap.free_cpu[n]), int(snap.free_mem[n]),
                     int(snap.free_pods[n]), {}]
        st = gf[n]
        for g in p.gpus:
            st[0][g] -= p.gpu_milli
        st[1] -= p.cpu_milli
        st[2] -= p.memory_mib
        st[3] -= 1
        for name, amount in p.extended:  # a resource no node offers has 0 free
            k = ext_names.index(name) if name in ext_names else -1
            st[4][name] = st[4].get(name, int(snap.free_ext[n, k]) if k >= 0 else 0) - amount
    for n, (g, cpu, mem, pods, ext) in gf.items():
        present = np.arange(len(g)) < int(snap.arrays.gpu_count[n])
        if (g[present] < 0).any() or (cpu < 0 and any(p.cpu_milli for p in places if p.node_index == n)) \
                or (mem < 0 and any(p.memory_mib for p in places if p.node_index == n)) or pods < 0 \
                or any(v < 0 for v in ext.values()):
            bad.append(f"over capacity on {snap.arrays.node_names[n]}")
    if len({p.pod for p in places}) != len(places):
        bad.append("a member placed twice")
    need = req.min_members if req.min_members is not None else req.size
    if len(places) < need:
        bad.append(f"{len(places)} members < {need}")
    nodes = np.array([p.node_index for p in places], dtype=np.int64)
    a = snap.arrays
    has_clique = bool((a.clique >= 0).any())
    host = len(a.level_names) + int(has_clique)

    def doms(level: int) -> np.ndarray:
        return nodes if level == host else cluster_dom(snap, level)[nodes]

    if req.required_level is not None and len(nodes):
        lv = level_index(a, has_clique, req.required_level)
        if lv is None or len(np.unique(doms(lv))) > 1:
            bad.append(f"members outside one required {req.required_level}")
        elif lv == len(a.level_names) and lv != host and (a.clique[nodes] < 0).any():
            bad.append("members outside any clique")
    if req.slice_level is not None and req.slice_size and len(nodes):
        lv = level_index(a, has_clique, req.slice_level)
        d = doms(lv) if lv is not None else nodes
        for j in range(0, len(places), req.slice_size):
            if lv is None or len(np.unique(d[j: j + req.slice_size])) > 1:
                bad.append(f"slice {j // req.slice_size} spans {req.slice_level}s")
    return bad


def cluster_dom(snap: Snapshot, level: int) -> np.ndarray:
    a = snap.arrays
    if level < len(a.level_names):
        return a.domain[level]
    return np.where(a.clique >= 0, a.clique, len(a.clique_names) + np.arange(a.n_nodes))
