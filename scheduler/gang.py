"""Gang placement: all members or none, close together in the topology.

``place_gang(engine, snap, req, ctx)`` is what ``scheduler.engine.place`` calls for a
``GangRequest``. Phases (one module each):

1. **Capacity** (``gang_capacity``): per role the engine's filters and, per node, how
   many members fit alone; link and fragmentation costs; the candidate nodes in topology
   order with their domain at each level (network levels, then the NVLink clique).
2. **Level**: ``required_level`` keeps only domains that can hold the whole gang;
   ``preferred_level`` tries that level, then each wider one, then anywhere.
3. **Greedy** (``gang_greedy``): best-fit tree descent, always available.
4. **Reductions** (``gang_bound``): a gang that fits on one node is solved exactly;
   otherwise domains that cannot hold the optimum are dropped.
5. **CP-SAT** (``gang_cpsat``) on the aggregated model, warm-started from greedy,
   lexicographic objective (``gang_model.objective_terms``), time-limited.
6. **Decode and check** (``gang_decode``): members and exact GPUs, verified against the
   snapshot. The solver's answer is used only when it is at least as good as greedy's.

Outcomes are values: OPTIMAL, FEASIBLE (with gap), GREEDY_FALLBACK, GREEDY (solver
``greedy`` configured) or INFEASIBLE with a reason that sums nodes the way
kube-scheduler does, e.g. ``gang team-a/llm (16x8 GPU): 0/64 nodes fit; 40 had fewer
than 8 free GPUs, 24 outside required rack; best rack r7 fits 12/16``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from models.placement import Placement, RequestOutcome, SolverReport, SolverStatus
from models.requests import GPU_MILLI, GangRequest
from plugins.base import Context
from scheduler.gang_bound import narrowed, single_node
from scheduler.gang_capacity import GangBase, build_problem, chain_name, gang_base, level_index
from scheduler.gang_cpsat import CpsatResult, solve
from scheduler.gang_decode import to_placements
from scheduler.gang_greedy import greedy
from scheduler.gang_model import Assignment, GangProblem, evaluate, sort_key, unit_capacity
from scheduler.snapshot import PodShape, Snapshot

# single nodes tried when the best one's GPUs turn out not to pack the gang's shares
SINGLE_NODE_TRIES = 8


def place_gang(engine: Any, snap: Snapshot, req: GangRequest, ctx: Context) -> RequestOutcome:
    """Place every member of ``req`` (or at least ``min_members``) or none; never raises for "does not fit"."""
    t0 = time.perf_counter()
    cfg = engine.config.gang
    head = f"gang {req.name} ({describe(req)})"
    a = snap.arrays
    has_clique = bool(len(a.clique) and int(a.clique.max()) >= 0)
    idx: dict[str, int | None] = {}
    for what in ("required_level", "preferred_level", "slice_level"):
        name = getattr(req, what)
        idx[what] = None if name is None else level_index(a, has_clique, name)
        if name is not None and idx[what] is None:
            known = ", ".join([*a.level_names, *(["clique"] if has_clique else []), "host"])
            return _infeasible(req, t0, f"{head}: unknown {what.replace('_', ' ')} {name!r} (levels: {known})")
    base = gang_base(engine, snap, req, ctx, has_clique)
    required, note = idx["required_level"], ""
    pref = idx["preferred_level"]
    if pref is not None and (required is None or pref > required):
        top = required if required is not None else 0
        for lv in range(pref, top - 1, -1):
            prob = build_problem(snap, req, base, lv, idx["slice_level"])
            if prob is not None and greedy(prob) is not None:
                if lv != pref:
                    note = f"preferred {chain_name(a, has_clique, pref)} not possible; within one " \
                           f"{chain_name(a, has_clique, lv)}"
                required = lv
                break
        else:
            note = f"preferred {chain_name(a, has_clique, pref)} not possible"
    prob = build_problem(snap, req, base, required, idx["slice_level"])
    if prob is None:
        return _infeasible(req, t0, explain(snap, req, base, required, idx["slice_level"]))
    return _solve(prob, snap, req, base, cfg, engine.config.seed, t0, note, required, idx["slice_level"])


def _solve(prob: GangProblem, snap: Snapshot, req: GangRequest, base: GangBase, cfg: Any, seed: int,
           t0: float, note: str, required: int | None, slice_level: int | None) -> RequestOutcome:
    g = greedy(prob)
    g_obj = evaluate(prob, g) if g is not None else None
    notes = [note] if note else []
    if cfg.solver == "greedy":
        g_places = to_placements(prob, snap, g) if g is not None else None
        if g_places is None and g is not None:
            found = _one_node(prob, snap)  # greedy's node could not pack the shares GPU by GPU
            if found is not None:
                g, g_places = found
                g_obj = evaluate(prob, g)
        if g is None or g_places is None:
            return _infeasible(req, t0, explain(snap, req, base, required, slice_level), "greedy")
        return _outcome(req, prob, g, g_places, SolverReport(SolverStatus.GREEDY, "greedy", objective=g_obj), t0,
                        notes)
    found = _one_node(prob, snap)
    if found is not None:
        one, places = found
        report = SolverReport(SolverStatus.OPTIMAL, "exact", objective=evaluate(prob, one), greedy_objective=g_obj,
                              note="fits on one node: optimum by enumeration")
        return _outcome(req, prob, one, places, report, t0, notes)
    model_prob, hint = prob, g
    if g is not None and g_obj is not None:
        small = narrowed(snap, base, prob, g, g_obj)
        if small is not None:
            model_prob, hint = small
    budget = cfg.time_limit_s - (time.perf_counter() - t0)
    if budget > 0:
        res = solve(model_prob, hint, budget, seed, cfg.workers)
    else:
        res = CpsatResult(None, note="time limit spent before the solver started")
    s, s_places = res.assignment, None
    if s is not None:
        s_places = to_placements(model_prob, snap, s)
        if s_places is None:
            notes.append("solver answer did not decode")
            s = None
    if s is not None:
        s_obj = evaluate(model_prob, s)
        if g_obj is not None and sort_key(prob, s_obj) > sort_key(prob, g_obj):
            notes.append("solver answer worse than greedy")
            s = None
    if s is not None:
        status = SolverStatus.OPTIMAL if res.optimal else SolverStatus.FEASIBLE
        report = SolverReport(status, "cpsat", objective=s_obj, greedy_objective=g_obj,
                              gap=None if res.optimal else res.gap, note=res.note)
        return _outcome(req, model_prob, s, s_places, report, t0, notes)
    g_places = to_placements(prob, snap, g) if g is not None else None
    if g is not None and g_places is not None:
        if res.note:
            notes.append(res.note)
        report = SolverReport(SolverStatus.GREEDY_FALLBACK, "cpsat", objective=g_obj, greedy_objective=g_obj)
        return _outcome(req, prob, g, g_places, report, t0, notes)
    why = explain(snap, req, base, required, slice_level)
    if not res.proven_infeasible:
        why += f"; no placement found within {cfg.time_limit_s:g} s"
    return _infeasible(req, t0, why)


def _one_node(prob: GangProblem, snap: Snapshot) -> tuple[Assignment, list[Placement]] | None:
    """The best single node that holds the whole gang, decoded to GPUs. The resource sums only
    approximate GPU-by-GPU packing when a gang has shares of several sizes, so a node whose
    GPUs cannot pack them is skipped for the next best (a few tries)."""
    skip: list[int] = []
    for _ in range(SINGLE_NODE_TRIES):
        one = single_node(prob, skip)
        if one is None:
            return None
        places = to_placements(prob, snap, one)
        if places is not None:
            return one, places
        skip.append(int(np.flatnonzero(one.counts.sum(axis=1))[0]))
    return None


def _outcome(req: GangRequest, prob: GangProblem, a: Assignment, places: list[Placement] | None,
             report: SolverReport, t0: float, notes: list[str]) -> RequestOutcome:
    assert places is not None
    if prob.elastic:
        notes.append(f"placed {len(places)}/{req.size} members (min {req.min_members})")
    if report.note:
        notes.insert(0, report.note)
    report.note = "; ".join(n for n in notes if n)
    report.time_s = time.perf_counter() - t0
    return RequestOutcome(req.name, "gang", places, report)


def _infeasible(req: GangRequest, t0: float, reason: str, solver: str = "cpsat") -> RequestOutcome:
    report = SolverReport(SolverStatus.INFEASIBLE, solver, time_s=time.perf_counter() - t0)
    return RequestOutcome(req.name, "gang", [], report, reason)


def describe(req: GangRequest) -> str:
    """``16x8 GPU`` or ``1x4000m CPU launcher + 16x8 GPU worker``."""
    parts = [f"{r.count}x{PodShape.of(r).describe()}" for r in req.roles]
    if len(parts) == 1:
        return parts[0]
    return " + ".join(f"{p} {r.name}" for p, r in zip(parts, req.roles, strict=True))


def explain(snap: Snapshot, req: GangRequest, base: GangBase, required: int | None, slice_level: int | None) -> str:
    """Why the gang does not fit: per-node reasons summed, then what the topology allows."""
    a = snap.arrays
    n = snap.n_nodes
    p = base.order[0]
    counts = dict(base.counts)
    head = f"gang {req.name} ({describe(req)})"
    need = req.min_members if req.min_members is not None else req.size
    tail: list[str] = []
    fit = base.fit_nodes
    if base.rail_slots is not None:
        lost = int(((base.cap[:, p] == 0) & base.ok[p]).sum())
        if lost:
            counts["had no rail-aligned GPU set free"] = lost
    prob = build_problem(snap, req, base, None, slice_level)
    if required is not None and prob is not None:
        lvname = chain_name(a, base.has_clique, required)
        pos = np.arange(len(prob.nodes))
        child = pos if required == prob.host else prob.levels[required].dom
        slice_mode = prob.slice_level is not None and prob.slice_level > required
        uc, per_role = unit_capacity(prob, pos, child, slice_mode)
        if slice_mode:
            k = np.minimum(uc, prob.max_units) * prob.unit
        else:
            k = np.minimum(per_role, prob.role_counts(prob.max_units)).sum(axis=1)
        viable = build_problem(snap, req, base, required, slice_level)
        inside = int((viable.cap[:, p] > 0).sum()) if viable is not None else 0
        outside = fit - inside
        if outside:
            counts[f"outside required {lvname}"] = outside
        fit = inside
        present = np.unique(child)
        if len(present):
            best = int(present[np.lexsort((present, -k[present]))[0]])
            name = a.node_names[int(prob.nodes[best])] if required == prob.host else prob.levels[required].names[best]
            tail.append(f"best {lvname} {name} fits {int(k[best])}/{req.size}")
    elif prob is not None:
        total = np.minimum(prob.cap.sum(axis=0), prob.role_counts(prob.max_units))
        if prob.slice_level is not None:
            lvname = chain_name(a, base.has_clique, prob.slice_level)
            pos = np.arange(len(prob.nodes))
            uc, _ = unit_capacity(prob, pos, np.zeros(len(pos), dtype=np.int64), True)  # all slice-domains together
            tail.append(f"{int(min(uc.sum(), prob.max_units))}/{prob.max_units} slices of {prob.unit} fit "
                        f"in one {lvname} each")
        else:
            tail.append(f"free capacity fits {int(total.sum())}/{req.size}")
    for r in range(len(base.shapes)):
        if r != p and not (base.cap[:, r] > 0).any():
            why = ", ".join(f"{c} {w}" for w, c in sorted(base.role_counts[r].items(), key=lambda kv: (-kv[1], kv[0])))
            tail.append(f"no node fits {req.roles[r].name} ({why or 'no room'})")
    sp = base.shapes[p]
    if sp.gpus > int(a.max_gpus) and not sp.is_shared:
        tail.append(f"no node has {sp.gpus} GPUs (largest has {int(a.max_gpus)})")
    first = req.member_names()[:need]
    gpus = sum(0 if r.gpu_milli < GPU_MILLI else r.gpus for _, r in first)
    if gpus > a.total_gpus:
        tail.append(f"needs {gpus} GPUs, the cluster has {a.total_gpus}")
    if need < req.size:
        tail.append(f"needs at least {need} members")
    parts = ", ".join(f"{c} {w}" for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    text = f"{head}: {fit}/{n} nodes fit"
    if parts:
        text += f"; {parts}"
    if tail:
        text += "; " + "; ".join(tail)
    return text
