"""The gang placement model shared by the greedy and CP-SAT paths.

``GangProblem``: a gang on its candidate nodes (topology order), with per node and role
how many members fit, the resources they take, link and fragmentation costs, and the
domain of every node at each level of the chain (network levels widest first, then the
NVLink clique when the cluster has cliques; the host is implicit). ``Assignment``: a
placement in counts (members per node and role, slices per slice-domain).
``objective_terms`` / ``evaluate`` / ``sort_key`` define the lexicographic objective both
solvers are judged by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.requests import GangRequest
from scheduler.snapshot import PodShape

BIG = 1 << 30  # "unbounded" per-node capacity (a role that asks for none of a resource)
LINK_SCALE = 100  # per-member link cost: 0 (best possible set) .. 100 (no link quality)
# resource columns of GangProblem.free / .need; one more per extended resource the gang asks for
WHOLE, MILLI, CPU, MEM, PODS = range(5)
BASE_COLUMNS = 5


@dataclass(frozen=True)
class Level:
    """One level of the chain over the candidate nodes (a network level or the clique)."""

    name: str
    dom: np.ndarray  # int64 [M]: domain id of each candidate node
    names: tuple[str, ...]  # domain id -> display name
    frag: np.ndarray  # int64 [D]: free whole GPUs in each domain (whole cluster)
    parent: np.ndarray | None  # int64 [D]: domain id one level up (network levels below the top)
    singleton: np.ndarray  # bool [D]: clique level, a node outside any clique (its own domain)
    is_clique: bool = False


@dataclass
class GangProblem:
    """A gang on the candidate nodes, in topology order; everything numpy, indices local."""

    req: GangRequest
    shapes: tuple[PodShape, ...]
    order: tuple[int, ...]  # role indices, heaviest first; order[0] is the primary role
    nodes: np.ndarray  # int64 [M]: cluster node index of each candidate
    cap: np.ndarray  # int64 [M, R]: members of role r that fit on the node alone
    free: np.ndarray  # int64 [M, C]: whole GPUs, GPU milli, CPU milli, MiB, pod slots, ``ext_names``, shared slots
    need: np.ndarray  # int64 [R, C]: what one member of role r takes of each
    link: np.ndarray  # int64 [M, R]: link cost per member of role r on the node
    frag: np.ndarray  # int64 [M]: free whole GPUs on the node plus in each domain it belongs to
    levels: tuple[Level, ...]
    required: int | None  # chain index: a level, or len(levels) for the host
    balance: int | None  # level index the members are balanced over
    slice_level: int | None  # chain index; None without slices
    unit: int  # members per unit (slice_size, or 1)
    comp: np.ndarray  # int64 [U, R]: members of each role in unit j
    unit_type: np.ndarray  # int64 [U]: slice type of unit j (rows of ``types``)
    types: np.ndarray  # int64 [T, R]: distinct slice compositions
    min_units: int
    rail_slots: tuple[tuple[int, ...], ...] | None = None  # primary role's GPU set per slot
    elastic: bool = False
    # per objective term, per domain id of the required level: a lower bound when the gang is in that domain
    domain_lbs: dict[str, dict[int, int]] | None = None
    ext_names: tuple[str, ...] = ()  # extended resources of columns BASE_COLUMNS.. of free / need

    @property
    def n_roles(self) -> int:
        return len(self.shapes)

    @property
    def primary(self) -> int:
        return self.order[0]

    @property
    def max_units(self) -> int:
        return len(self.comp)

    @property
    def host(self) -> int:
        return len(self.levels)

    def role_counts(self, k: int) -> np.ndarray:
        """Members of each role among the first ``k`` units."""
        return self.comp[:k].sum(axis=0)

    def type_counts(self, k: int) -> np.ndarray:
        return np.bincount(self.unit_type[:k], minlength=len(self.types))

    def slice_dom(self, pos: np.ndarray | int) -> np.ndarray | int:
        """Slice-domain id of candidate positions (the node position at the host level)."""
        assert self.slice_level is not None
        if self.slice_level == self.host:
            return pos
        return self.levels[self.slice_level].dom[pos]

    def room(self, pos: np.ndarray, counts: np.ndarray, r: int) -> np.ndarray:
        """How many more members of role ``r`` fit on each position given ``counts``."""
        out = self.cap[pos, r] - counts[pos, r]
        if self.n_roles == 1:
            return np.maximum(out, 0)  # one role: capacity already accounts for every resource
        used = counts[pos] @ self.need
        for c in range(self.need.shape[1]):
            n = int(self.need[r, c])
            if n > 0:
                out = np.minimum(out, (self.free[pos, c] - used[:, c]) // n)
        return np.maximum(out, 0)

    def fits(self, pos: np.ndarray, counts: np.ndarray) -> bool:
        """Do these member counts (rows for ``pos``) fit their nodes together."""
        c = counts[pos]
        return bool((c <= self.cap[pos]).all() and ((c @ self.need) <= self.free[pos]).all())


@dataclass
class Assignment:
    """A placement in counts: members per (candidate node, role), slices to slice-domains."""

    counts: np.ndarray  # int64 [M, R]
    units: int  # units placed (all of them unless elastic)
    slice_dom: np.ndarray | None = None  # int64 [units]: slice-domain id of each slice


def unit_capacity(prob: GangProblem, pos: np.ndarray, child: np.ndarray, slice_mode: bool,
                  upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per child (dense ``child`` ids over ``pos``): units it can take alone, and members per role.

    In slice mode a unit is a slice, counted per slice-domain inside the child (a slice
    never spans two); otherwise a unit is a member of the primary role. With one slice
    composition, slices of it; with several, how many of the gang's slices the child holds,
    each counted by its own composition (``slice_counts``). With ``upper``, an upper bound
    instead (for ruling domains out): a slice takes ``unit`` members, at least the fewest
    of each role any slice has.
    """
    nch = int(child.max()) + 1 if len(child) else 0
    per_role = np.stack([np.bincount(child, weights=prob.cap[pos, r], minlength=nch)
                         for r in range(prob.n_roles)], axis=1).astype(np.int64)
    if not slice_mode:
        return per_role[:, prob.primary], per_role
    if len(prob.types) > 1 and not upper:
        return slice_counts(prob, pos, child, prob.type_counts(prob.max_units)), per_role
    sd = np.asarray(prob.slice_dom(pos), dtype=np.int64)
    pair = child * (int(sd.max()) + 1) + sd
    up, pinv = np.unique(pair, return_inverse=True)
    pinv = pinv.reshape(-1)
    per = prob.types.min(axis=0) if upper else prob.types.max(axis=0)
    totals = prob.role_counts(prob.max_units)
    units = np.full(len(up), BIG, dtype=np.int64)
    members = np.zeros(len(up), dtype=np.int64)
    for r in range(prob.n_roles):
        if per[r] > 0 or upper:
            c = np.bincount(pinv, weights=prob.cap[pos, r], minlength=len(up)).astype(np.int64)
            members += np.minimum(c, totals[r])
            if per[r] > 0:
                units = np.minimum(units, c // per[r])
    if upper:
        units = np.minimum(units, members // prob.unit)
    return np.bincount(up // (int(sd.max()) + 1), weights=units, minlength=nch).astype(np.int64), per_role


def slice_resources(prob: GangProblem) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate what it offers a slice-domain, and per slice type what one slice takes.

    Columns: members of each role (``cap``), then the resource columns of ``free``. A
    slice-domain offers the sum over its nodes: for a host that is exact (``fits``); for a
    wider domain it is a necessary condition (the CP-SAT model implies it), since members
    of one slice may sit on different nodes of it.
    """
    return (np.concatenate([prob.cap, prob.free], axis=1),
            np.concatenate([prob.types, prob.types @ prob.need], axis=1))


def slice_bins(prob: GangProblem, res: np.ndarray, pos: np.ndarray,
               child: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slice-domains inside each child (dense ``child`` ids over ``pos``) and what they offer.

    A slice-domain that two children share (a clique across racks) is one bin per child.
    Returns per bin: its child, its slice-domain id, and its columns of ``res`` summed.
    """
    sd = np.asarray(prob.slice_dom(pos), dtype=np.int64)
    if prob.slice_level == prob.host:
        return child, sd, res[pos]
    width = int(sd.max()) + 1 if len(sd) else 1
    pair = child * width + sd
    order = np.argsort(pair, kind="stable")
    ps = pair[order]
    start = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]]) if len(ps) else np.zeros(0, dtype=np.int64)
    if not len(start):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, res.shape[1]), dtype=np.int64)
    up = ps[start]
    return up // width, up % width, np.add.reduceat(res[pos[order]], start, axis=0)


def slices_fit(offer: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Per bin: how many slices taking ``take`` (one row of ``slice_resources``' types) fit in ``offer``."""
    cols = take > 0
    return (offer[:, cols] // take[cols]).min(axis=1)


def type_order(supply: np.ndarray, want: np.ndarray) -> list[int]:
    """Slice types in the order they are handed out: scarcest first (``supply``: slices of each
    type that fit, every bin alone, per slice wanted), then the rarer, then the first."""
    live = [t for t in range(len(want)) if want[t] > 0]
    ratio = [int(supply[t]) / int(want[t]) for t in live]
    return [live[i] for i in np.lexsort((live, [int(want[t]) for t in live], ratio))]


def slice_fill(offer: np.ndarray, group: np.ndarray, take: np.ndarray, want: np.ndarray, order: list[int],
               limit: int | None = None, alone: bool = False, mult: np.ndarray | None = None) -> np.ndarray:
    """Greedy: slices of each type per bin, for every group of bins on its own.

    Each group gets the same demand ``want`` (slices per type) and at most ``limit``
    slices in all. Types go in ``order``; within a group a type's slices go first to the
    bins where one costs the types after it the fewest slices, then to the roomiest
    (largest first), then in bin order (``alone``: every group is one bin). A row of
    ``offer`` may stand for ``mult`` equal bins, filled one after another. Returns
    ``[rows, types]``: slices per row (summed over its bins); ``offer`` is left as it was.
    """
    nb, nt = len(offer), len(take)
    out = np.zeros((nb, nt), dtype=np.int64)
    if not nb:
        return out
    left = offer.copy()
    grp, origin, rank = group, np.arange(nb), np.arange(nb)  # rank: place in bin order
    m = np.ones(nb, dtype=np.int64) if mult is None else mult.astype(np.int64)
    ng = int(group.max()) + 1
    room = np.full(ng, limit if limit is not None else BIG, dtype=np.int64)
    live = [t for t in order if want[t] > 0]
    for i, t in enumerate(live):
        fit = slices_fit(left, take[t])
        idx = np.flatnonzero((fit > 0) & (m > 0))  # only bins with room take part
        if not len(idx):
            continue
        f, g = fit[idx], grp[idx]
        if alone:  # one bin per group: nothing to order
            got = np.minimum(np.minimum(int(want[t]), room[g]), f)
            out[origin[idx], t] += got
            left[idx] -= got[:, None] * take[t]
            room[g] -= got
            continue
        loss = np.zeros(len(idx), dtype=np.int64)
        if i + 1 < len(live):
            now, after = left[idx], np.maximum(left[idx] - take[t], 0)
            for u in live[i + 1:]:
                loss += slices_fit(now, take[u]) - slices_fit(after, take[u])
        o = np.lexsort((rank[idx], -f, loss, g))  # by group, then loss, then largest first, then bin order
        g, f, b = g[o], f[o], idx[o]
        cap = f * m[b]
        excl = np.cumsum(cap) - cap
        first = np.searchsorted(g, g)  # sorted by group: each row's group starts here
        got = np.minimum(np.maximum(np.minimum(int(want[t]), room[g]) - (excl - excl[first]), 0), cap)
        out[:, t] += np.bincount(origin[b], weights=got, minlength=nb).astype(np.int64)
        room -= np.bincount(g, weights=got, minlength=ng).astype(np.int64)
        # a row's bins, in order: ``full`` take f slices each, one the rest ``part``, the others none
        full = got // f
        part = got - full * f
        whole = ((full == m[b]) & (part == 0)) | ((full == 0) & (part > 0) & (m[b] == 1))  # all its bins alike
        left[b[whole]] -= np.where(full > 0, f, part)[whole, None] * take[t]
        split = ~whole & (got > 0)
        b, f, g, full, part = b[split], f[split], g[split], full[split], part[split]
        m[b] -= full + (part > 0)
        fb, pb = full > 0, part > 0
        if len(b):
            left = np.concatenate([left, left[b[fb]] - f[fb, None] * take[t], left[b[pb]] - part[pb, None] * take[t]])
            m = np.concatenate([m, full[fb], np.ones(int(pb.sum()), dtype=np.int64)])
            grp = np.concatenate([grp, g[fb], g[pb]])
            origin = np.concatenate([origin, origin[b[fb]], origin[b[pb]]])
            sub = np.concatenate([np.full(len(rank), 2), np.zeros(int(fb.sum()), dtype=np.int64),
                                  np.ones(int(pb.sum()), dtype=np.int64)])
            parent = np.concatenate([rank, rank[b[fb]], rank[b[pb]]])
            rank = np.empty(len(parent), dtype=np.int64)
            rank[np.lexsort((sub, parent))] = np.arange(len(parent))
    return out


_ROW_HASH = np.random.default_rng(0).random(64) + 0.5


def row_ids(rows: np.ndarray) -> np.ndarray:
    """Dense ids of the distinct rows of an int matrix (equal rows, equal ids; exact)."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    k = rows.shape[1]
    coef = _ROW_HASH[:k] if k <= len(_ROW_HASH) else np.random.default_rng(0).random(k) + 0.5
    _, first, inv = np.unique(rows @ coef, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if (rows == rows[first[inv]]).all():
        return inv.astype(np.int64)
    view = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.dtype.itemsize * k))).ravel()
    return np.unique(view, return_inverse=True)[1].reshape(-1).astype(np.int64)


def slice_counts(prob: GangProblem, pos: np.ndarray, child: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per child (dense ``child`` ids over ``pos``): how many of the slices ``want`` (per type)
    it holds, each slice counted by its own composition and filled greedily (``slice_fill``)."""
    res, take = slice_resources(prob)
    nch = int(child.max()) + 1 if len(child) else 0
    bchild, _, offer = slice_bins(prob, res, pos, child)
    supply = np.array([slices_fit(offer, take[t]).sum() for t in range(len(take))])
    got = slice_fill(offer, bchild, take, want, type_order(supply, want)).sum(axis=1)
    return np.bincount(bchild, weights=got, minlength=nch).astype(np.int64)


def demand(prob: GangProblem, k: int, slice_mode: bool) -> tuple[int, np.ndarray]:
    counts = prob.role_counts(k)
    return (k if slice_mode else int(counts[prob.primary])), counts


def objective_terms(prob: GangProblem) -> list[str]:
    """Term names, most important first: members (elastic), domains per level top-down
    (with the balance spread after its level), cliques, nodes, link cost, fragmentation."""
    names = ["members"] if prob.elastic else []
    for i, lv in enumerate(prob.levels):
        names.append(f"{lv.name}s")
        if prob.balance == i:
            names.append(f"spread.{lv.name}")
    names += ["nodes", "link_cost", "fragmentation"]
    return names


def evaluate(prob: GangProblem, a: Assignment) -> dict[str, float]:
    """The objective terms of a placement, by the same rules the CP-SAT model uses.

    Fragmentation is summed over the used nodes: the node's free whole GPUs plus those
    of every domain it sits in, so used nodes, racks and blocks that are already full
    (best fit) score low and whole nodes and racks stay free.
    """
    per_node = a.counts.sum(axis=1)
    used = per_node > 0
    out: dict[str, float] = {}
    if prob.elastic:
        out["members"] = int(per_node.sum())
    for i, lv in enumerate(prob.levels):
        doms = np.unique(lv.dom[used])
        out[f"{lv.name}s"] = len(doms)
        if prob.balance == i:
            m = np.bincount(lv.dom[used], weights=per_node[used])[doms] if len(doms) else np.zeros(1)
            out[f"spread.{lv.name}"] = int(m.max() - m.min())
    out["nodes"] = int(used.sum())
    out["link_cost"] = int((prob.link * a.counts).sum())
    out["fragmentation"] = int(prob.frag[used].sum())
    return out


def sort_key(prob: GangProblem, obj: dict[str, float]) -> tuple[float, ...]:
    """Lexicographic key (smaller is better)."""
    return tuple(-obj[n] if n == "members" else obj[n] for n in objective_terms(prob))


def min_count(capacity: np.ndarray, demand: int) -> int:
    """Fewest of these capacities that add up to ``demand`` (0 if they never do)."""
    cum = np.cumsum(np.sort(np.asarray(capacity))[::-1])
    if not len(cum) or cum[-1] < demand:
        return 0
    return int(np.searchsorted(cum, demand)) + 1


def min_count_by(group: np.ndarray, capacity: np.ndarray, demand: int) -> tuple[np.ndarray, np.ndarray]:
    """``min_count`` for every group at once: (group ids, fewest members covering ``demand``, 0 if never)."""
    order = np.lexsort((-capacity, group))
    g, c = group[order], capacity[order]
    ids, start = np.unique(g, return_index=True)
    cum = np.cumsum(c)
    base = np.r_[0, cum][start]
    within = cum - np.repeat(base, np.diff(np.r_[start, len(g)]))
    rank = np.arange(len(g)) - np.repeat(start, np.diff(np.r_[start, len(g)])) + 1
    hit = np.where(within >= demand, rank, np.iinfo(np.int64).max)
    first = np.minimum.reduceat(hit, start) if len(g) else hit
    return ids, np.where(first == np.iinfo(np.int64).max, 0, first)
