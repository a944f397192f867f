"""The FGD paper's baseline scores, as integers out of 100, on hand-computed nodes.

Cluster: n0 T4 x2 (CPU 8000), n1 G2 x8 (CPU 128000): n1 is the largest node, so the
normalisers are the artifact's 128000 milli-CPU and 8000 milli-GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from plugins.base import Context
from plugins.best_fit import best_fit_score
from plugins.dot_product import dot_product_score
from plugins.gpu_clustering import gpu_clustering_score
from plugins.gpu_packing import gpu_packing_score
from plugins.random_score import RandomScore
from scheduler.engine import Engine, PlacementConfig, build_candidates, place_pod
from scheduler.snapshot import PodShape, Snapshot
from simulations.fillup import openb_arrays

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,8000,64000,2,T4\nn1,128000,786432,8,G2\n"
ONE_GPU = PodShape(cpu_milli=4000, gpus=1)
SHARED = PodShape(cpu_milli=2000, gpus=1, gpu_milli=300)
CPU_ONLY = PodShape(cpu_milli=16000)
BOTH = np.array([0, 1])


@pytest.fixture
def snap():
    return Snapshot.empty(openb_arrays(NODES, "tiny"))


def test_best_fit(snap):
    # n1: 1 - (124000/128000 * .5 + 7000/8000 * .5) = 0.078125 -> 7; n0: 1 - (4000/128000*.5 + 1000/8000*.5) -> 92
    assert best_fit_score(ONE_GPU, snap, BOTH).tolist() == [92, 7]


def test_dot_product(snap):
    # n1: dot = 1 * 4000/128000 + 1 * 1000/8000 = 0.15625 -> 100 * (1 - 0.078125) = 92
    # n0: dot = 8000/128000 * 4000/128000 + 2000/8000 * 1000/8000 -> 1 - 0.0166 -> 98
    assert dot_product_score(ONE_GPU, snap, BOTH).tolist() == [98, 92]


def test_gpu_clustering_bands(snap):
    assert gpu_clustering_score(CPU_ONLY, snap, BOTH).tolist() == [0, 0]
    # idle nodes: 25 + 25 * (8000 - free) // 8000: n0 has 2000 free -> 18
    assert gpu_clustering_score(SHARED, snap, BOTH).tolist() == [25 + 18, 25]
    snap.apply(1, (0,), 500, 1000, 0)  # a shared pod on n1
    assert gpu_clustering_score(SHARED, snap, BOTH).tolist() == [43, 75 + 1]  # only its kind
    snap.apply(1, (1,), 1000, 1000, 0)  # and a 1-GPU pod
    assert gpu_clustering_score(SHARED, snap, BOTH)[1] == 50 + 25 * 1500 // 8000
    assert gpu_clustering_score(PodShape(gpus=2), snap, BOTH)[1] == 0 + 25 * 1500 // 8000


def test_gpu_packing_cases(snap):
    assert gpu_packing_score(CPU_ONLY, snap, BOTH).tolist() == [0, 0]
    # idle nodes: max(33 - free GPUs, free GPUs)
    assert gpu_packing_score(ONE_GPU, snap, BOTH).tolist() == [31, 25]
    snap.apply(1, (0,), 500, 0, 0)
    # n1 in use: a whole GPU pod takes 1 free GPU -> 49; a shared pod fits the 500 GPU -> 100 - 50 // 10
    assert gpu_packing_score(ONE_GPU, snap, BOTH)[1] == 49
    assert gpu_packing_score(SHARED, snap, BOTH)[1] == 95
    assert gpu_packing_score(PodShape(cpu_milli=1, gpus=1, gpu_milli=600), snap, BOTH)[1] == 49


def test_shared_pod_takes_the_tightest_gpu_of_the_chosen_node(snap):
    snap.apply(1, (2,), 300, 0, 0)  # GPU 2: 700 free
    snap.apply(1, (5,), 600, 0, 0)  # GPU 5: 400 free
    snap.free_cpu[0] = 0  # n0 is out
    engine = Engine.from_config(PlacementConfig(profile="BestFit"))
    (node, gpus, _), _ = place_pod(engine, snap, SHARED, Context())
    assert (node, gpus) == (1, (5,))


def test_random_picks_nodes_uniformly_and_gpus_inside_them(snap):
    plugin = RandomScore()
    ctx = Context(rng=np.random.default_rng(3))
    cand = build_candidates(snap, SHARED, np.ones(2, dtype=bool))
    wins = np.zeros(2)
    for _ in range(400):
        s = plugin.score(SHARED, snap, cand, plugin.prepare(SHARED, snap, ctx))
        wins[cand.node[int(np.argmax(s))]] += 1
    assert 150 < wins[0] < 250  # n0 has 2 GPUs, n1 has 8: nodes, not GPUs, are drawn evenly
