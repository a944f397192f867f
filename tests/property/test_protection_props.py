"""Protection levels under random placements: the per-node places the plugin keeps up to date
incrementally equal a fresh count, their column sums equal the kept totals, worth is a
probability times demand, and a candidate is never rewarded for taking places.

Cluster: four openb-style nodes (two 8-GPU G2, one 2-GPU T4, one 4-GPU V100); mix: a few
whole-GPU, shared and multi-GPU kinds, one of them only for V100.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.base import Context
from plugins.fragmentation import Fragmentation, Protection
from scheduler.engine import Engine, build_candidates, feasible
from scheduler.snapshot import PodShape, Snapshot
from scheduler.workload_mix import PodKind, WorkloadMix
from simulations.fillup import openb_arrays

NODES = ("sn,cpu_milli,memory_mib,gpu,model\n"
         "g0,96000,393216,8,G2\ng1,96000,393216,8,G2\nt0,104000,524288,2,T4\nv0,48000,376832,4,V100M32\n")
ARRAYS = openb_arrays(NODES, "protection-props")
KINDS = {
    PodKind(8000, 1000, 1): 40, PodKind(4000, 500, 1): 30, PodKind(2000, 250, 1): 10,
    PodKind(64000, 1000, 8): 2, PodKind(12000, 1000, 2, ("V100M32",)): 3, PodKind(1000, 0, 0): 15,
}
SHAPES = [PodShape(cpu_milli=k.cpu_milli, memory_mib=4096, gpus=k.gpus, gpu_milli=k.gpu_milli or 1000,
                   gpu_models=k.models) for k in KINDS]
ENGINE = Engine.from_config()


def mix() -> WorkloadMix:
    m = WorkloadMix(dict(KINDS), coverage=1.0)
    for k, c in KINDS.items():
        m._memory[k] = 4096.0 * c
    return m


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(SHAPES) - 1), min_size=1, max_size=40))
def test_places_stay_exact_and_penalties_never_reward(order):
    snap = Snapshot.empty(ARRAYS)
    ctx = Context(mix=mix())
    plugin = Fragmentation()
    for i in order:
        shape = SHAPES[i]
        states = {p.name: p.prepare(shape, snap, ctx) for p in ENGINE.all_plugins}
        ok = feasible(ENGINE, snap, shape, states)
        if not ok.any():
            continue
        st_ = plugin.prepare(shape, snap, ctx)
        cand = build_candidates(snap, shape, ok)
        if not len(cand):
            continue
        prot: Protection = plugin._protection
        penalty = prot.penalty(shape, cand)
        # the kept places equal a fresh count of the current state, and their sums the totals
        fresh = prot.places(ARRAYS.model_id, snap.free_cpu, snap.free_mem, snap.gpu_free)
        prot.sync()
        np.testing.assert_array_equal(prot.slots, fresh)
        np.testing.assert_array_equal(prot.total, fresh.sum(axis=0))
        assert prot.free_milli == int(np.maximum(snap.gpu_free, 0).sum())
        hot, worth = prot.worth()
        assert ((worth >= Protection.CUTOFF_MILLI) & (worth <= prot.demand[hot] + 1e-9)).all()
        if penalty is not None:
            assert (penalty >= 0).all()  # taking places never makes a candidate better
        scores = plugin.score(shape, snap, cand, st_)
        assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
        m = int(np.argmax(scores))
        snap.apply(int(cand.node[m]), tuple(cand.gpus[m]), shape.gpu_milli, shape.cpu_milli, shape.memory_mib)
    assert (snap.gpu_free[snap.gpu_free != -1] >= 0).all() and (snap.free_cpu >= 0).all()
