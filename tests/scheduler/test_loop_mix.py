"""The loop scores fragmentation against the pods it is asked to place (``ArrivalMix``)."""

from __future__ import annotations

import json

from tests.integration import objects as o
from tests.scheduler.rig import LoopRig

HALF = {"toposched.io/gpu-milli": "500"}


def half_pod_on_n1(name: str) -> dict:
    """A 500m pod already running on n1's GPU 3 (bound before we started, assignment recorded)."""
    return o.pod(name, 1, node_name="n1", annotations={
        **HALF, "toposched.io/assignment": json.dumps({"node": "n1", "gpus": [3], "gpu_milli": 500,
                                                       "version": "toposched.io/v1"}),
        "toposched.io/gpus": "3"})


def placed(rig: LoopRig, name: str) -> tuple[str, tuple[int, ...]]:
    key = f"default/{name}"
    return rig.cluster.bound()[key], rig.s.cache.ledger.get(key).gpus


def scenario(rig: LoopRig) -> None:
    """A 500m pod runs on n1; a whole-GPU pod and then a 500m pod arrive."""
    rig.add(half_pod_on_n1("running"))
    rig.add(o.pod("whole", 1))
    rig.add(o.pod("half", 1, annotations=HALF))


def test_a_shared_pod_fills_the_half_used_gpu_once_the_mix_is_known():
    rig = LoopRig(nodes=2, settle=True)
    scenario(rig)
    # the mix (one whole-GPU pod, one 500m pod): a fresh GPU on n0 would leave 500m that the
    # whole-GPU kind cannot use; filling the other half of n1's GPU 3 leaves nothing
    assert rig.s.arrivals.observed == 2 and rig.s.arrivals.published == 2
    assert placed(rig, "whole") == ("n0", (0,))
    assert placed(rig, "half") == ("n1", (3,))
    rig.s.cache.ledger.check_invariants()
    rig.clock.advance(2.0)
    rig.s.step()  # gauges are refreshed at most once a second
    registry = rig.s.metrics.registry
    assert registry.get_sample_value("toposched_workload_mix_arrivals") == 2
    assert registry.get_sample_value("toposched_workload_mix_kinds") == 2


def test_without_a_mix_the_same_pod_goes_to_the_first_node():
    # the control: with fragmentation silent (no mix), ties go to the lowest node index
    rig = LoopRig(nodes=2, settle=True)
    rig.s.arrivals.observe = lambda shape: False  # nothing is ever published
    scenario(rig)
    assert rig.s.arrivals.mix is None
    assert placed(rig, "half") == ("n0", (1,))


def test_each_pending_pod_is_counted_once_and_bound_pods_not_at_all():
    rig = LoopRig(nodes=2, settle=True, workload_mix={"publish_every": 1})
    rig.add(half_pod_on_n1("running"))  # bound: not an arrival
    assert rig.s.arrivals.observed == 0
    rig.add(o.pod("a", 2), o.pod("b", 1, annotations=HALF))
    rig.run()
    rig.run()  # status writes and the bound pods coming back through the watch change nothing
    assert rig.s.arrivals.observed == 2
    kinds = {(k.gpus, k.gpu_milli) for k, _ in rig.s.arrivals.mix.typical}
    assert kinds == {(2, 1000), (1, 500)}
    assert not rig.s._counted  # both bound: nothing pending is remembered


def test_a_failure_to_count_a_pod_does_not_keep_it_from_being_placed():
    rig = LoopRig(nodes=1, settle=True)

    def broken(shape):
        raise RuntimeError("mix is broken")

    rig.s.arrivals.observe = broken
    rig.add(o.pod("a", 1))
    assert rig.cluster.bound() == {"default/a": "n0"}
