"""The fill-up experiment: arrival order and inflation, typical pods, determinism, bins,
and that the simulator's decisions are the engine's (``place()``) decisions."""

from __future__ import annotations

import numpy as np
import pytest

from models.readers.openb import PodRow
from models.requests import PodRequest
from plugins.base import Context
from scheduler.engine import place
from scheduler.snapshot import Snapshot
from scheduler.workload_mix import PodKind, typical_kinds
from simulations.fillup import RunResult, arrival_order, engine_for, failure_kind, openb_arrays, run_fillup, typical_mix

NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
    f"n{i},{96000 if i % 3 else 32000},{393216},{8 if i % 3 else 2},{'G2' if i % 3 else 'T4'}\n" for i in range(12))


def pods(n=120, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = rng.integers(4)
        if kind == 0:
            out.append(PodRow(f"p{i:04d}", 12000, 8192, 0, 0))
        elif kind == 1:
            out.append(PodRow(f"p{i:04d}", 4000, 8192, 1, int(rng.choice([230, 470, 810]))))
        elif kind == 2:
            out.append(PodRow(f"p{i:04d}", 11000, 16384, 1, 1000))
        else:
            out.append(PodRow(f"p{i:04d}", 20000, 32768, 2, 1000, ("G2",)))
    return out


@pytest.fixture(scope="module")
def arrays():
    return openb_arrays(NODES, "tiny")


def test_order_is_a_seeded_shuffle_of_the_name_sorted_list():
    base = pods(50)
    a = arrival_order(base[::-1], 10**9, np.random.default_rng(1), inflate=0)
    b = arrival_order(base, 10**9, np.random.default_rng(1), inflate=0)
    assert [p.name for p in a] == [p.name for p in b]  # input order does not matter
    assert sorted(p.name for p in a) == sorted(p.name for p in base)
    c = arrival_order(base, 10**9, np.random.default_rng(2), inflate=0)
    assert [p.name for p in a] != [p.name for p in c]


def test_inflation_appends_clones_until_the_next_would_overshoot():
    base = pods(50)
    capacity = 40_000
    order = arrival_order(base, capacity, np.random.default_rng(5), inflate=1.3)
    shuffled, clones = order[:50], order[50:]
    assert sorted(p.name for p in shuffled) == sorted(p.name for p in base)
    originals = {p.name: p for p in base}
    for c in clones:
        src = originals[c.name.split("-clone-")[0]]
        assert (c.cpu_milli, c.num_gpu, c.gpu_milli, c.gpu_spec) == (src.cpu_milli, src.num_gpu, src.gpu_milli, src.gpu_spec)
    total = sum(p.gpu_milli_total for p in order)
    target = 1.3 * capacity
    # the artifact's rule: a draw is appended while total + its per-GPU milli stays within the target
    assert total - clones[-1].gpu_milli_total + clones[-1].gpu_milli <= target
    assert total > target - 2000  # stopped only when a draw no longer fitted


def test_a_trace_above_the_target_loses_random_pods():
    base = pods(200)
    capacity = 20_000
    order = arrival_order(base, capacity, np.random.default_rng(5), inflate=1.0)
    total = sum(p.gpu_milli_total for p in order)
    assert total <= capacity < total + max(p.gpu_milli_total for p in base)
    full = arrival_order(base, capacity, np.random.default_rng(5), inflate=0)
    kept = {p.name for p in order}
    assert [p.name for p in full if p.name in kept] == [p.name for p in order]  # order survives


def test_typical_pods_cover_95_percent_by_frequency():
    counts = {PodKind(1000, 500, 1): 50, PodKind(2000, 1000, 1): 30, PodKind(0, 0, 0): 15, PodKind(3, 0, 0): 5}
    kinds = typical_kinds(counts, 0.95)
    assert [k for k, _ in kinds] == [PodKind(1000, 500, 1), PodKind(2000, 1000, 1), PodKind(0, 0, 0)]
    assert [round(f, 4) for _, f in kinds] == [round(50 / 95, 4), round(30 / 95, 4), round(15 / 95, 4)]
    # equal counts: the larger kind first, so the cut is deterministic
    tie = typical_kinds({PodKind(1, 0, 0): 1, PodKind(2, 0, 0): 1}, 0.5)
    assert tie[0][0] == PodKind(2, 0, 0)


@pytest.mark.parametrize("policy", ["FGD", "toposched", "Random"])
def test_same_seed_same_numbers(arrays, policy):
    a = run_fillup(arrays, pods(), policy, 42)
    b = run_fillup(arrays, pods(), policy, 42)
    c = run_fillup(arrays, pods(), policy, 43)
    np.testing.assert_array_equal(a.used_milli, b.used_milli)
    np.testing.assert_array_equal(a.node, b.node)
    np.testing.assert_array_equal(a.frag_milli, b.frag_milli)
    assert a.binned() == b.binned()
    assert a.pods != c.pods


def test_accounting_and_fragmentation_timeline(arrays):
    from plugins.fragmentation import node_fragmentation

    r = run_fillup(arrays, pods(200), "BestFit", 7)
    assert r.arrived_milli[0] == r.used_milli[0] == 0
    by_name = {p.name: p for p in pods(200)}
    assert r.arrived_milli[-1] == sum(by_name[n.split("-clone-")[0]].gpu_milli_total for n in r.pods[1:])
    assert r.used_milli[-1] + sum(tally[1] for tally in r.failed_by_kind.values()) == r.arrived_milli[-1]
    assert r.n_failed == sum(t[0] for t in r.failed_by_kind.values()) > 0  # 1.3x the capacity: some fail
    # each kind's first failure: the arrived demand just after the first failed pod of that kind
    kinds = {p.name: failure_kind(p) for p in pods(200)}
    for kind, milli in r.first_failure.items():
        first = next(i for i in range(1, len(r.pods)) if not r.placed[i] and kinds[r.pods[i].split("-clone-")[0]] == kind)
        assert milli == r.arrived_milli[first]
    assert set(r.first_failure) == set(r.failed_by_kind)
    assert (r.idle_milli == r.capacity_milli - r.used_milli).all()
    assert r.frag_milli[-1] == pytest.approx(node_fragmentation(r.snapshot, typical_mix(pods(200))).sum())
    # no GPU over-committed, nothing below zero
    gf = r.snapshot.gpu_free
    assert (gf[gf != -1] >= 0).all() and (r.snapshot.free_cpu >= 0).all() and (r.snapshot.free_mem >= 0).all()


def test_simulator_decisions_are_place_decisions(arrays):
    """Replaying the arrivals through ``place()`` (same engine, same seeded context) gives the same nodes."""
    trace = pods(80)
    r = run_fillup(arrays, trace, "FGD", 3)
    engine = engine_for("FGD", 3)
    _, placement_seed = np.random.SeedSequence(3).spawn(2)
    ctx = Context(mix=typical_mix(trace), rng=np.random.default_rng(placement_seed))
    snap = Snapshot.empty(arrays)
    by_name = {p.name: p for p in trace}
    for i, name in enumerate(r.pods[1:], start=1):
        src = by_name[name.split("-clone-")[0]]
        req = PodRequest(name=name, cpu_milli=src.cpu_milli, memory_mib=src.memory_mib, gpus=src.num_gpu,
                         gpu_milli=src.gpu_milli if src.num_gpu else 1000, gpu_models=src.gpu_spec)
        d = place(snap, [req], engine, ctx)
        if d.placements:
            (p,) = d.placements
            assert p.node_index == r.node[i], f"event {i} ({name})"
            snap.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib)
        else:
            assert r.node[i] == -1, f"event {i} ({name})"


def test_bins_follow_the_artifact_rounding():
    cap = 100_000  # 100 GPUs
    arrived = np.array([0, 40_000, 99_600, 100_400, 130_000])
    used = np.array([0, 40_000, 95_000, 96_000, 97_000])
    r = RunResult("t", "p", 1, 1.3, cap, ["", "a", "b", "c", "d"], np.ones(5, dtype=bool), np.zeros(5, dtype=np.int32),
                  arrived, used, np.zeros(5), cap - used)
    b = r.binned()
    assert b["alloc_gpu_pct"][100] == 95.5  # both events round to 100%
    assert b["unallocated_gpu_pct"][100] == 4.5
    assert 41 in b["alloc_gpu_pct"] and b["alloc_gpu_pct"][41] == 40.0  # empty bin: the +-1 window
    assert 50 not in b["alloc_gpu_pct"]
    assert b["unallocated_gpu_pct"][130] == 3.0
