"""The extender's preempt verb with PodDisruptionBudgets: which extra victims it adds and how it counts.

Node n1 (8 GPUs, rack r1) holds four 2-GPU pods of namespace ml at priorities 5, 0, 0, 5::

    n1 [a5 a5 b0 b0 c0 c0 d5 d5]

A priority-10 pod asking for 4 GPUs needs two of them gone.
"""

from __future__ import annotations

from scheduler.engine import Engine, PlacementConfig
from scheduler.extender import wire
from scheduler.extender.handlers import ExtenderHandlers
from scheduler.extender.state import CacheState
from scheduler.fakes import InMemoryBinder, RecordingEvents
from tests.clock import ManualClock

from .conftest import LEVELS, gpu_pod, k8s_node


def handlers(budgets: list[dict], labels: dict[str, dict[str, str]] | None = None) -> ExtenderHandlers:
    lab = labels or {}
    pods = [gpu_pod(n, 2, node="n1", on_gpus=g, priority=p, labels=lab.get(n))
            for n, g, p in (("a", (0, 1), 5), ("b", (2, 3), 0), ("c", (4, 5), 0), ("d", (6, 7), 5))]
    state = CacheState.from_objects([k8s_node("n1", rack="r1")], pods, levels=LEVELS,
                                    groups={"poddisruptionbudgets.policy": budgets})
    return ExtenderHandlers(state, Engine.from_config(PlacementConfig()), binder=InMemoryBinder(),
                            events=RecordingEvents(), clock=ManualClock())


def pdb(name: str, selector: dict, allowed: int) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"selector": selector}, "status": {"disruptionsAllowed": allowed}}


def preempt(h, gpus: int, given: list[str] = (), violations: int = 0) -> tuple[list[str], int]:
    body = {"Pod": gpu_pod("vip", gpus, priority=10),
            "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": u} for u in given], "NumPDBViolations": violations}}}
    out = h.preempt(wire.ExtenderPreemptionArgs.model_validate(body)).to_wire()["NodeNameToMetaVictims"]["n1"]
    return sorted(p["UID"] for p in out["Pods"]), out["NumPDBViolations"]


def test_without_budgets_the_lowest_priority_pods_go():
    assert preempt(handlers([]), 4) == (["uid-ml-b", "uid-ml-c"], 0)


def test_a_pod_whose_eviction_breaks_a_budget_is_given_back_first():
    # b is protected: as in kube-scheduler, it is reprieved before the higher-priority pods, so d goes
    h = handlers([pdb("b", {"matchLabels": {"app": "b"}}, 0)], {"b": {"app": "b"}})
    assert preempt(h, 4) == (["uid-ml-c", "uid-ml-d"], 0)


def test_kube_schedulers_victims_use_the_budget_before_ours():
    # b and c share a budget; kube-scheduler already evicts b. Allowing 1, c would break it (d goes
    # instead); allowing 2, c may go
    labels = {"b": {"app": "pair"}, "c": {"app": "pair"}}
    tight = handlers([pdb("pair", {"matchLabels": {"app": "pair"}}, 1)], labels)
    assert preempt(tight, 4, ["uid-ml-b"]) == (["uid-ml-b", "uid-ml-d"], 0)
    loose = handlers([pdb("pair", {"matchLabels": {"app": "pair"}}, 2)], labels)
    assert preempt(loose, 4, ["uid-ml-b"]) == (["uid-ml-b", "uid-ml-c"], 0)


def test_violations_of_the_victims_we_add_are_added_to_kube_schedulers_count():
    # every pod of ml is under a budget allowing 1; the whole node is needed
    h = handlers([pdb("all", {}, 1)])
    assert preempt(h, 8, violations=2) == (["uid-ml-a", "uid-ml-b", "uid-ml-c", "uid-ml-d"], 2 + 3)


def test_a_budget_of_another_namespace_or_a_null_selector_counts_for_nothing():
    other = {**pdb("x", {}, 0), "metadata": {"name": "x", "namespace": "web"}}
    null = {**pdb("n", {}, 0), "spec": {}}
    assert preempt(handlers([other, null]), 4) == (["uid-ml-b", "uid-ml-c"], 0)
