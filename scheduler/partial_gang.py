"""Gangs some of whose members are bound: the gang as one request with the bound members as
survivors, their slices told by place, and the pending rest placed next to them.

Both live drivers use this: the secondary scheduler's failure handler (repairing a gang that
lost members with a node, completing a partly bound one) and the extender (reserving the rest
of a partly bound gang). The solve itself is ``scheduler.repair``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from models.placement import Placement, RequestOutcome
from models.requests import GPU_MILLI, GangRequest, GangRole
from plugins.base import Context
from scheduler.repair import chain_dom, repair_gang
from scheduler.snapshot import Snapshot


@dataclass
class LostMember:
    """A gang member lost with its node: where it was and what it held (its rails)."""

    key: str
    node: str
    gpus: tuple[int, ...]
    shape: tuple  # GPUs, GPU milli, CPU milli, MiB, extended resources (see member_shape)


def member_shape(gpus: int, milli: int, cpu: int, mem: int,
           extended: tuple[tuple[str, int], ...] = ()) -> tuple[int, int, int, int, tuple[tuple[str, int], ...]]:
    return (gpus, milli if gpus else GPU_MILLI, cpu, mem, tuple(sorted(extended)))


def slice_groups(full: GangRequest, kept: list[Placement], lost: list[tuple[str, int]],
                  arrays: Any) -> dict[str, Hashable] | None:
    """Which slice each survivor and replacement belongs to, told by where they are.

    Live pods are not named by rank, so slices are recovered from domains: the survivors in a
    ``slice_level`` domain D are whole slices plus at most one partial slice, whose missing
    members were lost in D. The first replacements of members lost in D join D until its
    slices are whole again (key ``("in", D)``, the survivors' key); the rest of D's losses were
    whole slices and go, ``slice_size`` together, wherever they fit (``("moved", D, chunk)``).
    Members lost on a node gone from the cluster (node index -1: no domain known), and the
    pending members of a gang completed next to its bound ones, first complete the partial
    slices still short, then move the same way. What is left over in no whole slice (D's
    losses beyond its partial slice when some of D's members were on a node since deleted,
    members of an elastic gang never placed) is cut into slices together (``("moved", "rest", chunk)``).
    """
    if full.slice_size is None or full.slice_level is None:
        return None
    dom = chain_dom(arrays, full.slice_level)
    if dom is None:
        return None
    size = full.slice_size
    groups: dict[str, Hashable] = {}
    survivors_in: Counter[int] = Counter()
    for p in kept:
        d = int(dom[p.node_index])
        groups[p.pod] = ("in", d)
        survivors_in[d] += 1
    short = {d: -n % size for d, n in survivors_in.items()}
    lost_in: dict[Hashable, list[str]] = {}
    for member, node in lost:
        where: Hashable = int(dom[node]) if node >= 0 else "gone"
        lost_in.setdefault(where, []).append(member)
    gone = lost_in.pop("gone", [])
    tails: list[str] = []
    for where, members in [*lost_in.items(), ("gone", gone)]:
        fill = [where] if where != "gone" else sorted(short)
        rest = []
        for m in members:
            d = next((d for d in fill if short.get(d, 0)), None)
            if d is None:
                rest.append(m)
                continue
            groups[m] = ("in", d)
            short[d] -= 1
        whole = len(rest) - len(rest) % size
        for i, m in enumerate(rest[:whole]):
            groups[m] = ("moved", where, i // size)
        tails += rest[whole:]
    tails += [m for m, _ in full.member_names() if m not in groups]  # pending, never placed
    for i, m in enumerate(tails):
        groups[m] = ("moved", "rest", i // size)
    return groups


def with_survivors(req: GangRequest, survivors: list[Any], lost: list[LostMember], arrays: Any,
                  slices: tuple[int | None, str | None] = (None, None)) -> tuple[GangRequest, list[Placement], list[Placement]]:
    """The whole gang (pending replacements + survivors), survivors as placements, lost GPU sets.

    Survivors join the role with their shape (a new role if none has it) after the pending
    members, so the pending members keep the names ``_build`` gave them. ``slices``: the gang
    policy's (slice_size, slice_level); the replacements' own request has none when they are
    not whole slices.
    """
    roles = list(req.roles)
    counts = [r.count for r in roles]
    kept: list[tuple[int, Any]] = []
    for a in survivors:
        gpus = len(a.gpus) if a.gpu_milli >= GPU_MILLI else (1 if a.gpus else 0)
        shape = member_shape(gpus, a.gpu_milli, a.cpu_milli, a.memory_mib, a.extended)
        idx = next((i for i, r in enumerate(roles)
                    if member_shape(r.gpus, r.gpu_milli, r.cpu_milli, r.memory_mib, tuple(r.extended.items())) == shape), None)
        if idx is None:
            roles.append(GangRole(name=f"survivor-{len(roles)}", count=1, gpus=gpus, gpu_milli=shape[1],
                                  cpu_milli=a.cpu_milli, memory_mib=a.memory_mib, extended=dict(a.extended)))
            counts.append(0)
            idx = len(roles) - 1
        kept.append((idx, a))
        counts[idx] += 1
    new_roles = tuple(r.model_copy(update={"count": c}) for r, c in zip(roles, counts, strict=True))
    slice_size, slice_level = slices
    if slice_size is None or slice_level is None or sum(counts) % slice_size:
        slice_size = slice_level = None  # no slices, or survivors that are no whole slices any more
    full = GangRequest(name=req.name, roles=new_roles, required_level=req.required_level,
                       preferred_level=req.preferred_level, rail_aligned=req.rail_aligned, priority=req.priority,
                       slice_size=slice_size, slice_level=slice_level)
    nxt = [r.count for r in req.roles] + [0] * (len(roles) - len(req.roles))
    places = []
    for idx, a in kept:
        role = new_roles[idx]
        places.append(Placement(f"{req.name}/{role.name}-{nxt[idx]}", arrays.node_names[a.node], a.node, a.gpus,
                                a.gpu_milli, a.cpu_milli, a.memory_mib, gang=req.name, role=role.name,
                                extended=a.extended))
        nxt[idx] += 1
    pool = list(lost)
    old = []
    for member, role in req.member_names():
        shape = member_shape(role.gpus, role.gpu_milli, role.cpu_milli, role.memory_mib, tuple(role.extended.items()))
        hit = next((x for x in pool if x.shape == shape), None)
        if hit is not None:
            pool.remove(hit)
            old.append(Placement(member, hit.node, arrays.node_index.get(hit.node, -1), hit.gpus, role.gpu_milli,
                                 role.cpu_milli, role.memory_mib, gang=req.name, role=role.name,
                                 extended=tuple(sorted(role.extended.items()))))
    return full, places, old


def complete_gang(engine: Any, snap: Snapshot, req: GangRequest, bound: list[Any],
                  slices: tuple[int | None, str | None]) -> RequestOutcome:
    """The pending members of ``req`` placed next to the gang's ``bound`` allocations (repair's
    solve with them as survivors: their required domain, their slices; pending members complete
    partial slices first), or INFEASIBLE with the reason. ``slices``: the gang policy's
    (slice_size, slice_level).

    An elastic rest (``req.min_members`` set) places as many members as fit, at least that many:
    the first ones in member order, in whole slices when the gang's slices are whole (the
    largest count that fits, by bisection; the reason is the smallest count's)."""
    res = _complete_first(engine, snap, req, bound, slices, req.size)
    if res.placed or req.min_members is None:
        return res
    size, _ = slices
    whole = size is not None and (len(bound) + req.size) % size == 0
    counts = [k for k in range(req.min_members, req.size) if not whole or (len(bound) + k) % size == 0]
    lo, hi, best = 0, len(counts) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        got = _complete_first(engine, snap, req, bound, slices, counts[mid])
        if got.placed:
            best, lo = got, mid + 1
        else:
            if mid == 0:
                res = got
            hi = mid - 1
    if best is None:
        return res
    best.report.note += f"; {len(best.placements)} of {req.size} pending members (min {req.min_members})"
    return best


def _complete_first(engine: Any, snap: Snapshot, req: GangRequest, bound: list[Any],
                    slices: tuple[int | None, str | None], count: int) -> RequestOutcome:
    """``complete_gang`` for the first ``count`` pending members of ``req`` (member order)."""
    if count < req.size:
        roles, left = [], count
        for r in req.roles:
            if left > 0:
                roles.append(r.model_copy(update={"count": min(r.count, left)}))
            left -= r.count
        req = req.model_copy(update={"roles": tuple(roles), "min_members": None})
    full, kept, _ = with_survivors(req, bound, [], snap.arrays, slices)
    pending = [m for m, _ in req.member_names()]
    groups = slice_groups(full, kept, [(m, -1) for m in pending], snap.arrays)
    res = repair_gang(engine, snap, full, kept, pending, Context(), slice_groups=groups)
    if res.placed:
        note = res.report.note.replace("replaced", "placed", 1)
        res = RequestOutcome(req.name, "gang", res.placements,
                             replace(res.report, note=f"next to its {len(kept)} bound members: {note}"))
    return res
