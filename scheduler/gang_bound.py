"""Sound reductions before CP-SAT: a smaller model with the same lexicographic optimum.

- ``single_node``: a gang that fits on one node is solved exactly by enumeration.
- ``narrowed``: where greedy keeps every member inside one domain of levels 0..j, so does
  the optimum (it is never worse and a count cannot drop below 1): j becomes a required
  level; domains that need more next-level domains than greedy used are dropped, and
  domains that are exact copies of an earlier one (``_dedupe``) too.
- ``bound``: branch and bound over those domains, a lower bound on every objective term
  per domain against the best greedy answer found in the most promising ones.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import numpy as np

from scheduler.gang_capacity import GangBase, build_problem, level_index, next_count_lb
from scheduler.gang_greedy import greedy
from scheduler.gang_model import Assignment, GangProblem, Level, evaluate, min_count_by, sort_key
from scheduler.snapshot import Snapshot


def single_node(prob: GangProblem, skip: Collection[int] = ()) -> Assignment | None:
    """The optimum when the whole gang fits on one node, by enumeration.

    Every count term (domains per level, cliques, nodes) is at least 1 for any
    placement, and exactly 1 on a single node, so the best node by (link cost,
    fragmentation) is the lexicographic optimum of the aggregated model. ``skip``:
    positions found not to hold the gang after all (GPU by GPU, which the resource
    sums only approximate when a gang has shares of several sizes).
    """
    k = prob.max_units
    need = prob.role_counts(k)
    ok = (prob.cap >= need).all(axis=1) & ((need @ prob.need) <= prob.free).all(axis=1)
    ok[list(skip)] = False
    pos = np.flatnonzero(ok)
    if not len(pos):
        return None
    best = int(pos[np.lexsort((pos, prob.frag[pos], prob.link[pos] @ need))[0]])
    counts = np.zeros_like(prob.cap)
    counts[best] = need
    slice_dom = None
    if prob.slice_level is not None:
        slice_dom = np.full(k, int(prob.slice_dom(best)), dtype=np.int64)
    return Assignment(counts, k, slice_dom)


def _dedupe(prob: GangProblem, level: int) -> GangProblem:
    """Keep one domain of each identical kind at the required ``level`` (the first one).

    Two domains are interchangeable when their nodes, listed in topology order, have the
    same capacity, costs, free resources and the same nesting below ``level``: the best
    placement inside either has the same objective.
    """
    if level >= prob.host:
        return prob
    _, dom = np.unique(prob.levels[level].dom, return_inverse=True)
    dom = dom.reshape(-1)
    rows = np.concatenate([prob.cap, prob.link, prob.frag[:, None], prob.free], axis=1)
    order = np.argsort(dom, kind="stable")
    start, length = _segments(dom[order])
    seen: set[bytes] = set()
    keep_dom = np.zeros(len(start), dtype=bool)
    for d, (a, n) in enumerate(zip(start.tolist(), length.tolist(), strict=True)):
        pos = order[a: a + n]
        parts = [rows[pos]]
        for lv in prob.levels[level + 1:]:
            parts.append(np.unique(lv.dom[pos], return_inverse=True)[1].reshape(-1, 1))
        sig = np.concatenate(parts, axis=1).astype(np.int64).tobytes()
        if sig not in seen:
            seen.add(sig)
            keep_dom[d] = True
    if keep_dom.all():
        return prob
    return subset(prob, keep_dom[dom])


def subset(prob: GangProblem, keep: np.ndarray) -> GangProblem:
    """The same problem on a subset of its candidates (order kept)."""
    levels = tuple(Level(lv.name, lv.dom[keep], lv.names, lv.frag, lv.parent, lv.singleton, lv.is_clique)
                   for lv in prob.levels)
    return replace(prob, nodes=prob.nodes[keep], cap=prob.cap[keep], free=prob.free[keep], link=prob.link[keep],
                   frag=prob.frag[keep], levels=levels)


def narrowed(snap: Snapshot, base: GangBase, prob: GangProblem, g: Assignment,
             g_obj: dict[str, float]) -> tuple[GangProblem, Assignment] | None:
    """A smaller problem with the same lexicographic optimum, and greedy's answer in it.

    The optimum is never worse than greedy, so where greedy keeps every member inside
    one domain of levels 0..j, so does the optimum (a count cannot drop below 1): j
    becomes a required level. Domains of j that need more next-level domains than
    greedy used cannot hold the optimum either and are dropped.
    """
    if prob.elastic and g.units < prob.max_units:
        return None
    j = None
    for i, lv in enumerate(prob.levels):
        if g_obj[f"{lv.name}s"] != 1:
            break
        j = i
    if prob.required is not None and (j is None or prob.required > j):
        j = prob.required  # the request's own level is deeper: keep it
    if j is None or j >= prob.host:
        return None
    nxt = "nodes" if j + 1 == prob.host else f"{prob.levels[j + 1].name}s"
    slice_level = prob.slice_level
    if slice_level is None and prob.req.slice_level is not None:
        slice_level = level_index(snap.arrays, base.has_clique, prob.req.slice_level)
    ub = int(g_obj[nxt])
    if prob.n_roles == 1 and not prob.elastic and slice_level is None and j + 1 < prob.host \
            and not prob.levels[j + 1].is_clique:
        # one role, all members, no slices: a domain's fewest sub-domains is exactly the lower bound
        ub = min(ub, int(next_count_lb(prob, j).min()))
    new = build_problem(snap, prob.req, base, j, slice_level, ub)
    if new is None:
        return None
    new = _dedupe(new, j)
    hint = remap(prob, new, g)
    return bound(new, j, hint)


def remap(src: GangProblem, dst: GangProblem, a: Assignment) -> Assignment | None:
    """``a`` (positions of ``src``) in the positions of ``dst``; None if a used node is missing."""
    where = np.full(int(max(src.nodes.max(initial=0), dst.nodes.max(initial=0))) + 1, -1, dtype=np.int64)
    where[dst.nodes] = np.arange(len(dst.nodes))
    used = np.flatnonzero(a.counts.sum(axis=1))
    to = where[src.nodes[used]]
    if (to < 0).any():
        return None
    counts = np.zeros((len(dst.nodes), dst.n_roles), dtype=np.int64)
    counts[to] = a.counts[used]
    sd = None
    if dst.slice_level is not None and dst.slice_level != src.slice_level:
        # an elastic gang's slices collapsed into the required domain: every slice is there
        assert dst.slice_level == dst.required and dst.slice_level != dst.host
        sd = np.full(a.units, int(dst.levels[dst.slice_level].dom[to[0]]), dtype=np.int64)
    elif dst.slice_level is not None:
        sd = a.slice_dom
        if dst.slice_level == dst.host:
            sd = where[src.nodes[a.slice_dom]]
            if (sd < 0).any():
                return None
    return Assignment(counts, a.units, sd)


BOUND_PROBES = 3  # domains (best lower bounds first) where greedy looks for a better upper bound


def bound(prob: GangProblem, level: int, hint: Assignment | None) -> tuple[GangProblem, Assignment] | None:
    """Branch and bound over the domains of the required ``level`` (each holds the whole gang).

    Per domain a lower bound on every objective term (counts from capacities, link cost
    from the cheapest member slots, fragmentation from the smallest node values); the
    upper bound is the best of greedy's answer and greedy inside the domains with the
    best lower bounds. Domains whose lower bound is lexicographically worse than the
    upper bound cannot hold the optimum and are dropped.
    """
    ids, dom = np.unique(prob.levels[level].dom, return_inverse=True)
    dom = dom.reshape(-1)
    cols = _lower_bounds(prob, level, dom)
    lbs = [sort_key(prob, {k: int(v[i]) for k, v in cols.items()}) for i in range(len(ids))]
    best, best_key = None, None
    if hint is not None:
        best, best_key = hint, sort_key(prob, evaluate(prob, hint))
    for i in sorted(range(len(lbs)), key=lambda i: (lbs[i], i))[:BOUND_PROBES]:
        sub = subset(prob, dom == i)
        got = greedy(sub)
        if got is None:
            continue
        key = sort_key(sub, evaluate(sub, got))
        if best_key is None or key < best_key:
            best, best_key = remap(sub, prob, got), key
    if best is None:
        return None
    used = np.flatnonzero(best.counts.sum(axis=1))
    ok = np.array([lb <= best_key for lb in lbs], dtype=bool)
    ok[dom[used]] = True
    keep = ok[dom]
    terms = [t for t in cols if t not in ("members",) and not t.startswith("spread.")]
    domain_lbs = {t: {int(ids[i]): int(cols[t][i]) for i in np.flatnonzero(ok)} for t in terms}
    if keep.all():
        return replace(prob, domain_lbs=domain_lbs), best
    small = replace(subset(prob, keep), domain_lbs=domain_lbs)
    hint2 = remap(prob, small, best)
    return (small, hint2) if hint2 is not None else (replace(prob, domain_lbs=domain_lbs), best)


def _segments(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of a sorted group array."""
    _, start = np.unique(group, return_index=True)
    return start, np.diff(np.r_[start, len(group)])


def _lower_bounds(prob: GangProblem, level: int, dom: np.ndarray) -> dict[str, np.ndarray]:
    """Per domain of ``level`` (dense ids ``dom`` over positions): a lower bound on every term.

    Counts: fewest sub-domains (nodes) whose capacity covers the gang; link cost: the
    cheapest member slots of each role; fragmentation: the smallest node values, as many
    as the fewest nodes.
    """
    totals = prob.role_counts(prob.max_units)
    least = int(totals.sum())
    nd = int(dom.max()) + 1
    per_node = np.minimum(prob.cap, totals[None, :]).sum(axis=1)
    cols: dict[str, np.ndarray] = {}
    if prob.elastic:
        cols["members"] = np.full(nd, prob.max_units * prob.unit)
    for i, lv in enumerate(prob.levels):
        if i <= level:
            cols[f"{lv.name}s"] = np.ones(nd, dtype=np.int64)
        else:
            width = int(lv.dom.max()) + 1
            up, inv = np.unique(dom * width + lv.dom, return_inverse=True)
            cap = np.bincount(inv.reshape(-1), weights=per_node).astype(np.int64)
            _, lb = min_count_by(up // width, cap, least)
            cols[f"{lv.name}s"] = np.maximum(lb, 1)
        if prob.balance == i:
            cols[f"spread.{lv.name}"] = np.zeros(nd, dtype=np.int64)
    _, nodes = min_count_by(dom, per_node, least)
    nodes = np.maximum(nodes, 1)
    cols["nodes"] = nodes
    link = np.zeros(nd, dtype=np.int64)
    for r in range(prob.n_roles):
        if not totals[r]:
            continue
        order = np.lexsort((prob.link[:, r], dom))
        start, length = _segments(dom[order])
        slots = np.minimum(prob.cap[order, r], totals[r])
        cum = np.cumsum(slots)
        before = cum - slots - np.repeat(np.r_[0, cum][start], length)
        take = np.clip(int(totals[r]) - before, 0, slots)
        link += np.bincount(dom[order], weights=take * prob.link[order, r], minlength=nd).astype(np.int64)
    cols["link_cost"] = link
    order = np.lexsort((prob.frag, dom))
    start, length = _segments(dom[order])
    rank = np.arange(len(order)) - np.repeat(start, length)
    small = rank < nodes[dom[order]]
    cols["fragmentation"] = np.bincount(dom[order], weights=np.where(small, prob.frag[order], 0),
                                        minlength=nd).astype(np.int64)
    return cols
