"""Tie-breaking in the engine's select phase: first, random (by node) and ranked.

Cluster: three identical idle openb-style nodes n0..n2 (2 x T4 each), so every pod ties.
"""

from __future__ import annotations

import numpy as np

from plugins.base import Context
from scheduler.engine import Engine, PlacementConfig, place_pod
from scheduler.snapshot import PodShape, Snapshot
from simulations.fillup import openb_arrays

NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"n{i},32000,131072,{2 if i < 3 else 8},T4\n" for i in range(4))
SHARED = PodShape(cpu_milli=1000, gpus=1, gpu_milli=200)


def fresh():
    snap = Snapshot.empty(openb_arrays(NODES, "ties"))
    snap.free_cpu[3] = 0  # n3 (8 GPUs) is out unless a test says otherwise
    return snap


def decide(tie_break, seed=0, snap=None, shape=SHARED, ctx=None):
    engine = Engine.from_config(PlacementConfig(profile="binpack", tie_break=tie_break, seed=seed))
    (node, gpus, _), _ = place_pod(engine, snap if snap is not None else fresh(), shape,
                                   ctx or Context(rng=np.random.default_rng(seed)))
    return node, gpus


def test_first_takes_the_lowest_node():
    assert decide("first") == (0, (0,))


def test_ranked_follows_one_random_node_order_per_engine():
    engine = Engine.from_config(PlacementConfig(profile="binpack", tie_break="ranked"))
    ctx = Context(rng=np.random.default_rng(11))
    snap = fresh()
    rank = engine.node_rank(snap.n_nodes, np.random.default_rng(11))
    first = int(np.argmin(np.where(np.arange(4) < 3, rank, 99)))
    seen = set()
    for _ in range(3):
        (node, gpus, _), _ = place_pod(engine, snap, PodShape(cpu_milli=1000, gpus=1), ctx)
        seen.add(node)
        snap.apply(node, gpus, 1000, 1000, 0)
    # whole-GPU pods on a binpack profile: the first-ranked node fills up before another starts
    assert first in seen and len(seen) == 2
    assert decide("ranked", seed=5) == decide("ranked", seed=5)


def test_random_draws_nodes_not_gpus():
    snap = fresh()
    snap.free_cpu[3] = 32000  # n3 offers 8 candidate GPUs, the others 2 each
    engine = Engine.from_config(PlacementConfig(plugins=[], tie_break="random"))  # every candidate ties
    ctx = Context(rng=np.random.default_rng(1))
    wins = np.zeros(4)
    for _ in range(800):
        (node, _, _), _ = place_pod(engine, snap, SHARED, ctx)
        wins[node] += 1
    assert wins.min() > 150 and wins.max() < 250  # about 200 each, not 8/14 of the draws for n3


def test_shared_pod_goes_to_the_tightest_gpu_of_the_chosen_node():
    snap = fresh()
    snap.apply(1, (0,), 500, 0, 0)
    snap.apply(1, (1,), 700, 0, 0)
    snap.free_cpu[[0, 2]] = 0
    assert decide("first", snap=snap) == (1, (1,))


def test_a_reused_engine_decides_as_a_fresh_one_for_the_same_seed():
    engine = Engine.from_config(PlacementConfig(profile="binpack", tie_break="ranked"))
    shape = PodShape(cpu_milli=1000, gpus=1)

    def once(eng, seed):
        (node, _, _), _ = place_pod(eng, fresh(), shape, Context(rng=np.random.default_rng(seed)))
        return node

    fresh_engine = lambda: Engine.from_config(PlacementConfig(profile="binpack", tie_break="ranked"))  # noqa: E731
    assert [once(engine, s) for s in (1, 2, 3, 2)] == [once(fresh_engine(), s) for s in (1, 2, 3, 2)]
