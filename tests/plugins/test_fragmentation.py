"""Fragmentation (FGD and the capacity-aware variant) on hand-computed tiny nodes.

Cluster (openb-style, no NVLink)::

    n0  T4 x2   CPU 8000   mem 64000
    n1  G2 x8   CPU 128000 mem 786432

Mix: k1 = 1 x 500m + 2000m CPU (freq 1/2), k2 = 1 x 1000m + 4000m CPU (1/4), c = CPU-only (1/4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.base import Context
from plugins.fragmentation import (
    FgdScore,
    Fragmentation,
    MixModel,
    NodeStats,
    node_fragmentation,
    place_groups,
    poisson_tail,
)
from scheduler.engine import build_candidates, feasible, place_pod
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workload_mix import PodKind, WorkloadMix
from simulations.fillup import openb_arrays

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,8000,64000,2,T4\nn1,128000,786432,8,G2\n"
K1, K2, C = PodKind(2000, 500, 1), PodKind(4000, 1000, 1), PodKind(1000, 0, 0)


@pytest.fixture
def snap():
    return Snapshot.empty(openb_arrays(NODES, "tiny"))


def mix(counts=None, memory=None):
    m = WorkloadMix(counts or {K1: 2, K2: 1, C: 1}, coverage=1.0)
    for kind, mib in (memory or {}).items():
        m._memory[kind] = mib * m._counts[kind]
    return m


def state(snap, cpu, gpus, node=0, mem=None):
    snap.free_cpu[node] = cpu
    snap.gpu_free[node, : len(gpus)] = gpus
    if mem is not None:
        snap.free_mem[node] = mem
    return snap


def test_fgd_fragmentation_by_hand(snap):
    # free [1000, 300], CPU 8000: k1 and k2 fit -> the 300 GPU is their fragment; c sees all 1300
    state(snap, 8000, [1000, 300])
    assert node_fragmentation(snap, mix())[0] == pytest.approx(0.5 * 300 + 0.25 * 300 + 0.25 * 1300)
    # CPU 3000: k2 no longer fits once -> it sees all 1300
    state(snap, 3000, [1000, 300])
    assert node_fragmentation(snap, mix())[0] == pytest.approx(0.5 * 300 + 0.25 * 1300 + 0.25 * 1300)


def test_model_constraint_makes_every_free_gpu_a_fragment(snap):
    state(snap, 8000, [1000, 1000])
    only_v100 = PodKind(2000, 500, 1, ("V100M16",))
    frag = node_fragmentation(snap, mix({only_v100: 1, K2: 1}))[0]
    assert frag == pytest.approx(0.5 * 2000 + 0.5 * 0)


def test_capacity_mode_counts_gpus_the_cpu_cannot_feed(snap):
    # two free GPUs, CPU for one k2 pod: FGD sees no fragment for k2, capacity mode sees one GPU
    state(snap, 5000, [1000, 1000])
    m = mix({K2: 1})
    assert node_fragmentation(snap, m, "fgd")[0] == 0
    assert node_fragmentation(snap, m, "capacity")[0] == pytest.approx(1000)
    # memory limits the same way, from the kind's mean memory
    state(snap, 64000, [1000, 1000], mem=50000)
    assert node_fragmentation(snap, mix({K2: 1}, {K2: 30000}), "capacity")[0] == pytest.approx(1000)
    assert node_fragmentation(snap, mix({K2: 1}, {K2: 20000}), "capacity")[0] == 0


def test_descent_is_before_minus_after(snap):
    state(snap, 8000, [1000, 600])
    st = NodeStats(MixModel(mix().arrays(), snap.arrays.models, "fgd"), snap)
    d = st.descent(PodShape(cpu_milli=2000, gpus=1, gpu_milli=500), np.array([0]))
    # after on GPU 0: [500, 600], CPU 6000 -> k1, k2 fit? k2 needs a 1000 GPU: no -> all 1100
    after0 = 0.5 * 0 + 0.25 * 1100 + 0.25 * 1100
    after1 = 0.5 * 100 + 0.25 * 100 + 0.25 * 1100  # [1000, 100]
    before = 0.5 * 0 + 0.25 * 600 + 0.25 * 1600
    assert d[0, 0] == pytest.approx(before - after0)
    assert d[0, 1] == pytest.approx(before - after1)
    assert d[0, 2:].tolist() == [-math.inf] * 6


def test_fgd_score_is_the_papers_integer(snap):
    state(snap, 8000, [1000, 600])
    shape = PodShape(cpu_milli=2000, gpus=1, gpu_milli=500)
    ctx = Context(mix=mix())
    plugin = FgdScore()
    st = plugin.prepare(shape, snap, ctx)
    ok = feasible_nodes(snap, shape)
    cand = build_candidates(snap, shape, ok)
    scores = plugin.score(shape, snap, cand, st)
    for m in range(len(cand)):
        node, gpu = int(cand.node[m]), int(cand.gpu[m])
        d = st.descent(shape, np.array([node]))[0, gpu]
        assert scores[m] == int(100 / (1 + math.exp(-d / 1000))) / 100


def test_cache_follows_changes_of_the_snapshot(snap):
    ctx = Context(mix=mix())
    plugin = Fragmentation(levels=0)
    shape = PodShape(cpu_milli=2000, gpus=1, gpu_milli=500)
    first = scores_of(plugin, snap, shape, ctx)
    snap.apply(1, (0,), 500, 2000, 0)
    again = scores_of(plugin, snap, shape, ctx)
    fresh = scores_of(Fragmentation(levels=0), snap, shape, ctx)
    assert not np.array_equal(first, again)
    np.testing.assert_allclose(again, fresh)


def test_changes_are_found_by_generation_and_on_another_snapshot_by_comparison(snap):
    ctx = Context(mix=mix())
    plugin = Fragmentation(levels=0)
    shape = PodShape(cpu_milli=2000, gpus=1, gpu_milli=500)
    scores_of(plugin, snap, shape, ctx)
    snap.apply(1, (0,), 500, 2000, 0)  # same object: read from node_gen
    snap.apply(0, (1,), 1000, 4000, 0)
    assert snap.gen == 2 and list(snap.node_gen) == [2, 1]
    np.testing.assert_allclose(scores_of(plugin, snap, shape, ctx), scores_of(Fragmentation(levels=0), snap, shape, ctx))
    other = state(snap.copy(), 6000, [1000, 200])  # another object, written directly: compared array by array
    np.testing.assert_allclose(scores_of(plugin, other, shape, ctx), scores_of(Fragmentation(levels=0), other, shape, ctx))
    snap.apply(1, (0,), 500, 2000, 0, sign=-1)  # back to the first object
    np.testing.assert_allclose(scores_of(plugin, snap, shape, ctx), scores_of(Fragmentation(levels=0), snap, shape, ctx))


def test_fgd_packs_a_shared_pod_onto_the_used_gpu(snap):
    snap.apply(1, (3,), 500, 2000, 0)
    from scheduler.engine import Engine, PlacementConfig

    engine = Engine.from_config(PlacementConfig(profile="FGD"))
    (node, gpus, _), _ = place_pod(engine, snap, PodShape(cpu_milli=2000, gpus=1, gpu_milli=500), Context(mix=mix()))
    assert (node, gpus) == (1, (3,))


def feasible_nodes(snap, shape):
    from scheduler.engine import Engine

    engine = Engine.from_config()
    states = {p.name: p.prepare(shape, snap, Context()) for p in engine.all_plugins}
    return feasible(engine, snap, shape, states)


def scores_of(plugin, snap, shape, ctx):
    st = plugin.prepare(shape, snap, ctx)
    return plugin.score(shape, snap, build_candidates(snap, shape, feasible_nodes(snap, shape)), st)


def test_toposched_scores_every_kind_fgd_only_the_typical_ones():
    rare = PodKind(64000, 1000, 8)
    m = WorkloadMix({K1: 96, rare: 4}, coverage=0.95)
    assert [k for k, _ in m.typical] == [K1]
    assert m.arrays().kinds == (K1,)
    assert set(m.arrays(1.0).kinds) == {K1, rare}
    assert Fragmentation().coverage == 1.0 and FgdScore().coverage is None


# ------------------------------------------------------------------ protection levels

BIG = PodKind(100000, 1000, 8)  # only n1 has 8 GPUs and 100 cores for it


def poisson_tail_direct(n, lam):
    return 1.0 - sum(math.exp(-lam + i * math.log(lam) - math.lgamma(i + 1)) for i in range(n))


@pytest.mark.parametrize("n,lam", [(0, 0.0), (0, 3.0), (1, 0.0), (1, 0.5), (3, 2.5), (10, 2.727), (40, 30.0),
                                   (25, 30.0), (120, 100.0), (200, 100.0)])
def test_poisson_tail_matches_the_sum_of_the_mass_function(n, lam):
    expected = 1.0 if n == 0 else (0.0 if lam == 0 else poisson_tail_direct(n, lam))
    assert poisson_tail(np.array([n]), np.array([lam]))[0] == pytest.approx(expected, abs=1e-12)


def test_protection_charges_the_last_place_of_a_rare_kind(snap):
    # mix: BIG x1, K2 x3 (mean GPU demand per pod (8000 + 3 * 1000) / 4 = 2750 milli)
    m = mix({BIG: 1, K2: 3})
    ctx = Context(mix=m)
    shape = PodShape(cpu_milli=4000, gpus=1, gpu_milli=1000)
    plugin = Fragmentation(levels=0)
    st = plugin.prepare(shape, snap, ctx)
    cand = build_candidates(snap, shape, feasible_nodes(snap, shape))
    assert cand.node.tolist() == [0, 1]
    prot = plugin._protection
    prot.sync()
    kinds = list(m.arrays(1.0).kinds)
    big, k2 = kinds.index(BIG), kinds.index(K2)
    # places: BIG only on n1 (one), K2 two on n0 and eight on n1
    assert prot.slots[:, big].tolist() == [0, 1] and prot.slots[:, k2].tolist() == [2, 8]
    free = 10000
    worth_big = 8000 * (1 - math.exp(-0.25 * free / 2750))  # P(Poisson(0.909) >= 1)
    hot, worth = prot.worth()
    assert hot.tolist() == [big]  # K2's 10 places against 2.7 expected pods are worth < 1 milli
    assert worth[0] == pytest.approx(worth_big)
    penalty = prot.penalty(shape, cand)
    assert penalty.tolist() == pytest.approx([0.0, worth_big])  # only n1 loses BIG's place
    scores = plugin.score(shape, snap, cand, st)
    bare = Fragmentation(levels=0, protect=False)
    plain = bare.score(shape, snap, cand, bare.prepare(shape, snap, ctx))
    descent = st.descent(shape, cand.node)
    np.testing.assert_allclose(plain, 1 / (1 + np.exp(-descent / 1000)))
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-(descent - penalty) / 1000)))


def test_protection_follows_placements_and_leaves_plenty_alone(snap):
    m = mix({BIG: 1, K2: 3})
    ctx = Context(mix=m)
    shape = PodShape(cpu_milli=4000, gpus=1, gpu_milli=1000)
    plugin = Fragmentation()
    plugin.prepare(shape, snap, ctx)
    snap.apply(1, (0,), 1000, 4000, 0)  # n1 can no longer take BIG: nothing left to protect for it
    plugin.prepare(shape, snap, ctx)
    prot = plugin._protection
    prot.sync()
    big = list(m.arrays(1.0).kinds).index(BIG)
    assert prot.total[big] == 0 and prot.free_milli == 9000
    assert big not in prot.worth()[0].tolist()
    # kinds with places to spare are worth nothing: 50 idle G2 nodes, K2 and K1 each well
    # below its places (400 K2 places, 160 expected; 800 K1 places, 480 expected)
    plugin = Fragmentation()
    nodes = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"g{i},128000,786432,8,G2\n" for i in range(50))
    big_cluster = Snapshot.empty(openb_arrays(nodes, "fifty"))
    plugin.prepare(shape, big_cluster, Context(mix=mix({K2: 1, K1: 3})))
    cand = build_candidates(big_cluster, shape, feasible_nodes(big_cluster, shape))
    assert plugin._protection.penalty(shape, cand) is None
    assert FgdScore().protect is False and Fragmentation().protect is True


# two 8-GPU kinds that only the 128-core nodes can take, and one (A2) that G2 nodes can take too
A1, A2, A3 = PodKind(120000, 1000, 8), PodKind(64000, 1000, 8), PodKind(120200, 1000, 8)
POOL_NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"g2-{i},96000,393216,8,G2\n" for i in range(4)) + \
    "".join(f"g3-{i},128000,786432,8,G3\n" for i in range(3))


def test_kinds_with_the_same_gpus_and_node_types_share_a_place_group():
    arrays = openb_arrays(POOL_NODES, "pool")
    m = WorkloadMix({A1: 1, A2: 1, A3: 1, K1: 1, K2: 1, PodKind(2000, 500, 1, ("G3",)): 1}, coverage=1.0)
    a = m.arrays(1.0)
    groups = dict(zip(a.kinds, place_groups(MixModel(a, arrays.models, "capacity"), arrays).tolist(), strict=True))
    assert groups[A1] == groups[A3]  # 120 cores: only G3
    assert len({groups[A1], groups[A2], groups[K1], groups[K2], groups[PodKind(2000, 500, 1, ("G3",))]}) == 5


def test_protection_pools_the_arrivals_of_a_place_group_and_charges_its_places_once():
    snap = Snapshot.empty(openb_arrays(POOL_NODES, "pool"))
    m = WorkloadMix({A1: 1, A3: 1, K2: 6}, coverage=1.0)  # GPU demand per pod (2 * 8000 + 6 * 1000) / 8 = 2750
    ctx = Context(mix=m)
    shape = PodShape(cpu_milli=4000, gpus=1, gpu_milli=1000)
    plugin = Fragmentation(levels=0)
    st = plugin.prepare(shape, snap, ctx)
    cand = build_candidates(snap, shape, feasible_nodes(snap, shape))
    prot = plugin._protection
    prot.sync()
    kinds = list(m.arrays(1.0).kinds)
    a1, a3 = kinds.index(A1), kinds.index(A3)
    assert prot.slots[:, a1].tolist() == [0] * 4 + [1] * 3 == prot.slots[:, a3].tolist()
    # each kind alone expects 56 GPUs * (1/8) / 2.75 = 2.5 pods for 3 places; the two together 5.1
    pooled = 2 * (1 / 8) * 56000 / 2750
    hot, worth = prot.worth()
    assert sorted(hot.tolist()) == sorted([a1, a3])
    assert worth.tolist() == pytest.approx([8000 * poisson_tail_direct(3, pooled)] * 2)
    penalty = prot.penalty(shape, cand)
    on_g3 = np.isin(cand.node, [4, 5, 6])
    # a 1-GPU pod on a G3 node takes one place of A1 and the same place of A3: charged once
    assert penalty[on_g3].tolist() == pytest.approx([8000 * poisson_tail_direct(3, pooled)] * int(on_g3.sum()))
    assert not penalty[~on_g3].any()
    # a pod of A1 takes a G3 node wherever it goes: A3's places are not charged to it
    big = PodShape(cpu_milli=120000, gpus=8, gpu_milli=1000)
    plugin.prepare(big, snap, ctx)
    assert prot.penalty(big, build_candidates(snap, big, feasible_nodes(snap, big))) is None
    assert st is plugin._stats
