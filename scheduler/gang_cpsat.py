"""CP-SAT on the aggregated gang model: interchangeable nodes grouped, never a variable per GPU.

Groups: candidate nodes with the same domain at every level, per-role capacity, link
cost, free GPUs (and, for gangs with several roles, the same free resources). Nodes of a
group are interchangeable, so the model only decides how many of them to use.

Variables: ``m[g,r]`` members of role r in group g, ``u[g]`` nodes of g used, ``y[l,d]``
domain d of level l used, ``s[d,t]`` slices of type t in slice-domain d, ``K`` units
placed (elastic gangs only), ``mx``/``mn`` (balanced gangs only).

Constraints: role totals (table of ``K`` when elastic); ``m <= cap * u`` and ``u <= sum m``;
per-resource sums for several roles; ``sum m over d <= capacity(d) * y`` and
``y <= sum m over d``; a child used implies its parent; exactly one domain at the
required level; slice members per slice-domain equal whole slices; the spread bounds.

Objective, lexicographic (see ``gang.objective_terms``): members (elastic), domains per
level top down (the balance spread right after its level), cliques, nodes, link cost,
fragmentation. Terms are packed into stages of weighted sums that stay below
``STAGE_BITS`` bits; each stage is solved, then fixed (``<= its best``) for the next.
Every stage is warm-started (hinted) with the best answer so far, the first with greedy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from scheduler.gang_model import Assignment, GangProblem, min_count, objective_terms

STAGE_BITS = 40


def _sum(items: list) -> object:
    return cp_model.LinearExpr.sum(items) if items else 0


def _wsum(items: list, coeffs: list[int]) -> object:
    return cp_model.LinearExpr.weighted_sum(items, coeffs) if items else 0


@dataclass
class CpsatResult:
    """What the solver found: an assignment (or none) and how sure it is."""

    assignment: Assignment | None
    optimal: bool = False
    gap: float | None = None
    proven_infeasible: bool = False
    note: str = ""
    stages: int = 0


@dataclass
class _Groups:
    key: np.ndarray  # int64 [G, ...]: first node's row of group columns
    nodes: list[np.ndarray]  # positions of each group's nodes, topology order
    size: np.ndarray  # int64 [G]
    first: np.ndarray  # int64 [G]: first position (topology order of groups)


def groups(prob: GangProblem) -> tuple[_Groups, np.ndarray]:
    """Group interchangeable candidate nodes; returns the groups and each node's group."""
    cols = []
    for lv in prob.levels:
        cols.append(np.where(lv.singleton[lv.dom], -1, lv.dom) if lv.is_clique else lv.dom)
    cols += [prob.cap[:, r] for r in range(prob.n_roles)]
    cols += [prob.link[:, r] for r in range(prob.n_roles)]
    cols.append(prob.frag)
    if prob.n_roles > 1:
        cols += [prob.free[:, c] for c in range(prob.free.shape[1])]
    key = np.stack(cols, axis=1).astype(np.int64)
    uniq, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    gid = rank[inv]
    sort = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[sort], np.arange(len(order) + 1))
    nodes = [sort[bounds[i]: bounds[i + 1]] for i in range(len(order))]
    return _Groups(uniq[order], nodes, np.diff(bounds).astype(np.int64), first[order].astype(np.int64)), gid


class _Model:
    """The CP-SAT model of one gang problem and the bookkeeping to hint and decode it."""

    def __init__(self, prob: GangProblem) -> None:
        self.prob = p = prob
        self.g, self.gid = groups(prob)
        self.model = md = cp_model.CpModel()
        ng, nr = len(self.g.size), p.n_roles
        first = self.g.first
        self.cap = p.cap[first]
        self.link = p.link[first]
        self.frag = p.frag[first]
        self.free = p.free[first]
        totals = p.role_counts(p.max_units)
        self.max_members = int(totals.sum())
        self.hint_vars: list[tuple[cp_model.IntVar, str, tuple]] = []
        slicing = p.slice_level is not None
        clique = next((i for i, lv in enumerate(p.levels) if lv.is_clique), None)
        self.single = np.zeros(ng, dtype=bool)  # group outside any clique (its nodes count as cliques)
        if clique is not None:
            lv = p.levels[clique]
            self.single = lv.singleton[lv.dom[first]]
        self.hostlike = np.zeros(ng, dtype=bool)  # slices counted per node of the group
        if slicing and p.slice_level == p.host:
            self.hostlike[:] = True
        elif slicing and p.slice_level == clique:
            self.hostlike = self.single.copy()
        # members and nodes
        self.m: list[list[cp_model.IntVar | None]] = []
        self.u: list[cp_model.IntVar] = []
        hi_m = np.minimum(self.g.size[:, None] * self.cap, totals[None, :])
        for g in range(ng):
            row = []
            for r in range(nr):
                hi = int(hi_m[g, r])
                v = md.new_int_var(0, hi, "") if hi > 0 else None
                row.append(v)
                if v is not None:
                    self.hint_vars.append((v, "m", (g, r)))
            self.m.append(row)
            ms = [v for v in row if v is not None]
            if nr == 1 and self.cap[g, 0] == 1 and not self.hostlike[g] and ms:
                self.u.append(ms[0])
                continue
            u = md.new_int_var(0, int(min(self.g.size[g], self.max_members)), "")
            self.hint_vars.append((u, "u", (g,)))
            self.u.append(u)
            for r, v in enumerate(row):
                if v is not None:
                    md.add(v <= int(self.cap[g, r]) * u)
            md.add(_sum(ms) >= u)
            if nr > 1:
                for c in range(p.need.shape[1]):
                    rs = [r for r, v in enumerate(row) if v is not None and p.need[r, c] > 0]
                    if rs:
                        md.add(_wsum([row[r] for r in rs], [int(p.need[r, c]) for r in rs])
                               <= int(self.free[g, c]) * u)
        # units placed and role totals
        self.k_var = None
        if p.elastic:
            self.k_var = md.new_int_var(p.min_units, p.max_units, "K")
            self.hint_vars.append((self.k_var, "K", ()))
            table = np.cumsum(np.vstack([np.zeros((1, nr), dtype=np.int64), p.comp]), axis=0)
            self.role_total = []
            for r in range(nr):
                t = md.new_int_var(0, int(totals[r]), f"p{r}")
                md.add_element(self.k_var, [int(x) for x in table[:, r]], t)
                self.role_total.append(t)
                self.hint_vars.append((t, "p", (r,)))
        else:
            self.role_total = [int(x) for x in totals]
        for r in range(nr):
            md.add(_sum([row[r] for row in self.m if row[r] is not None]) == self.role_total[r])
        self.members_g = [_sum([v for v in row if v is not None]) for row in self.m]
        # lower bounds: fewest domains whose capacity covers the smallest gang (valid cuts)
        least = p.min_units * p.unit
        node_cap = np.minimum(self.cap, totals[None, :]).sum(axis=1)
        grp_cap = np.minimum(hi_m, totals[None, :]).sum(axis=1)
        md.add(_sum(self.u) >= min_count(np.repeat(node_cap, self.g.size), least))
        # domains
        self.y: list[dict[int, cp_model.IntVar]] = []
        for i, lv in enumerate(p.levels):
            dom_g = lv.dom[first]
            real = ~self.single if lv.is_clique else np.ones(ng, dtype=bool)
            ys: dict[int, cp_model.IntVar] = {}
            dcap = np.bincount(dom_g[real], weights=grp_cap[real], minlength=int(dom_g.max()) + 1)
            for d in np.unique(dom_g[real]):
                gs = np.flatnonzero((dom_g == d) & real)
                y = md.new_bool_var("")
                inside = _sum([self.members_g[g] for g in gs])
                md.add(inside <= int(min(dcap[d], self.max_members)) * y)
                md.add(inside >= y)
                ys[int(d)] = y
                self.hint_vars.append((y, "y", (i, int(d))))
            self.y.append(ys)
            caps = dcap[list(ys)]
            items = list(ys.values())
            if lv.is_clique:
                singles = np.flatnonzero(self.single)
                caps = np.concatenate([caps, np.repeat(node_cap[singles], self.g.size[singles])])
                items += [self.u[g] for g in singles]
            md.add(_sum(items) >= min_count(caps, least))
            if lv.parent is not None and i > 0 and not p.levels[i - 1].is_clique:
                for d, y in ys.items():
                    up = self.y[i - 1].get(int(lv.parent[d]))
                    if up is not None:
                        md.add(y <= up)
        self._capacity_cuts(grp_cap)
        if p.required is not None:
            if p.required == p.host:
                md.add(_sum(self.u) == 1)
            else:
                md.add(_sum(list(self.y[p.required].values())) == 1)
        if slicing:
            self._slices()
        self.spread = None
        if p.balance is not None:
            self._balance()

    def _capacity_cuts(self, grp_cap: np.ndarray) -> None:
        """Members in a domain <= the capacity of its n largest children used (tangents of a concave bound).

        For a parent domain whose children hold c_1 >= c_2 >= ... members: with n children
        used it holds at most c_1 + ... + c_n, and for every k that is at most
        c_1 + ... + c_k + c_{k+1} (n - k). This lets the LP see how few children can do.
        """
        p, md = self.prob, self.model
        first = self.g.first
        for i in range(len(p.levels) - 1):
            up, down = p.levels[i], p.levels[i + 1]
            if up.is_clique or down.is_clique:
                continue
            pdom, cdom = up.dom[first], down.dom[first]
            for d in np.unique(pdom):
                gs = np.flatnonzero(pdom == d)
                kids = np.unique(cdom[gs])
                if len(kids) < 2:
                    continue
                caps = np.array([min(int(grp_cap[gs[cdom[gs] == c]].sum()), self.max_members) for c in kids])
                if caps.min() == caps.max():
                    continue  # equal children: the linking constraints already say this
                srt = np.sort(caps)[::-1]
                top = np.r_[0, np.cumsum(srt)]
                inside = _sum([self.members_g[g] for g in gs])
                used = _sum([self.y[i + 1][int(c)] for c in kids])
                for k in range(len(srt)):
                    if top[k] >= self.max_members:
                        break
                    md.add(inside <= int(top[k]) + int(srt[k]) * (used - k))

    def _slices(self) -> None:
        p, md = self.prob, self.model
        nt, nr = len(p.types), p.n_roles
        max_t = p.type_counts(p.max_units)
        if self.k_var is not None:
            table = np.cumsum(np.vstack([np.zeros((1, nt), dtype=np.int64),
                                         np.eye(nt, dtype=np.int64)[p.unit_type]]), axis=0)
            self.type_total = []
            for t in range(nt):
                v = md.new_int_var(0, int(max_t[t]), f"n{t}")
                md.add_element(self.k_var, [int(x) for x in table[:, t]], v)
                self.type_total.append(v)
        else:
            self.type_total = [int(x) for x in max_t]
        self.s: dict[tuple[str, int], list[cp_model.IntVar]] = {}
        first = self.g.first
        per_type: list[list[cp_model.IntVar]] = [[] for _ in range(nt)]
        for g in np.flatnonzero(self.hostlike):
            sc = []
            for t in range(nt):
                ok = p.types[t] > 0
                sc.append(int((self.cap[g][ok] // p.types[t][ok]).min()))
            vs = [md.new_int_var(0, int(min(max_t[t], self.g.size[g] * sc[t])), f"sg{g}_{t}") for t in range(nt)]
            for t, v in enumerate(vs):
                md.add(v <= sc[t] * self.u[g])
                per_type[t].append(v)
                self.hint_vars.append((v, "sg", (int(g), t)))
            for r in range(nr):
                lhs = self.m[g][r] if self.m[g][r] is not None else 0
                md.add(lhs == _wsum(vs, [int(x) for x in p.types[:, r]]))
            self.s[("g", int(g))] = vs
        if p.slice_level != p.host:
            lv = p.levels[p.slice_level]
            dom_g = lv.dom[first]
            for d in np.unique(dom_g[~self.hostlike]):
                gs = np.flatnonzero((dom_g == d) & ~self.hostlike)
                vs = [md.new_int_var(0, int(max_t[t]), f"sd{d}_{t}") for t in range(nt)]
                for t, v in enumerate(vs):
                    per_type[t].append(v)
                    self.hint_vars.append((v, "sd", (int(d), t)))
                for r in range(nr):
                    inside = _sum([self.m[g][r] for g in gs if self.m[g][r] is not None])
                    md.add(inside == _wsum(vs, [int(x) for x in p.types[:, r]]))
                self.s[("d", int(d))] = vs
        for t in range(nt):
            md.add(_sum(per_type[t]) == self.type_total[t])

    def _balance(self) -> None:
        p, md = self.prob, self.model
        lv = p.levels[p.balance]
        dom_g = lv.dom[self.g.first]
        mx = md.new_int_var(0, self.max_members, "mx")
        mn = md.new_int_var(0, self.max_members, "mn")
        for d, y in self.y[p.balance].items():
            inside = _sum([self.members_g[g] for g in np.flatnonzero(dom_g == d)])
            md.add(mx >= inside)
            md.add(mn <= inside + self.max_members * (1 - y))
        md.add(mn <= mx)
        self.spread = (mx, mn)
        self.hint_vars += [(mx, "mx", ()), (mn, "mn", ())]

    # ----------------------------------------------------------------- objective
    def terms(self) -> list[tuple[str, object, int]]:
        """(name, expression, upper bound) per objective term, most important first."""
        p = self.prob
        maxm = self.max_members
        out = []
        total_nodes = int(self.g.size.sum())
        for i, lv in enumerate(p.levels):
            ys = self.y[i]
            items = list(ys.values())
            hi = len(ys)
            if lv.is_clique:
                singles = np.flatnonzero(self.single)
                items += [self.u[g] for g in singles]
                hi += int(self.g.size[singles].sum())
            out.append((f"{lv.name}s", _sum(items), min(hi, maxm)))
            if p.balance == i:
                mx, mn = self.spread
                out.append((f"spread.{lv.name}", mx - mn, maxm))
        out.append(("nodes", _sum(self.u), min(total_nodes, maxm)))
        lv_, lc = [], []
        for g, row in enumerate(self.m):
            for r, v in enumerate(row):
                if v is not None and self.link[g, r]:
                    lv_.append(v)
                    lc.append(int(self.link[g, r]))
        totals = p.role_counts(p.max_units)
        link_hi = int(sum(int(totals[r]) * int(p.link[:, r].max(initial=0)) for r in range(p.n_roles)))
        out.append(("link_cost", _wsum(lv_, lc), link_hi))
        frag_hi = min(total_nodes, maxm) * int(self.frag.max(initial=0))
        out.append(("fragmentation", _wsum(self.u, [int(f) for f in self.frag]), frag_hi))
        if p.elastic:
            placed = _sum(self.role_total)
            out.insert(0, ("members", maxm - placed, (p.max_units - p.min_units) * p.unit))
        assert [n for n, _, _ in out] == objective_terms(p)
        return out

    def domain_cuts(self, terms: list[tuple[str, object, int]]) -> None:
        """``term >= sum over required domains d of LB_d * y_d`` (exactly one y_d is 1)."""
        p = self.prob
        if not p.domain_lbs or p.required is None or p.required >= p.host:
            return
        ys = self.y[p.required]
        for name, expr, _ in terms:
            lbs = p.domain_lbs.get(name)
            if not lbs:
                continue
            items = [(ys[d], v) for d, v in lbs.items() if d in ys and v > 0]
            if items:
                self.model.add(expr >= _wsum([y for y, _ in items], [v for _, v in items]))

    # ---------------------------------------------------------------------- hints
    def hint_values(self, a: Assignment) -> dict[cp_model.IntVar, int]:
        """Every variable's value for a concrete assignment (to warm-start the solver)."""
        p = self.prob
        counts = a.counts
        ng = len(self.g.size)
        mg = np.zeros((ng, p.n_roles), dtype=np.int64)
        np.add.at(mg, self.gid, counts)
        used = counts.sum(axis=1) > 0
        ug = np.bincount(self.gid, weights=used, minlength=ng).astype(np.int64)
        out: dict[cp_model.IntVar, int] = {}
        sg: dict[tuple[int, int], int] = {}
        sd: dict[tuple[int, int], int] = {}
        if a.slice_dom is not None:
            pos_of = {}
            if p.slice_level != p.host:
                lv = p.levels[p.slice_level]
                for pos in range(len(p.nodes)):
                    pos_of.setdefault(int(lv.dom[pos]), pos)
            for j, d in enumerate(a.slice_dom.tolist()):
                t = int(p.unit_type[j])
                pos = d if p.slice_level == p.host else pos_of[d]
                g = int(self.gid[pos])
                if self.hostlike[g]:
                    sg[(g, t)] = sg.get((g, t), 0) + 1
                else:
                    sd[(d, t)] = sd.get((d, t), 0) + 1
        members_lv = []
        for lv in p.levels:
            per = np.bincount(lv.dom, weights=counts.sum(axis=1), minlength=int(lv.dom.max()) + 1)
            members_lv.append(per)
        for v, kind, key in self.hint_vars:
            if kind == "m":
                out[v] = int(mg[key])
            elif kind == "u":
                out[v] = int(ug[key[0]])
            elif kind == "y":
                i, d = key
                out[v] = int(members_lv[i][d] > 0) if d < len(members_lv[i]) else 0
            elif kind == "K":
                out[v] = int(a.units)
            elif kind == "p":
                out[v] = int(a.counts[:, key[0]].sum())
            elif kind == "sg":
                out[v] = sg.get(key, 0)
            elif kind == "sd":
                out[v] = sd.get(key, 0)
            elif kind in ("mx", "mn"):
                lv = p.levels[p.balance]
                per = members_lv[p.balance]
                doms = np.unique(lv.dom[used])
                vals = per[doms] if len(doms) else np.zeros(1)
                out[v] = int(vals.max() if kind == "mx" else vals.min())
        return out

    # --------------------------------------------------------------------- decode
    def decode(self, value) -> Assignment | None:
        """Counts per node from the solver's group values; None if a group cannot hold them."""
        p = self.prob
        counts = np.zeros((len(p.nodes), p.n_roles), dtype=np.int64)
        k = int(value(self.k_var)) if self.k_var is not None else p.max_units
        holders: list[tuple[int, int, list[int]]] = []  # (first position, slice-domain id, slices per type)
        nt = len(p.types)
        for g, row in enumerate(self.m):
            nodes = self.g.nodes[g]
            if self.hostlike[g]:
                left = [int(value(v)) for v in self.s[("g", g)]]
                for pos in nodes:
                    got = [0] * nt
                    for t in range(nt):
                        while left[t] > 0:
                            counts[pos] += p.types[t]
                            if not p.fits(np.array([pos]), counts):
                                counts[pos] -= p.types[t]
                                break
                            left[t] -= 1
                            got[t] += 1
                    if any(got):
                        sd = int(pos) if p.slice_level == p.host else int(p.levels[p.slice_level].dom[pos])
                        holders.append((int(pos), sd, got))
                if any(left):
                    return None
                continue
            for r in p.order:
                v = row[r]
                left = int(value(v)) if v is not None else 0
                if left == 0:
                    continue
                room = p.room(nodes, counts, r)
                before = np.cumsum(room) - room
                take = np.clip(left - before, 0, room)
                if int(take.sum()) < left:
                    return None
                counts[nodes, r] += take
        slice_dom = None
        if p.slice_level is not None:
            if p.slice_level != p.host:
                lv = p.levels[p.slice_level]
                dom_g = lv.dom[self.g.first]
                for key, vs in self.s.items():
                    if key[0] == "d":
                        d = key[1]
                        pos = int(self.g.first[np.flatnonzero((dom_g == d) & ~self.hostlike)].min())
                        holders.append((pos, d, [int(value(v)) for v in vs]))
            holders.sort()
            slice_dom = np.full(k, -1, dtype=np.int64)
            for j in range(k):
                t = int(p.unit_type[j])
                for h in holders:
                    if h[2][t] > 0:
                        h[2][t] -= 1
                        slice_dom[j] = h[1]
                        break
                else:
                    return None
        return Assignment(counts, k, slice_dom)


def solve(prob: GangProblem, hint: Assignment | None, time_limit_s: float, seed: int = 0,
          workers: int = 1) -> CpsatResult:
    """Staged lexicographic solve; the best assignment found and whether it is proven optimal."""
    t0 = time.perf_counter()
    mdl = _Model(prob)
    md = mdl.model
    terms = mdl.terms()
    mdl.domain_cuts(terms)
    stages: list[list[tuple[str, object, int]]] = []
    cur: list[tuple[str, object, int]] = []
    width = 1
    for t in terms:
        r = t[2] + 1
        if cur and width * r > (1 << STAGE_BITS):
            stages.append(cur)
            cur, width = [], 1
        cur.append(t)
        width *= r
    stages.append(cur)
    hint_vals = mdl.hint_values(hint) if hint is not None else None
    values = None
    optimal, gap, note = True, None, ""
    for n, stage in enumerate(stages):
        weights, w = [], 1
        for t in reversed(stage):
            weights.append(w)
            w *= t[2] + 1
        weights.reverse()
        expr = sum(wt * t[1] for wt, t in zip(weights, stage, strict=True))
        if all(t[2] == 0 for t in stage):
            if n > 0:
                continue
        md.minimize(expr)
        md.clear_hints()
        if hint_vals is not None:
            for v, val in hint_vals.items():
                md.add_hint(v, val)
        solver = cp_model.CpSolver()
        left = time_limit_s - (time.perf_counter() - t0)
        if left <= 0:
            optimal, note = False, "time limit reached before the last objective stage"
            gap = gap if gap is not None else 1.0
            break
        prm = solver.parameters
        prm.max_time_in_seconds = left
        prm.num_workers = workers
        prm.random_seed = seed
        status = solver.solve(md)
        if status == cp_model.INFEASIBLE and n == 0:
            return CpsatResult(None, proven_infeasible=True, note="aggregated model infeasible", stages=1)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if values is None:
                return CpsatResult(None, note=f"solver found no placement ({solver.status_name(status)})",
                                   stages=n + 1)
            optimal, gap, note = False, 1.0, "solver stopped at the time limit"
            break
        values = {v: solver.value(v) for v, _, _ in mdl.hint_vars}
        for row in mdl.m:
            for v in row:
                if v is not None:
                    values[v] = solver.value(v)
        hint_vals = values
        best = int(round(solver.objective_value))
        if status != cp_model.OPTIMAL:
            bound = solver.best_objective_bound
            optimal = False
            gap = float((best - bound) / max(abs(best), 1))
            note = f"solver stopped at the time limit in objective stage {n + 1}/{len(stages)}"
            break
        md.add(expr <= best)
    if values is None:
        return CpsatResult(None, note="no solution")
    a = mdl.decode(lambda v: values[v] if not isinstance(v, int) else v)
    return CpsatResult(a, optimal=optimal, gap=gap, note=note, stages=len(stages))
