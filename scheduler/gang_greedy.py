"""Greedy gang placement: best-fit tree descent over the domains, top down.

Always available, fast, and the baseline CP-SAT must match or beat. Phases:

1. **Units.** A unit is a slice (when the gang has slices, at and above the slice level)
   or a member of the primary role (the heaviest). Elastic gangs try every member, then
   binary-search the most units that still fit (at least ``min_members``).
2. **Required domain.** With a required level, the best-fit domain of that level that
   holds the whole gang alone (fewest spare units, then fewest free GPUs, then lowest id).
3. **Descent.** At each level, among the children of the domains chosen so far: if one
   child holds everything, the best fit; otherwise the fewest children (largest first)
   with the best fit for the remainder. ``balanced`` spreads the units of the balance
   level's children as evenly as capacity allows (water filling). At the slice level,
   slices are handed to slice-domains in order. At the host level the same rule picks
   nodes (ties: link cost, then free GPUs, then topology order).
4. **Other roles** (e.g. a launcher) go to the nearest nodes with room: nodes already
   used, then nodes sharing the narrowest domain with them, and so on up; inside their
   slice's domain when the gang has slices, inside the required domain when there is one.
"""

from __future__ import annotations

import numpy as np

from scheduler.gang_model import Assignment, GangProblem, demand, unit_capacity


def greedy(prob: GangProblem) -> Assignment | None:
    """The greedy placement, or None when the descent finds none."""
    a = _attempt(prob, prob.max_units)
    if a is not None or not prob.elastic:
        return a
    best, lo, hi = None, prob.min_units, prob.max_units - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        got = _attempt(prob, mid)
        if got is not None:
            best, lo = got, mid + 1
        else:
            hi = mid - 1
    return best


def waterfill(cap: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over children with capacities ``cap`` as evenly as possible."""
    out = np.zeros(len(cap), dtype=np.int64)
    left = total
    order = np.lexsort((np.arange(len(cap)), cap))
    for i, c in enumerate(order):
        share = min(int(cap[c]), -(-left // (len(cap) - i)))
        out[c] = share
        left -= share
    return out


class _Run:
    """One descent for ``k`` units: the counts it builds and the slices it hands out."""

    def __init__(self, prob: GangProblem, k: int) -> None:
        self.prob = prob
        self.k = k
        self.counts = np.zeros((len(prob.nodes), prob.n_roles), dtype=np.int64)
        self.slicing = prob.slice_level is not None
        self.slice_dom = np.full(k, -1, dtype=np.int64) if self.slicing else None
        self.next_slice = 0

    def ties(self, lvl: int, pos: np.ndarray, uniq: np.ndarray) -> list[np.ndarray]:
        """Tie-breakers per child, most important first (smaller is better)."""
        p = self.prob
        if lvl == p.host:
            return [p.link[uniq, p.primary], p.frag[uniq]]
        return [p.levels[lvl].frag[uniq]]

    def children(self, lvl: int, pos: np.ndarray, slice_mode: bool):
        p = self.prob
        key = pos if lvl == p.host else p.levels[lvl].dom[pos]
        uniq, inv = np.unique(key, return_inverse=True)
        inv = inv.reshape(-1)
        uc, per_role = unit_capacity(p, pos, inv, slice_mode)
        return uniq, inv, uc, per_role

    def pick(self, uc: np.ndarray, hold: np.ndarray, ties: list[np.ndarray], d: int,
             balanced: bool) -> list[tuple[int, int]] | None:
        """(child, units) pairs: one best-fit holder, or the fewest children covering ``d``."""
        ids = np.arange(len(uc))
        holders = np.flatnonzero((uc >= d) & hold)
        if len(holders):
            keys = [ids[holders], *(t[holders] for t in reversed(ties)), uc[holders]]
            return [(int(holders[np.lexsort(keys)[0]]), d)]
        order = np.lexsort([ids, *reversed(ties), -uc])
        cum = np.cumsum(uc[order])
        if not len(cum) or cum[-1] < d:
            return None
        t = int(np.searchsorted(cum, d))
        rem = d - (int(cum[t - 1]) if t > 0 else 0)
        rest = order[t:]
        rc = rest[uc[rest] >= rem]
        last = int(rc[np.lexsort([ids[rc], *(x[rc] for x in reversed(ties)), uc[rc]])[0]])
        chosen = [int(c) for c in order[:t]] + [last]
        shares = [int(uc[c]) for c in order[:t]] + [rem]
        if balanced:
            shares = waterfill(uc[chosen], d).tolist()
        return list(zip(chosen, shares, strict=True))

    def descend(self, lvl: int, pos: np.ndarray, d: int, slice_mode: bool, sec: np.ndarray | None) -> bool:
        """Place ``d`` units inside ``pos`` from level ``lvl`` down."""
        p = self.prob
        if d == 0:
            return True
        uniq, inv, uc, per_role = self.children(lvl, pos, slice_mode)
        hold = np.ones(len(uniq), dtype=bool)
        if sec is not None and not slice_mode:
            for r in range(p.n_roles):
                if r != p.primary:
                    hold &= per_role[:, r] >= sec[r]
        picks = self.pick(uc, hold, self.ties(lvl, pos, uniq), d, balanced=p.balance == lvl)
        if picks is None:
            return False
        single = len(picks) == 1
        for c, share in picks:
            sub = pos[inv == c]
            if slice_mode and lvl == p.slice_level:
                ids = np.arange(self.next_slice, self.next_slice + share)
                self.next_slice += share
                self.slice_dom[ids] = uniq[c]
                need = p.comp[ids].sum(axis=0)
                if lvl == p.host:
                    self.counts[uniq[c]] += need
                    if not p.fits(np.array([uniq[c]]), self.counts):
                        return False
                    continue
                if not self.descend(lvl + 1, sub, int(need[p.primary]), False, need):
                    return False
            elif lvl == p.host:
                self.counts[uniq[c], p.primary] += share
            elif not self.descend(lvl + 1, sub, share, slice_mode, sec if single else None):
                return False
        return True

    def distance(self, region: np.ndarray) -> np.ndarray:
        """0 for used nodes, else how many levels up the region node first meets a used one."""
        p = self.prob
        used = self.counts.sum(axis=1) > 0
        n_lv = len(p.levels)
        dist = np.full(len(region), n_lv + 1, dtype=np.int64)
        for i, lv in enumerate(p.levels):
            dist[np.isin(lv.dom[region], np.unique(lv.dom[used]))] = n_lv - i
        dist[used[region]] = 0
        return dist

    def near(self, region: np.ndarray, r: int, k: int) -> bool:
        """Put ``k`` members of role ``r`` on the nearest nodes of ``region`` with room."""
        if k <= 0:
            return True
        p = self.prob
        room = p.room(region, self.counts, r)
        keep = room > 0
        region, room = region[keep], room[keep]
        order = np.lexsort((region, p.frag[region], p.link[region, r], self.distance(region)))
        for i in order:
            take = min(int(room[i]), k)
            self.counts[region[i], r] += take
            k -= take
            if k == 0:
                return True
        return False


def _attempt(prob: GangProblem, k: int) -> Assignment | None:
    run = _Run(prob, k)
    slice_mode = run.slicing
    d, role_counts = demand(prob, k, slice_mode)
    pos = np.arange(len(prob.nodes))
    start = 0
    if prob.required is not None:
        lvl = prob.required
        collapsed = slice_mode and prob.slice_level == lvl
        if collapsed:
            # an elastic gang whose slices all sit in the required domain: every slice's
            # domain is that one, so the units are members there (slices of several kinds
            # counted as the largest of each role would not fit where they do)
            slice_mode = False
            d = int(role_counts[prob.primary])
        uniq, inv, uc, per_role = run.children(lvl, pos, slice_mode)
        hold = (per_role >= role_counts).all(axis=1)
        if lvl == prob.host:
            # one node takes every role: they share its resources (GPUs, CPU, shared slots)
            hold &= ((role_counts @ prob.need)[None, :] <= prob.free[uniq]).all(axis=1)
        picks = run.pick(uc, hold, run.ties(lvl, pos, uniq), d, balanced=False)
        if picks is None or len(picks) != 1:
            return None
        (c, _), = picks
        if collapsed:
            run.slice_dom[:] = uniq[c]
            run.next_slice = k
        if lvl == prob.host:
            run.counts[uniq[c]] = role_counts
            return Assignment(run.counts, k, run.slice_dom) if prob.fits(np.array([uniq[c]]), run.counts) else None
        pos = pos[inv == c]
        start = lvl + 1
    if not run.descend(start, pos, d, slice_mode, role_counts):
        return None
    secondary = [r for r in prob.order[1:]]
    if slice_mode and prob.slice_level != prob.host:
        sd_all = np.asarray(prob.slice_dom(pos))
        for sd in np.unique(run.slice_dom):
            region = pos[sd_all == sd]
            need = prob.comp[:k][run.slice_dom == sd].sum(axis=0) - run.counts[region].sum(axis=0)
            for r in secondary:
                if not run.near(region, r, int(need[r])):
                    return None
    elif not slice_mode:
        for r in secondary:
            if not run.near(pos, r, int(role_counts[r])):
                return None
    used = np.flatnonzero(run.counts.sum(axis=1))
    if not prob.fits(used, run.counts) or (run.counts.sum(axis=0) != role_counts).any():
        return None
    return Assignment(run.counts, k, run.slice_dom)
