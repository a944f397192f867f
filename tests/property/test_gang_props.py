"""Gang placement properties over small generated clusters and gangs.

For every generated case: no GPU is handed out twice (nor over what is already in use),
a gang is placed whole or not at all (elastic: at least ``min_members``), a gang one node
holds alone is placed whole, required level and slices hold, capacity is conserved in
the ledger, the CP-SAT answer is never worse than greedy's, and releasing the placements
restores the ledger exactly.
"""

from __future__ import annotations

import itertools
from collections import Counter
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.placement import SolverStatus
from models.requests import GangRequest, GangRole
from models.topology import build_arrays
from scheduler import gang_greedy
from scheduler.engine import Engine, PlacementConfig, place
from scheduler.ledger import Allocation, Ledger
from tests.builders import build, make_cluster, make_node

CPSAT = Engine.from_config(PlacementConfig())
GREEDY = Engine.from_config(PlacementConfig(gang={"solver": "greedy"}))


@st.composite
def clusters(draw):
    """2-level clusters of 1-3 racks x 1-3 nodes of 2, 4 or 8 GPUs, some in NVLink cliques
    (which may span racks), some GPUs already busy."""
    racks = draw(st.integers(1, 3))
    nodes, busy = [], []
    for r in range(racks):
        for _ in range(draw(st.integers(1, 3))):
            gpus = draw(st.sampled_from([2, 4, 8]))
            name = f"n{len(nodes)}"
            n = make_node(name, gpus, block=f"b{r // 2}", rack=f"r{r}")
            clique = draw(st.sampled_from([None, None, "c0", "c1"]))
            if clique is not None:
                n["clique"] = clique
            n.update(cpu_milli=16000, memory_mib=65536)
            nodes.append(n)
            used = draw(st.sets(st.integers(0, gpus - 1), max_size=gpus))
            if used:
                busy.append((len(nodes) - 1, tuple(sorted(used))))
    return nodes, busy


@st.composite
def gangs(draw):
    count = draw(st.integers(1, 6))
    gpus = draw(st.sampled_from([0, 1, 2, 2, 4, 4]))
    roles = [GangRole(name="worker", count=count, gpus=gpus, cpu_milli=draw(st.sampled_from([0, 2000, 9000])))]
    if draw(st.booleans()):
        milli = draw(st.sampled_from([1000, 1000, 500]))  # a launcher on a shared GPU next to whole-GPU workers
        roles.insert(0, GangRole(name="launcher", count=1, gpus=draw(st.sampled_from([0, 1])) if milli == 1000 else 1,
                                 gpu_milli=milli, cpu_milli=1000))
    total = sum(r.count for r in roles)
    kw = {}
    if draw(st.booleans()):
        kw["required_level"] = draw(st.sampled_from(["block", "rack", "host", "clique"]))
    elif draw(st.booleans()):
        kw["preferred_level"] = draw(st.sampled_from(["rack", "host"]))
    sizes = [s for s in (1, 2, 3) if total % s == 0]
    if draw(st.booleans()):
        kw["slice_size"] = draw(st.sampled_from(sizes))
        kw["slice_level"] = draw(st.sampled_from(["block", "rack", "clique", "host"]))
    if draw(st.booleans()):
        kw["min_members"] = draw(st.integers(1, total))
    kw["balanced"] = draw(st.booleans())
    kw["rail_aligned"] = draw(st.booleans())
    return GangRequest(name="ml/g", roles=tuple(roles), **kw)


def setup(nodes, busy) -> Ledger:
    led = Ledger(build_arrays(build(make_cluster(*nodes, levels=["block", "rack"]))))
    for i, (n, gpus) in enumerate(busy):
        led.observe(Allocation(f"busy-{i}", n, gpus, 1000, 0, 0))
    return led


def key(obj: dict) -> tuple:
    return tuple(-v if k == "members" else v for k, v in obj.items())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), gangs())
def test_gang_placement_properties(cluster, req):
    nodes, busy = cluster
    led = setup(nodes, busy)
    assume(req.slice_level != "clique" or bool((led.arrays.clique >= 0).any()))
    before = led.snapshot()
    out = place(led.snapshot(), [req], CPSAT).outcomes[0]
    ref = place(led.snapshot(), [req], GREEDY).outcomes[0]
    names = led.arrays.node_names
    need = req.min_members or req.size

    # all or nothing
    if out.placed:
        assert need <= len(out.placements) <= req.size
        assert [p.pod for p in out.placements] == [m for m, _ in req.member_names()[: len(out.placements)]]
        assert not out.reason
    else:
        assert out.placements == [] and out.reason.startswith("gang ml/g")
    # a gang one node holds alone (GPU by GPU) is placed whole
    if not req.rail_aligned and (req.required_level != "clique" or (led.arrays.clique >= 0).any()):
        snap = led.snapshot()
        ok = [n for n in range(led.arrays.n_nodes) if _node_fits(snap, n, req)
              and (req.required_level != "clique" or led.arrays.clique[n] >= 0)]
        if ok:
            assert out.placed and len(out.placements) == req.size, (ok, out.reason)
    # CP-SAT never worse than greedy, and never misses what greedy places
    if ref.placed:
        assert out.placed
        assert out.report.status != SolverStatus.INFEASIBLE
        assert key(out.report.objective) <= key(ref.report.objective)
        assert out.report.greedy_objective in (None, ref.report.objective)
    # required level and slices hold
    a = led.arrays
    idx = [a.node_index[p.node] for p in out.placements]
    if out.placed and req.required_level in ("block", "rack"):
        lv = a.level_names.index(req.required_level)
        assert len({int(a.domain[lv, i]) for i in idx}) == 1
    if out.placed and req.required_level == "host":
        assert len(set(idx)) == 1
    if out.placed and req.required_level == "clique":
        assert len({int(a.clique[i]) for i in idx}) == 1 and a.clique[idx[0]] >= 0
    for o in (out, ref):
        _check_slices(a, req, o.placements)
    # greedy's answer too hands no GPU out twice (the ledger refuses over-commitment)
    _check_ledger_accepts(led, ref.placements)
    # no GPU twice: the ledger accepts every placement (it refuses over-commitment)
    for p in out.placements:
        assert p.node in names
        led.assume(Allocation(p.pod, a.node_index[p.node], p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, gang=p.gang))
    led.check_invariants()
    # capacity conserved: free + held = capacity, GPU by GPU
    live = led.snapshot()
    held = np.zeros_like(live.gpu_free)
    for alloc in led.allocations():
        for g in alloc.gpus:
            held[alloc.node, g] += alloc.gpu_milli
    present = live.gpu_free >= 0
    assert (live.gpu_free[present] + held[present] == 1000).all()
    # release(place(x)) restores the ledger
    for p in out.placements:
        led.release(p.pod)
    after = led.snapshot()
    for name in ("gpu_free", "free_cpu", "free_mem", "free_pods"):
        assert np.array_equal(getattr(before, name), getattr(after, name))


def _check_slices(a, req: GangRequest, placements) -> None:
    """Whole slices only, each inside one domain of the slice level."""
    if not placements or req.slice_size is None:
        return
    assert len(placements) % req.slice_size == 0, "an elastic gang places whole slices"
    idx = [a.node_index[p.node] for p in placements]
    if req.slice_level == "host":
        dom = np.arange(a.n_nodes)
    elif req.slice_level == "clique":
        dom = np.where(a.clique >= 0, a.clique, 1000 + np.arange(a.n_nodes))
    else:
        dom = a.domain[a.level_names.index(req.slice_level)]
    for j in range(0, len(idx), req.slice_size):
        assert len({int(dom[i]) for i in idx[j: j + req.slice_size]}) == 1, f"slice {j // req.slice_size} split"


def _check_ledger_accepts(led: Ledger, placements) -> None:
    """The ledger takes every placement (it refuses a GPU over-committed), then lets them go again."""
    a = led.arrays
    for p in placements:
        led.assume(Allocation(p.pod, a.node_index[p.node], p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, gang=p.gang))
    led.check_invariants()
    for p in placements:
        led.release(p.pod)


@st.composite
def sliced_gangs(draw):
    """Launchers (CPU only) and workers (whole GPUs only) in slices of several compositions: the
    first slice holds launchers and workers, or the roles do not divide into slices evenly."""
    launchers = GangRole(name="launcher", count=draw(st.integers(1, 3)),
                         cpu_milli=draw(st.sampled_from([1000, 4000, 13000])))
    workers = GangRole(name="worker", count=draw(st.integers(1, 8)), gpus=draw(st.sampled_from([1, 2, 4])))
    roles = (launchers, workers) if draw(st.booleans()) else (workers, launchers)
    total = launchers.count + workers.count
    kw = {"slice_size": draw(st.sampled_from([s for s in range(1, total) if total % s == 0])),
          "slice_level": draw(st.sampled_from(["block", "rack", "clique", "host"])),
          "required_level": draw(st.sampled_from([None, None, "block", "rack"])),
          "balanced": draw(st.booleans())}
    if draw(st.booleans()):
        kw["min_members"] = draw(st.integers(1, total))
    return GangRequest(name="ml/g", roles=roles, **kw)


def _cliques_span_racks(a) -> bool:
    rack = a.domain[a.level_names.index("rack")]
    return any(len(set(rack[a.clique == c].tolist())) > 1 for c in set(a.clique.tolist()) if c >= 0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), sliced_gangs(), st.booleans())
def test_greedy_places_slices_of_several_compositions_where_cpsat_does(cluster, req, compress):
    """Each slice counted by its own composition: greedy places as many members as CP-SAT, whole
    slices each in one slice-domain, no GPU twice; also with equal nodes counted as one row
    (``compress``, what greedy does on large clusters). (Outside this family greedy may still miss:
    roles competing for one node's CPU or GPUs, and clique slices where cliques cross racks.)"""
    nodes, busy = cluster
    led = setup(nodes, busy)
    a = led.arrays
    if req.slice_level == "clique":
        assume(bool((a.clique >= 0).any()) and not _cliques_span_racks(a))
    with mock.patch.object(gang_greedy, "COMPRESS_BINS", 0 if compress else gang_greedy.COMPRESS_BINS):
        out = place(led.snapshot(), [req], CPSAT).outcomes[0]
        ref = place(led.snapshot(), [req], GREEDY).outcomes[0]
    assert ref.placed == out.placed, (ref.reason, out.report.status)
    assert len(ref.placements) == len(out.placements)
    if ref.placed:
        assert ref.report.status == SolverStatus.GREEDY
        assert [p.pod for p in ref.placements] == [m for m, _ in req.member_names()[: len(ref.placements)]]
    for o in (out, ref):
        _check_slices(a, req, o.placements)
        _check_ledger_accepts(led, o.placements)


def _node_fits(snap, n: int, req: GangRequest) -> bool:
    """Every member of ``req`` on node ``n`` together: CPU, whole GPUs, then shares on what is left."""
    members = [r for _, r in req.member_names()]
    if sum(r.cpu_milli for r in members) > snap.free_cpu[n] or sum(r.memory_mib for r in members) > snap.free_mem[n]:
        return False
    free = sorted(int(f) for f in snap.gpu_free[n] if f > 0)
    whole = sum(r.gpus for r in members if r.gpu_milli == 1000)
    full = [f for f in free if f == 1000]
    if whole > len(full):
        return False
    left = [f for f in free if f < 1000] + full[whole:]
    for r in sorted((r for r in members if r.gpu_milli < 1000), key=lambda r: -r.gpu_milli):
        fit = [i for i, f in enumerate(left) if f >= r.gpu_milli]  # best fit, enough for one share size
        if not fit:
            return False
        left[min(fit, key=lambda i: left[i])] -= r.gpu_milli
    return True


def _compositions(caps: list[int], total: int):
    if not caps:
        if total == 0:
            yield ()
        return
    for k in range(min(caps[0], total) + 1):
        for rest in _compositions(caps[1:], total - k):
            yield (k, *rest)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.integers(1, 6), st.sampled_from([1, 2, 4]), st.booleans(),
       st.sampled_from([None, "block", "rack", "clique"]))
def test_optimal_matches_brute_force(cluster, count, gpus, balanced, required):
    """OPTIMAL means the lexicographic optimum: checked against every per-node split (one role)."""
    nodes, busy = cluster
    led = setup(nodes, busy)
    snap, a = led.snapshot(), led.arrays
    full = (snap.gpu_free == 1000).sum(axis=1)
    has_clique = bool((a.clique >= 0).any())
    assume(required != "clique" or has_clique)
    clique = np.where(a.clique >= 0, a.clique, 100 + np.arange(a.n_nodes))
    frag = full.copy()
    for dom in (a.domain[0], a.domain[1], *((clique,) if has_clique else ())):
        frag += np.bincount(dom, weights=full).astype(np.int64)[dom]
    best = None
    for c in _compositions([int(x) for x in full // gpus], count):
        c = np.array(c)
        used = c > 0
        k = [len(set(a.domain[0][used])), len(set(a.domain[1][used]))]
        if required in ("block", "rack") and k[required == "rack"] > 1:
            continue
        if required == "clique" and (not has_clique or len(set(clique[used])) > 1 or (a.clique[used] < 0).any()):
            continue
        if balanced:
            per = np.bincount(a.domain[1][used], weights=c[used])
            k.append(int(per[per > 0].max() - per[per > 0].min()))
        if has_clique:
            k.append(len(set(clique[used])))
        k += [int(used.sum()), 0, int(frag[used].sum())]
        best = tuple(k) if best is None or tuple(k) < best else best
    req = GangRequest(name="ml/g", roles=(GangRole(count=count, gpus=gpus),), balanced=balanced,
                      required_level=required)
    out = place(snap, [req], CPSAT).outcomes[0]
    if best is None:
        assert not out.placed
    else:
        assert out.report.status == SolverStatus.OPTIMAL
        assert tuple(out.report.objective.values()) == best


def _node_holds(free: list[int], shares: int, milli: int, whole: int, gpus: int) -> bool:
    """Brute force: ``whole`` members of ``gpus`` fully free GPUs and ``shares`` of ``milli`` on one node."""
    full = [g for g, f in enumerate(free) if f == 1000]
    if whole * gpus > len(full):
        return False
    for taken in itertools.combinations(full, whole * gpus):  # fully free GPUs are alike for the shares
        left = [f for g, f in enumerate(free) if g not in taken]
        for spot in itertools.product(range(len(left)), repeat=shares):
            use = Counter(spot)
            if all(use[g] * milli <= left[g] for g in use):
                return True
        break
    return False


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from([0, 0, 0, 300, 500, 700, 1000]), min_size=2, max_size=4), min_size=1,
                max_size=3),
       st.integers(0, 5), st.sampled_from([300, 400, 600]), st.integers(0, 2), st.sampled_from([1, 2]),
       st.sampled_from(["greedy", "cpsat"]))
def test_shared_and_whole_gpu_roles_are_placed_exactly_when_they_fit(used, shares, milli, whole, gpus, solver):
    """A gang of shared-GPU and whole-GPU members is placed iff some split over the nodes packs,
    GPU by GPU (checked by brute force), and then no GPU is over-committed."""
    assume(shares + whole > 0)
    nodes = [make_node(f"n{i}", len(u), rack="r0") for i, u in enumerate(used)]
    led = Ledger(build_arrays(build(make_cluster(*nodes, levels=["rack"]))))
    for i, u in enumerate(used):
        for g, milli_used in enumerate(u):
            if milli_used:
                led.observe(Allocation(f"busy-{i}-{g}", i, (g,), milli_used, 0, 0))
    roles = []
    if shares:
        roles.append(GangRole(name="s", count=shares, gpus=1, gpu_milli=milli))
    if whole:
        roles.append(GangRole(name="w", count=whole, gpus=gpus))
    req = GangRequest(name="ml/g", roles=tuple(roles))
    free = [[1000 - x for x in u] for u in used]
    fits = any(all(_node_holds(free[n], s[n], milli, w[n], gpus) for n in range(len(used)))
               for s in _compositions([shares] * len(used), shares) for w in _compositions([whole] * len(used), whole))
    out = place(led.snapshot(), [req], GREEDY if solver == "greedy" else CPSAT).outcomes[0]
    assert out.placed == fits, out.reason
    for p in out.placements:
        led.assume(Allocation(p.pod, led.arrays.node_index[p.node], p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib))
    led.check_invariants()
