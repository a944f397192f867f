"""Greedy gang placement: best-fit tree descent over the domains, top down.

Always available, fast, and the baseline CP-SAT must match or beat. Phases:

1. **Units.** A unit is a slice (when the gang has slices, at and above the slice level)
   or a member of the primary role (the heaviest). Elastic gangs try every member, then
   binary-search the most units that still fit (at least ``min_members``). Slices of
   several compositions (a launcher in the first slice only, roles that do not divide into
   slices) are handed out by type: a child's capacity is how many of the wanted slices its
   slice-domains hold, each counted by its own composition (``gang_model.slice_fill``:
   scarcest type first, each type to the slice-domains where it costs the later types
   least, then largest first).
2. **Required domain.** With a required level, the best-fit domain of that level that
   holds the whole gang alone (fewest spare units, then fewest free GPUs, then lowest id);
   with several roles, the domain's free resources summed over its nodes must cover all
   roles together (exact for a host, a necessary condition for a wider domain).
3. **Descent.** At each level, among the children of the domains chosen so far: if one
   child holds everything, the best fit; otherwise the fewest children (largest first)
   with the best fit for the remainder. ``balanced`` spreads the units of the balance
   level's children as evenly as capacity allows (water filling). With slices of several
   types, a child that cannot hold all takes first the types the other children have the
   least room for. At the slice level, slices are handed to slice-domains (of each type,
   the lowest ids first). At the host level the same rule picks nodes (ties: link cost,
   then free GPUs, then topology order).
4. **Other roles** (e.g. a launcher) go to the nearest nodes with room: nodes already
   used, then nodes sharing the narrowest domain with them, and so on up; inside their
   slice's domain when the gang has slices, inside the required domain when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.gang_model import (
    BIG,
    Assignment,
    GangProblem,
    demand,
    row_ids,
    slice_bins,
    slice_fill,
    slice_resources,
    slices_fit,
    type_order,
    unit_capacity,
)

COMPRESS_BINS = 64  # above this many bins in a pick, equal bins of a child are counted as one row


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
        # slices of several compositions: handed out by type (``descend_typed``), not counted
        # as the largest of each role
        self.typed = self.slicing and len(prob.types) > 1
        if self.typed:
            self.res, self.take = slice_resources(prob)
            self.queue = [list(np.flatnonzero(prob.unit_type[:k] == t)) for t in range(len(prob.types))]

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
                if not self.settle_slices(lvl, int(uniq[c]), sub, ids):
                    return False
            elif lvl == p.host:
                self.counts[uniq[c], p.primary] += share
            elif not self.descend(lvl + 1, sub, share, slice_mode, sec if single else None):
                return False
        return True

    def pick_typed(self, lvl: int, pos: np.ndarray, want: np.ndarray, hold: np.ndarray | None = None,
                   single: bool = False) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]] | None:
        """``pick`` for slices of several types: (children, child of each position, [(child, slices per type)]).

        The same rule: one best-fit child that holds every slice, else the child holding the
        most (which keeps the slices the others have least room for), until one holds the rest.
        A child's capacity comes from ``slice_fill`` over its slice-domains, each slice counted
        by its own composition; best fit compares how many slices of the most common type it
        holds next to the others.
        """
        p = self.prob
        key = pos if lvl == p.host else p.levels[lvl].dom[pos]
        uniq, inv = np.unique(key, return_inverse=True)
        inv = inv.reshape(-1)
        nch = len(uniq)
        bchild, _, offer = slice_bins(p, self.res, pos, inv)
        alone = lvl == p.slice_level  # each child is one slice-domain
        fit = np.stack([slices_fit(offer, self.take[t]) for t in range(len(self.take))], axis=1)  # [bins, types]
        some = (fit[:, want > 0] > 0).any(axis=1)  # bins that hold no slice wanted here play no part
        if not some.all():
            bchild, offer, fit = bchild[some], offer[some], fit[some]
        mult = np.ones(len(offer), dtype=np.int64)
        if not alone and len(offer) > COMPRESS_BINS:
            # equal bins of one child become one row (many nodes look alike)
            rid = row_ids(offer)
            _, first, cnt = np.unique(bchild * (int(rid.max()) + 1) + rid, return_index=True, return_counts=True)
            o = np.argsort(first, kind="stable")
            rows, mult = first[o], cnt[o].astype(np.int64)
            bchild, offer, fit = bchild[rows], offer[rows], fit[rows]
        child_fit = np.stack([np.bincount(bchild, weights=fit[:, t] * mult, minlength=nch)
                              for t in range(fit.shape[1])], axis=1).astype(np.int64)
        order = type_order(child_fit.sum(axis=0), want)
        bins = _Bins(offer, bchild, mult, nch, alone)
        ties = self.ties(lvl, pos, uniq)
        ids = np.arange(nch)
        est0 = self.holds(bins, want, order)  # largest first: what each child holds of all
        if hold is None:
            hold = np.ones(nch, dtype=bool)
        alive = np.ones(nch, dtype=bool)
        rem = want.copy()
        picks: list[tuple[int, np.ndarray]] = []
        largest = iter(np.lexsort([ids, *reversed(ties), -est0]).tolist())
        others = child_fit.sum(axis=0)  # room per type of the live children
        while rem.sum() > 0:
            need = int(rem.sum())
            cand = np.flatnonzero(alive & hold & (est0 >= need))
            if len(cand):
                est = est0 if not picks else self.holds(bins, rem, order, cand)
                holders = cand[est[cand] >= need]
                if len(holders):
                    picks.append((self.best_fit(bins, holders, ties, want, order), rem))
                    break
            c = next(largest, None)
            if single or c is None or est0[c] == 0:
                return None
            alive[c] = False
            others = others - child_fit[c]
            got = self.keep(bins, c, rem, others, order)
            if got.sum():
                picks.append((c, got))
                rem = rem - got
        if p.balance == lvl and len(picks) > 1:
            even = self.balanced_shares(bins, child_fit, [c for c, _ in picks], est0, want, order)
            if even is not None:
                picks = even
        return uniq, inv, picks

    def best_fit(self, bins: _Bins, holders: np.ndarray, ties: list[np.ndarray], want: np.ndarray,
                 order: list[int]) -> int:
        """The holder with the least room: the fewest slices of the most common type next to the rest."""
        if len(holders) == 1:
            return int(holders[0])
        roomy = want.copy()
        roomy[int(np.argmax(want))] = BIG
        uc = self.holds(bins, roomy, order, holders)
        keys = [holders, *(t[holders] for t in reversed(ties)), uc[holders]]
        return int(holders[np.lexsort(keys)[0]])

    def holds(self, bins: _Bins, want: np.ndarray, order: list[int], only: np.ndarray | None = None) -> np.ndarray:
        """Per child (of ``only``, else all): how many slices of ``want`` its bins hold (``slice_fill``)."""
        offer, bchild, mult = bins.offer, bins.child, bins.mult
        if only is not None:
            mask = _member(only, bins.n)[bchild]
            offer, bchild, mult = offer[mask], bchild[mask], mult[mask]
        got = slice_fill(offer, bchild, self.take, want, order, alone=bins.alone, mult=mult).sum(axis=1)
        return np.bincount(bchild, weights=got, minlength=bins.n).astype(np.int64)

    def keep(self, bins: _Bins, c: int, want: np.ndarray, others: np.ndarray, order: list[int],
             limit: int | None = None) -> np.ndarray:
        """Slices per type that child ``c`` takes of ``want`` (at most ``limit``): first the types
        the other children (room ``others`` per type) are shortest of."""
        short = want[order] - np.minimum(want[order], others[order])
        mine = [order[i] for i in np.lexsort((np.arange(len(order)), -short))]
        sel = bins.child == c
        got = slice_fill(bins.offer[sel], np.zeros(int(sel.sum()), dtype=np.int64), self.take, want, mine, limit,
                         mult=bins.mult[sel])
        return got.sum(axis=0)

    def balanced_shares(self, bins: _Bins, child_fit: np.ndarray, chosen: list[int], est: np.ndarray,
                        want: np.ndarray, order: list[int]) -> list[tuple[int, np.ndarray]] | None:
        """The chosen children's slices water-filled (as even as their capacity allows), or None
        when the slices of each type do not work out that way."""
        shares = waterfill(est[chosen], int(want.sum()))
        rem = want.copy()
        out = []
        for i, (c, share) in enumerate(zip(chosen, shares.tolist(), strict=True)):
            got = self.keep(bins, c, rem, child_fit[chosen[i + 1:]].sum(axis=0), order, share)
            if int(got.sum()) != share:
                return None
            out.append((c, got))
            rem = rem - got
        return out

    def take_ids(self, counts: np.ndarray) -> np.ndarray:
        """The next free slice ids of each type (lowest first)."""
        ids: list[int] = []
        for t, n in enumerate(counts.tolist()):
            ids += self.queue[t][:n]
            del self.queue[t][:n]
        return np.array(sorted(ids), dtype=np.int64)

    def descend_typed(self, lvl: int, pos: np.ndarray, want: np.ndarray) -> bool:
        """Place the slices ``want`` (per type) inside ``pos`` from level ``lvl`` down to the slice level."""
        p = self.prob
        if want.sum() == 0:
            return True
        got = self.pick_typed(lvl, pos, want)
        if got is None:
            return False
        uniq, inv, picks = got
        for c, share in picks:
            sub = pos[inv == c]
            if lvl != p.slice_level:
                if not self.descend_typed(lvl + 1, sub, share):
                    return False
                continue
            if not self.settle_slices(lvl, int(uniq[c]), sub, self.take_ids(share)):
                return False
        return True

    def settle_slices(self, lvl: int, dom: int, sub: np.ndarray, ids: np.ndarray) -> bool:
        """Slices ``ids`` go to slice-domain ``dom`` (its nodes ``sub``): counted on the node at the
        host level, else their members descend into it. False when they do not fit."""
        p = self.prob
        self.slice_dom[ids] = dom
        need = p.comp[ids].sum(axis=0)
        if lvl == p.host:
            self.counts[dom] += need
            return bool(p.fits(np.array([dom]), self.counts))
        return self.descend(lvl + 1, sub, int(need[p.primary]), False, need)

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


@dataclass
class _Bins:
    """The slice-domains (bins) under the children of one pick: what each offers, its child, how
    many equal bins a row stands for, the number of children, and whether each child is one bin."""

    offer: np.ndarray
    child: np.ndarray
    mult: np.ndarray
    n: int
    alone: bool


def _member(ids: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[ids] = True
    return out


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
            slice_mode = run.typed = False
            d = int(role_counts[prob.primary])
        if run.typed:
            # the required level is above the slice level here (else the slices collapse)
            dom = prob.levels[lvl].dom
            ids, inv = np.unique(dom, return_inverse=True)
            per_role = np.stack([np.bincount(inv.reshape(-1), weights=prob.cap[:, r], minlength=len(ids))
                                 for r in range(prob.n_roles)], axis=1)
            got = run.pick_typed(lvl, pos, prob.type_counts(k), (per_role >= role_counts).all(axis=1), single=True)
            if got is None:
                return None
            uniq, inv, ((c, _),) = got
        else:
            uniq, inv, uc, per_role = run.children(lvl, pos, slice_mode)
            hold = (per_role >= role_counts).all(axis=1)
            if prob.n_roles > 1:
                # the roles share the domain's resources (GPUs, CPU, shared slots): exact on one
                # node, a necessary condition summed over a wider domain's nodes
                srt = np.argsort(inv, kind="stable")
                free = np.add.reduceat(prob.free[srt], np.searchsorted(inv[srt], np.arange(len(uniq))), axis=0)
                hold &= ((role_counts @ prob.need)[None, :] <= free).all(axis=1)
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
    if run.typed:
        if not run.descend_typed(start, pos, prob.type_counts(k)):
            return None
    elif not run.descend(start, pos, d, slice_mode, role_counts):
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
