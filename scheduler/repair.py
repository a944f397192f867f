"""Gang repair: replace the members a gang lost, keeping the survivors where they are.

``repair_gang(engine, snap, gang, survivors, lost_members, ctx)`` answers "where do the
replacement pods go" for a gang some of whose members died with their node. The
snapshot must show the cluster after the failure: survivors still hold their resources,
the lost members' resources are released, failed nodes are marked ``failed``. Phases:

1. **Members.** Each lost member name (``<gang>/<role>-<i>``, as ``place_gang`` names
   them) gives its role and so its pod shape. With no survivor at all there is nothing
   to keep: the gang is placed anew with ``place_gang``.
2. **Region.** Replacements stay inside the gang's original constraint: with
   ``required_level`` the survivors' domain of that level (their node for ``host``, their
   NVLink clique for ``clique``); with slices, the domain of the member's surviving
   slice-mates at ``slice_level``.
3. **Rails.** A ``rail_aligned`` gang's primary-role replacement takes the GPU indices
   the lost member had (``lost``, when the caller knows them), else one of the GPU sets
   the surviving members of its role use, so GPU i stays on rail i.
4. **Closeness.** Every node gets a depth per survivor: how many tiers (network levels
   from the widest, NVLink clique, host) it shares with that survivor's node
   (``TopologyArrays.common_level`` in vector form). Candidates rank by the smallest depth
   (the widest tier the gang's traffic would newly cross), then the member-weighted sum
   of depths (close to most survivors), then the bandwidth and hops of
   ``link_between`` to the nearest survivor, then best fit (fewest whole GPUs left free),
   then node index.
5. **Place.** Lost members go one by one, heaviest role first, each on the engine's
   feasible nodes (the same filters as every decision) and GPU sets (``gpuset`` via
   ``engine.build_candidates``); each replacement counts as a survivor for the next.
   A slice none of whose members survived goes whole: its first member where the ranking
   puts it, the others in that slice-domain; when they do not fit there, the next one.
6. **Check.** The result must keep one required domain and fit the snapshot.

The outcome is a ``RequestOutcome`` of kind ``gang`` holding placements for the
replacements only (status ``GREEDY``, solver ``repair``), or ``INFEASIBLE`` with a
reason naming the member that does not fit and why. Never raises for "does not fit".

``plan_repair`` is what drivers call: repair; if impossible, the whole gang placed anew
on the snapshot without its survivors (``replace``: delete them all, bind the new
placement); if that fails too, ``requeue`` (delete them all, wait in the queue).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.placement import Placement, RequestOutcome, SolverReport, SolverStatus
from models.requests import GPU_MILLI, GangRequest, GangRole
from plugins.base import Context
from scheduler.snapshot import PodShape, Snapshot

SOLVER = "repair"
LINK_TIE_CANDIDATES = 32  # link_between is consulted only among this many best-ranked nodes
SLICE_DOMAIN_TRIES = 32  # slice-domains tried for a slice whose members were all lost


def repair_gang(engine: Any, snap: Snapshot, gang: GangRequest, survivors: list[Placement],
                lost_members: list[str], ctx: Context, *, lost: Sequence[Placement] = (),
                slice_groups: Mapping[str, Hashable] | None = None) -> RequestOutcome:
    """Placements for ``lost_members`` that keep ``survivors`` fixed, or INFEASIBLE with a reason.

    ``slice_groups`` (member name -> slice key, survivors and lost members) says which members
    share a slice where member names do not (the live scheduler's survivors and replacement
    pods are not named by rank); without it a slice is ``slice_size`` consecutive member names.
    """
    t0 = time.perf_counter()
    head = f"repair gang {gang.name}"
    roles = dict(gang.member_names())
    unknown = [m for m in lost_members if m not in roles]
    if unknown:
        return _infeasible(gang, t0, f"{head}: {', '.join(unknown)} not a member (members are {gang.name}/<role>-<i>)")
    if not lost_members:
        return RequestOutcome(gang.name, "gang", [], SolverReport(SolverStatus.GREEDY, SOLVER, note="nothing lost"))
    if not survivors:
        return _anew(engine, snap, gang, lost_members, ctx, t0)
    a = snap.arrays
    work = snap.copy()
    order = _heaviest_first(gang, lost_members, roles)
    region, region_why = _required_region(a, gang, survivors)
    if region is not None and not region.any():
        return _infeasible(gang, t0, f"{head}: {region_why}")
    old = {p.pod: p for p in lost}
    kept: list[Placement] = list(survivors)
    out: list[Placement] = []

    def place(member: str, away: np.ndarray | None = None) -> str:
        """Place one replacement (not on ``away`` nodes): "" when placed, else why not."""
        role = roles[member]
        shape = PodShape.of(role)
        mask = region
        why = region_why
        smask, swhy = _slice_region(a, gang, member, kept, slice_groups)
        if smask is not None:
            mask = smask if mask is None else mask & smask
            why = swhy if why is None else f"{why}, {swhy}"
        if away is not None:
            mask = ~away if mask is None else mask & ~away
            why = "in a slice-domain tried before" if why is None else f"{why}, in a slice-domain tried before"
        slots = _rail_slots(gang, member, role, kept, old.get(member))
        got, reason = _place_member(engine, work, shape, ctx, mask, why, slots, kept)
        if got is None:
            return f"member {member} ({shape.describe()}): {reason}"
        node, gpus = got
        p = Placement(member, a.node_names[node], node, gpus, shape.gpu_milli, shape.cpu_milli, shape.memory_mib,
                      gang=gang.name, role=role.name, extended=shape.extended)
        work.apply(node, gpus, shape.gpu_milli, shape.cpu_milli, shape.memory_mib, extended=shape.extended)
        kept.append(p)
        out.append(p)
        return ""

    done: set[str] = set()
    for member in order:
        if member in done:
            continue
        group = _whole_lost_slice(a, gang, member, order, kept, slice_groups)
        done.update(group)
        why = place(member) if len(group) == 1 else _place_slice(a, gang, group, place, work, kept, out)
        if why:
            return _infeasible(gang, t0, f"{head}: {why}")
    bad = _check(a, gang, kept)
    if bad:
        return _infeasible(gang, t0, f"{head}: {bad}")
    out.sort(key=lambda p: lost_members.index(p.pod))
    survivor_nodes = {p.node_index for p in survivors}
    new_nodes = {p.node_index for p in out} - survivor_nodes
    objective = {"shared_tiers": float(_shared_tiers(a, survivors, out)), "new_nodes": float(len(new_nodes))}
    where = f" within {gang.required_level} {_domain_name(a, gang.required_level, survivors)}" \
        if gang.required_level else ""
    note = f"kept {len(survivors)} survivors, replaced {len(out)}{where}"
    report = SolverReport(SolverStatus.GREEDY, SOLVER, time_s=time.perf_counter() - t0, objective=objective, note=note)
    return RequestOutcome(gang.name, "gang", out, report)


def _whole_lost_slice(a: Any, gang: GangRequest, member: str, order: list[str], kept: list[Placement],
                      groups: Mapping[str, Hashable] | None) -> list[str]:
    """The replacements of ``member``'s slice (placing order) when none of that slice is placed, else ``[member]``."""
    if gang.slice_size is None or gang.slice_level is None or chain_dom(a, gang.slice_level) is None:
        return [member]
    if groups is not None:
        key = groups.get(member)
        if key is None:
            return [member]
        mates = [m for m in order if groups.get(m) == key]
        placed = any(groups.get(p.pod) == key for p in kept)
    else:
        index = {m: i for i, (m, _) in enumerate(gang.member_names())}
        j = index[member] // gang.slice_size
        mates = [m for m in order if index[m] // gang.slice_size == j]
        placed = any(p.pod in index and index[p.pod] // gang.slice_size == j for p in kept)
    return [member] if placed else mates


def _place_slice(a: Any, gang: GangRequest, group: list[str], place: Any, work: Snapshot, kept: list[Placement],
                 out: list[Placement]) -> str:
    """A whole lost slice: its first member where ``place`` puts it, the rest in that slice-domain;
    when they do not all fit there, the next slice-domain ("" when placed, else why not)."""
    assert gang.slice_level is not None
    dom = chain_dom(a, gang.slice_level)
    assert dom is not None
    away = np.zeros(a.n_nodes, dtype=bool)
    for tried in range(SLICE_DOMAIN_TRIES):
        why = place(group[0], away if tried else None)
        if why:
            break
        start = len(out) - 1
        d = int(dom[out[start].node_index])
        why = next((w for w in map(place, group[1:]) if w), "")
        if not why:
            return ""
        for p in out[start:]:  # give the slice-domain back, try the next one
            work.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, sign=-1, extended=p.extended)
            kept.remove(p)
        del out[start:]
        away |= dom == d
    else:
        tried = SLICE_DOMAIN_TRIES
    if not tried:
        return why
    return f"no {gang.slice_level} has room for all {len(group)} lost members of its slice " \
           f"({tried} tried; last: {why})"


@dataclass
class RepairPlan:
    """What to do with a gang that lost members: the first of three answers that works.

    ``repair``: bind ``outcome.placements`` (the replacements; survivors stay).
    ``replace``: delete every surviving member, bind ``outcome.placements`` (all members).
    ``requeue``: delete every surviving member; the gang waits in the queue.
    ``why`` says why the earlier answers did not work (for events).
    """

    action: str  # "repair" | "replace" | "requeue"
    outcome: RequestOutcome
    why: str = ""


def plan_repair(engine: Any, snap: Snapshot, gang: GangRequest, survivors: list[Placement],
                lost_members: list[str], ctx: Context, *, lost: Sequence[Placement] = (),
                slice_groups: Mapping[str, Hashable] | None = None) -> RepairPlan:
    """Repair keeping survivors; else re-place the whole gang; else requeue it."""
    from scheduler.gang import place_gang

    res = repair_gang(engine, snap, gang, survivors, lost_members, ctx, lost=lost, slice_groups=slice_groups)
    if res.placed:
        return RepairPlan("repair", res)
    freed = snap.copy()
    for p in survivors:
        freed.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, sign=-1, owner=p.owner,
                    extended=p.extended)
    whole = place_gang(engine, freed, gang, ctx)
    if whole.placed:
        return RepairPlan("replace", whole, res.reason)
    return RepairPlan("requeue", whole, f"{res.reason}; whole gang: {whole.reason}")


# ------------------------------------------------------------------------ phases 1-3


def _anew(engine: Any, snap: Snapshot, gang: GangRequest, lost_members: list[str], ctx: Context,
          t0: float) -> RequestOutcome:
    """No survivor: place the gang from scratch; keep the placements of the lost members."""
    from scheduler.gang import place_gang

    res = place_gang(engine, snap, gang, ctx)
    if not res.placed:
        return _infeasible(gang, t0, f"repair gang {gang.name}: no survivor, placing anew: {res.reason}")
    wanted = set(lost_members)
    res.placements = [p for p in res.placements if p.pod in wanted]
    res.report.note = "; ".join(x for x in ("no survivor: placed anew", res.report.note) if x)
    return res


def _heaviest_first(gang: GangRequest, lost: list[str], roles: dict[str, GangRole]) -> list[str]:
    rank = {r.name: i for i, r in enumerate(sorted(
        gang.roles, key=lambda r: (-r.gpus * r.gpu_milli, -r.cpu_milli, -r.memory_mib)))}
    index = {m: i for i, (m, _) in enumerate(gang.member_names())}
    return sorted(dict.fromkeys(lost), key=lambda m: (rank[roles[m].name], index[m]))


def chain_dom(a: Any, level: str) -> np.ndarray | None:
    """Domain id per node for a gang level name (a network level, ``clique`` or ``host``/``node``)."""
    if level in a.level_names:
        return a.domain[a.level_index(level)]
    if level == "clique":
        return np.where(a.clique >= 0, a.clique, len(a.clique_names) + np.arange(a.n_nodes))
    if level in ("host", "node"):
        return np.arange(a.n_nodes)
    return None


def _domain_name(a: Any, level: str | None, placed: Sequence[Placement]) -> str:
    if level is None or not placed:
        return ""
    n = placed[0].node_index
    if level in a.level_names:
        return a.node_domain(n, a.level_index(level))
    if level == "clique":
        c = int(a.clique[n])
        return a.clique_names[c] if c >= 0 else a.node_names[n]
    return a.node_names[n]


def _required_region(a: Any, gang: GangRequest, survivors: list[Placement]) -> tuple[np.ndarray | None, str | None]:
    """Phase 2: nodes inside the survivors' required domain (None: no requirement)."""
    if gang.required_level is None:
        return None, None
    dom = chain_dom(a, gang.required_level)
    if dom is None:
        return np.zeros(a.n_nodes, dtype=bool), f"unknown required level {gang.required_level!r}"
    ids = np.unique(dom[[p.node_index for p in survivors]])
    if len(ids) > 1:
        # survivors already span domains (placed by someone else): keep the one most of them share
        counts = np.bincount(dom[[p.node_index for p in survivors]])
        ids = np.array([int(counts.argmax())])
    name = _domain_name(a, gang.required_level, [p for p in survivors if dom[p.node_index] == ids[0]])
    return dom == ids[0], f"outside required {gang.required_level} {name}"


def _slice_region(a: Any, gang: GangRequest, member: str, kept: list[Placement],
                  groups: Mapping[str, Hashable] | None = None) -> tuple[np.ndarray | None, str | None]:
    """Phase 2: with slices, the domain of the member's placed slice-mates."""
    if gang.slice_size is None or gang.slice_level is None:
        return None, None
    dom = chain_dom(a, gang.slice_level)
    if dom is None:
        return None, None
    if groups is not None:
        key = groups.get(member)
        if key is None:
            return None, None
        mates = [p for p in kept if groups.get(p.pod) == key]
        label = "its slice's"
    else:
        index = {m: i for i, (m, _) in enumerate(gang.member_names())}
        j = index[member] // gang.slice_size
        mates = [p for p in kept if p.pod in index and index[p.pod] // gang.slice_size == j]
        label = f"slice {j}'s"
    if not mates:
        return None, None
    d = int(dom[mates[0].node_index])
    return dom == d, f"outside {label} {gang.slice_level} {_domain_name(a, gang.slice_level, mates)}"


def _rail_slots(gang: GangRequest, member: str, role: GangRole, kept: list[Placement],
                old: Placement | None) -> list[tuple[int, ...]] | None:
    """Phase 3: the GPU sets a rail-aligned replacement may take (None: any set)."""
    if not gang.rail_aligned or role.gpus == 0 or role.gpu_milli < GPU_MILLI:
        return None
    primary = max(gang.roles, key=lambda r: (r.gpus * r.gpu_milli, r.cpu_milli, r.memory_mib))
    if role.name != primary.name:
        return None
    if old is not None and len(old.gpus) == role.gpus:
        return [tuple(sorted(old.gpus))]
    slots = sorted({tuple(sorted(p.gpus)) for p in kept if p.role == role.name and len(p.gpus) == role.gpus})
    return slots or None


# ------------------------------------------------------------------------ phases 4-5


def depth_to(a: Any, nodes: np.ndarray) -> np.ndarray:
    """int [N, S]: tiers each cluster node shares with each of ``nodes`` (levels, clique, host)."""
    d = np.zeros((a.n_nodes, len(nodes)), dtype=np.int64)
    alive = np.ones((a.n_nodes, len(nodes)), dtype=bool)
    for lv in range(len(a.level_names)):
        alive &= a.domain[lv][:, None] == a.domain[lv][nodes][None, :]
        d += alive
    if len(a.clique) and int(a.clique.max()) >= 0:
        c = a.clique
        alive &= (c[:, None] == c[nodes][None, :]) & (c[:, None] >= 0)
        d += alive
    d += np.arange(a.n_nodes)[:, None] == nodes[None, :]
    return d


def _place_member(engine: Any, snap: Snapshot, shape: PodShape, ctx: Context, region: np.ndarray | None,
                  region_why: str | None, slots: list[tuple[int, ...]] | None,
                  kept: list[Placement]) -> tuple[tuple[int, tuple[int, ...]] | None, str]:
    from scheduler.engine import build_candidates, filter_nodes

    a = snap.arrays
    states = {p.name: p.prepare(shape, snap, ctx) for p in engine.all_plugins}
    ok, reason = filter_nodes(engine, snap, shape, states)
    if region is not None:
        outside = int((ok & ~region).sum())
        ok = ok & region
        if not ok.any():
            return None, f"{reason}; {outside} feasible node(s) {region_why}" if outside else reason
    if not ok.any():
        return None, reason
    cand = build_candidates(snap, shape, ok)
    nodes = np.asarray(cand.node, dtype=np.int64)
    sets = [tuple(int(g) for g in cand.gpus[m]) for m in range(len(cand))]
    if slots is not None:
        full = snap.gpu_free == GPU_MILLI
        keep = []
        for m, n in enumerate(nodes):
            slot = next((s for s in slots if max(s) < full.shape[1] and full[n, list(s)].all()), None)
            if slot is not None:
                sets[m] = slot
                keep.append(m)
        if not keep:
            return None, f"{len(nodes)} node(s) fit but none has the rail-aligned GPU set(s) " \
                         f"{', '.join(str(list(s)) for s in slots)} free"
        nodes = nodes[keep]
        sets = [sets[m] for m in keep]
    if not len(nodes):
        return None, reason or f"no node has a free set of {shape.gpus} GPUs"
    s_nodes = np.array(sorted({p.node_index for p in kept}), dtype=np.int64)
    weight = np.array([sum(1 for p in kept if p.node_index == n) for n in s_nodes], dtype=np.int64)
    depth = depth_to(a, s_nodes)[nodes]
    worst = depth.min(axis=1)
    total = depth @ weight
    left = (snap.gpu_free[nodes] == GPU_MILLI).sum(axis=1) - np.array([len(s) for s in sets])
    if shape.is_shared:
        left = np.array([int(snap.gpu_free[n, s[0]]) - shape.gpu_milli for n, s in zip(nodes, sets, strict=True)])
    order = np.lexsort((nodes, left, -total, -worst))
    top = order[:LINK_TIE_CANDIDATES]
    lead = top[(worst[top] == worst[top[0]]) & (total[top] == total[top[0]])]
    if len(lead) > 1 and shape.gpus > 0:
        best_key, best = None, int(lead[0])
        for m in lead:
            key = _link_key(a, int(nodes[m]), sets[m], kept, depth[m], s_nodes)
            if best_key is None or key < best_key:
                best_key, best = key, int(m)
        pick = best
    else:
        pick = int(order[0])
    return (int(nodes[pick]), sets[pick]), ""


def _link_key(a: Any, node: int, gpus: tuple[int, ...], kept: list[Placement], depth: np.ndarray,
              s_nodes: np.ndarray) -> tuple[float, int]:
    """(-bandwidth, hops) of ``link_between`` from the candidate to its nearest survivor."""
    near = int(s_nodes[int(np.argmax(depth))])
    peer = next(p for p in kept if p.node_index == near)
    if not gpus or not peer.gpus:
        return (0.0, 0)
    g = gpus[0]
    rail = int(a.type_of(node).rail[g])
    h = next((x for x in peer.gpus if int(a.type_of(near).rail[x]) == rail), peer.gpus[0])
    if near == node and h == g:
        return (-float("inf"), 0)
    link = a.link_between(node, g, near, h)
    return (-link.bandwidth_gbps, link.hops)


# ------------------------------------------------------------------------ phase 6


def _check(a: Any, gang: GangRequest, placed: list[Placement]) -> str:
    if gang.required_level is not None:
        dom = chain_dom(a, gang.required_level)
        if dom is not None and len(np.unique(dom[[p.node_index for p in placed]])) > 1:
            return f"members would span more than one {gang.required_level}"
    if len({p.pod for p in placed}) != len(placed):
        return "a member would be placed twice"
    return ""


def _shared_tiers(a: Any, survivors: list[Placement], out: list[Placement]) -> int:
    """The fewest tiers any replacement shares with a survivor (higher = closer)."""
    if not out:
        return 0
    s = np.array(sorted({p.node_index for p in survivors}), dtype=np.int64)
    d = depth_to(a, s)
    return int(min(d[p.node_index].min() for p in out))


def _infeasible(gang: GangRequest, t0: float, reason: str) -> RequestOutcome:
    report = SolverReport(SolverStatus.INFEASIBLE, SOLVER, time_s=time.perf_counter() - t0)
    return RequestOutcome(gang.name, "gang", [], report, reason)
