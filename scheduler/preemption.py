"""Preemption planning: which lower-priority pods to evict so a pod or a gang fits. Pure, no I/O.

Follows kube-scheduler's default preemption (PostFilter), over the whole cluster at once
and with the engine deciding where the preemptor goes:

  1. Candidates. Bound allocations (not in flight, not already being deleted) of pods with
     a priority below the preemptor's, in groups: the members of one gang form one group
     (a gang runs all or nothing, so evicting one member evicts all of them) and a gang
     with any member at the preemptor's priority or above is left alone; every other pod
     is a group of its own. A group's priority is its highest member's.
  2. Tiers. Over the distinct group priorities, ascending: take every group at or below
     the tier off a copy of the snapshot and ask the engine to place the request there.
     The first tier where it is placed fixes the highest victim priority (kube-scheduler's
     criterion after PDB violations: the lowest possible highest-victim priority; see 5).
     No tier: no plan.
  3. Budgets first. Walk the tier's groups in reprieve order (below), counting each pod
     against every PodDisruptionBudget that selects it (same namespace, selector matches,
     not already in the budget's ``disruptedPods``); a group with a pod that takes a
     budget's ``disruptionsAllowed`` below zero is *breaking*. If there are breaking groups,
     the engine first places the request with only the other groups taken off: if that
     works, the breaking groups are no candidates at all for this tier.
  4. Reprieve. Keep the placement fixed and give the candidates back one by one: the
     breaking groups first (kube-scheduler gives back PDB-violating victims first, so they
     are kept if at all possible), then the others; within each, highest priority first,
     then the smallest (fewest GPUs, then fewest pods). A group stays where it is when the
     placement still fits beside it, otherwise it is taken off again and is a victim. The
     plan's ``pdb_violations`` counts the victim pods whose eviction takes a budget below
     zero, counting the other victims it selects.
  5. PDB tiers. A plan with violations is not taken at once: the next tiers (each taking
     more groups off) are planned too and the first plan without a violation wins; if none
     has one, the plan of the first placing tier stands. kube-scheduler puts fewest
     violations before lowest highest-victim priority; here the lowest tier still wins
     unless a higher one spares every budget, which is the closest the tier approach gets
     without comparing every tier's plan.

  6. Fewest victims (a single pod). Unless the first plan is one victim of the lowest
     candidate priority (nothing beats that), the engine's choice on the emptied cluster is one
     candidate; the nodes where the pod fits in that state with the fewest candidate pods
     on them (``NODE_CANDIDATES`` of them) are planned too, each with the engine placing
     the pod on that node alone, and the plan ranked best by kube-scheduler's
     pickOneNodeForPreemption order wins: fewest PDB violations, lowest highest-victim
     priority, smallest sum of victim priorities, fewest victims (then the engine's choice).
     A gang keeps the engine's placement: its members span nodes, and the tier already
     bounds what it evicts.

A preemptor with ``preemptionPolicy: Never`` (for a gang: any member) preempts nothing.
The plan's placements are the nomination: where the preemptor goes once the victims are gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.placement import Placement, RequestOutcome
from models.requests import GangRequest, PodRequest
from plugins.base import Context
from scheduler.engine import Engine, filter_counts, place
from scheduler.ledger import Allocation
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workloads.disruption import Budget, Tally, covering

NEVER = "Never"
NODE_CANDIDATES = 8  # for a single pod: nodes planned besides the engine's choice (phase 6)


@dataclass(frozen=True, slots=True)
class Holder:
    """A bound allocation and what preemption needs to know of its pod."""

    allocation: Allocation
    priority: int
    evictable: bool = True  # False: binding in flight (ASSUMED) or already being deleted
    labels: Mapping[str, str] = field(default_factory=dict)  # the pod's labels (PodDisruptionBudget selectors)


@dataclass(frozen=True)
class VictimGroup:
    """Pods evicted together: one pod, or every bound member of one gang."""

    key: str  # the gang key, or the pod key
    gang: str | None
    priority: int  # the highest of its members
    allocations: tuple[Allocation, ...]

    @property
    def pods(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.allocations)

    @property
    def gpus(self) -> int:
        return sum(len(a.gpus) for a in self.allocations)


@dataclass(frozen=True)
class PreemptionPlan:
    """Victims to delete and the placements the preemptor is nominated for."""

    request: str
    priority: int  # the preemptor's
    victims: tuple[VictimGroup, ...]
    placements: tuple[Placement, ...]
    victim_nodes: tuple[tuple[str, str], ...]  # (pod key, node name) of every victim pod
    pdb_violations: int = 0  # victim pods whose eviction takes a PodDisruptionBudget below zero

    @property
    def highest_victim_priority(self) -> int:
        return max(g.priority for g in self.victims)

    @property
    def victim_pods(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.victim_nodes)


def victim_groups(holders: Iterable[Holder], priority: int, exclude_gang: str | None = None) -> list[VictimGroup]:
    """Phase 1: the groups that may be evicted for a preemptor of ``priority`` (sorted by key)."""
    gangs: dict[str, list[Holder]] = {}
    singles: list[Holder] = []
    for h in holders:
        if h.allocation.gang is not None:
            gangs.setdefault(h.allocation.gang, []).append(h)
        else:
            singles.append(h)
    out = [VictimGroup(h.allocation.key, None, h.priority, (h.allocation,))
           for h in singles if h.evictable and h.priority < priority]
    for gang, members in gangs.items():
        if gang == exclude_gang or not all(m.evictable and m.priority < priority for m in members):
            continue
        allocs = tuple(sorted((m.allocation for m in members), key=lambda a: a.key))
        out.append(VictimGroup(gang, gang, max(m.priority for m in members), allocs))
    out.sort(key=lambda g: g.key)
    return out


def _take(snap: Snapshot, group: VictimGroup, sign: int) -> None:
    for a in group.allocations:
        snap.apply(a.node, a.gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, sign=sign, extended=a.extended)


def still_fits(snap: Snapshot, placements: Iterable[Placement]) -> bool:
    """Whether ``snap`` (with ``placements`` already applied) has nothing over-committed that they use:
    per node CPU, memory, pod slots and the extended resources they ask for; per GPU of their sets."""
    names = snap.arrays.ext_names
    for p in placements:
        n = p.node_index
        if snap.free_cpu[n] < 0 or snap.free_mem[n] < 0 or snap.free_pods[n] < 0:
            return False
        for name, _ in p.extended:
            if name in names and snap.free_ext[n, names.index(name)] < 0:
                return False
        if any(snap.gpu_free[n, g] < 0 for g in p.gpus):
            return False
    return True


Placer = Callable[[Snapshot], RequestOutcome]


def plan_preemption(engine: Engine, snapshot: Snapshot, holders: Iterable[Holder],
                    request: PodRequest | GangRequest, *,
                    preemption_policy: str = "PreemptLowerPriority",
                    budgets: Sequence[Budget] = (), ctx: Context | None = None,
                    placer: Placer | None = None) -> PreemptionPlan | None:
    """The victims and placements that let ``request`` in (phases in the module doc), or None.
    ``ctx`` is what the engine's decisions know (the arriving mix the fragmentation score packs
    against), as for the scheduler's other decisions. ``placer`` places the request on a
    snapshot when the engine's ``place`` is not the rule (the pending members of a partly bound
    gang, completed next to its bound ones); it must not change the snapshot."""
    if preemption_policy == NEVER:
        return None
    if placer is None:
        def placer(snap: Snapshot) -> RequestOutcome:
            return place(snap, [request], engine, ctx).outcomes[0]
    priority = request.priority
    holders = list(holders)
    groups = victim_groups(holders, priority, request.name if isinstance(request, GangRequest) else None)
    if not groups:
        return None
    budgets = list(budgets)
    cover: dict[str, tuple[int, ...]] = {}
    if budgets:
        members = {a.key for g in groups for a in g.allocations}
        cover = {h.allocation.key: covering(budgets, h.allocation.key, h.labels)
                 for h in holders if h.allocation.key in members}

    # 2. tiers: the lowest highest-victim priority that lets the request in; 5. more tiers while
    # the plan breaks a budget, for one that does not
    work = snapshot.copy()
    removed: list[VictimGroup] = []
    first: PreemptionPlan | None = None
    for tier in sorted({g.priority for g in groups}):
        for g in groups:
            if g.priority == tier:
                _take(work, g, -1)
                removed.append(g)
        placed, plan = _plan_tier(engine, work, removed, request, budgets, cover, placer, ctx)
        if not placed:
            continue
        if plan is None:
            return first  # it fits without evicting anyone: nothing (more) to preempt
        if plan.pdb_violations == 0:
            return plan
        if first is None:
            first = plan
    return first


def _importance(g: VictimGroup) -> tuple[int, int, int, str]:
    """Reprieve order: highest priority first, then the smallest (fewest GPUs, then fewest pods)."""
    return (-g.priority, g.gpus, len(g.allocations), g.key)


def _plan_tier(engine: Engine, work: Snapshot, removed: list[VictimGroup], request: PodRequest | GangRequest,
               budgets: Sequence[Budget], cover: Mapping[str, tuple[int, ...]], placer: Placer,
               ctx: Context | None = None) -> tuple[bool, PreemptionPlan | None]:
    """Phases 3 and 4 for one tier (``work`` has every group of ``removed`` taken off; it is not changed):
    whether the request is placed, and the plan (None when it needs no victim)."""
    order = sorted(removed, key=_importance)
    breaking: set[str] = set()
    if budgets:
        tally = Tally(budgets)
        # every pod is counted (a list, not a short-circuiting generator)
        breaking = {g.key for g in order if any([tally.take(a.key, cover.get(a.key, ())) for a in g.allocations])}
    if breaking:
        spared = work.copy()
        for g in removed:
            if g.key in breaking:
                _take(spared, g, 1)
        out = placer(spared)
        if out.placed:
            rest = [g for g in order if g.key not in breaking]
            return True, _best_node(engine, spared, rest, tuple(out.placements), request, budgets, cover, ctx)
    out = placer(work)
    if not out.placed:
        return False, None
    order = [g for g in order if g.key in breaking] + [g for g in order if g.key not in breaking]
    return True, _best_node(engine, work, order, tuple(out.placements), request, budgets, cover, ctx)


def _best_node(engine: Engine, work: Snapshot, order: list[VictimGroup], placements: tuple[Placement, ...],
               request: PodRequest | GangRequest, budgets: Sequence[Budget],
               cover: Mapping[str, tuple[int, ...]], ctx: Context | None = None) -> PreemptionPlan | None:
    """Phase 6: the reprieved plan of the engine's placement and, for a single pod, of the
    pod on each of a few other nodes; the one kube-scheduler would pick (``work`` unchanged)."""
    chosen = _reprieve(work.copy(), order, placements, request, budgets, cover)
    if not isinstance(request, PodRequest) or chosen is None:
        return chosen
    lowest = min(g.priority for g in order)
    if chosen.pdb_violations == 0 and len(chosen.victim_pods) == 1 and chosen.victims[0].priority == lowest:
        return chosen  # one victim of the lowest priority, breaking nothing: no node does better
    shape = PodShape.of(request, owner=request.owner, spread_level=request.spread_level)
    states = {p.name: p.prepare(shape, work, ctx or Context()) for p in engine.all_plugins}
    fits, _ = filter_counts(engine, work, shape, states)
    fits[placements[0].node_index] = False
    if not fits.any():
        return chosen
    crowd = np.zeros(work.n_nodes, dtype=np.int64)  # candidate pods taken off each node
    for g in order:
        for a in g.allocations:
            crowd[a.node] += 1
    nodes = np.flatnonzero(fits & (crowd > 0))  # a node with no candidate on it would not need preempting
    nodes = nodes[np.argsort(crowd[nodes], kind="stable")[:NODE_CANDIDATES]]
    best, best_key = chosen, _pick_key(chosen, 0)
    for rank, n in enumerate(nodes, start=1):
        alone = work.copy()
        alone.failed[:] = True
        alone.failed[n] = False
        alone._cache.clear()
        out = place(alone, [request], engine, ctx).outcomes[0]
        if not out.placed:
            continue
        plan = _reprieve(work.copy(), order, tuple(out.placements), request, budgets, cover)
        if plan is None:
            continue
        key = _pick_key(plan, rank)
        if key < best_key:
            best, best_key = plan, key
    return best


def _pick_key(plan: PreemptionPlan, rank: int) -> tuple[int, int, int, int, int]:
    """kube-scheduler's pickOneNodeForPreemption order (priorities offset so more victims weigh more)."""
    prios = [g.priority for g in plan.victims for _ in g.allocations]
    return (plan.pdb_violations, max(prios), sum(p + (1 << 31) for p in prios), len(prios), rank)


def _reprieve(work: Snapshot, order: list[VictimGroup], placements: tuple[Placement, ...],
              request: PodRequest | GangRequest, budgets: Sequence[Budget],
              cover: Mapping[str, tuple[int, ...]]) -> PreemptionPlan | None:
    """Give ``order``'s groups back one by one on ``work`` (changed) around the fixed ``placements``;
    the ones that do not fit are the victims. None when there are none."""
    for p in placements:
        work.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, extended=p.extended)
    victims: list[VictimGroup] = []
    for g in order:
        _take(work, g, 1)
        if not still_fits(work, placements):
            _take(work, g, -1)
            victims.append(g)
    if not victims:
        return None
    violations = 0
    if budgets:
        tally = Tally(budgets)
        for g in sorted(victims, key=_importance):
            violations += sum(tally.take(a.key, cover.get(a.key, ())) for a in g.allocations)
    names = work.arrays.node_names
    victims.sort(key=lambda g: (g.priority, g.key))
    victim_nodes = tuple((a.key, names[a.node]) for g in victims for a in g.allocations)
    return PreemptionPlan(request.name, request.priority, tuple(victims), placements, victim_nodes, violations)
