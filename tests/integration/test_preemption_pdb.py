"""PodDisruptionBudget-aware preemption by the live scheduler against the test API server (127.0.0.1).

One full 8-GPU node holds two priority-1 pods of 4 GPUs; ``p`` is selected by a
PodDisruptionBudget that allows no disruption (the test writes its status, as the
disruption controller would)::

    n0 [p* p* p* p* | q q q q]
"""

from __future__ import annotations

from tests.integration import objects as o
from tests.integration.conftest import bound_pods, events_for, fast_config, wait_for

PDB = "poddisruptionbudgets.policy"


def pdb(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}


def protect(server, name: str, labels: dict[str, str], allowed: int) -> None:
    server.store.create(PDB, pdb(name, labels))
    server.store.mutate(PDB, name, "default", lambda p: p["status"].update(
        disruptionsAllowed=allowed, currentHealthy=1, desiredHealthy=1, expectedPods=1))


def start(server, schedulers):
    server.store.create("nodes", o.node("n0", 8, rack="r0"))
    svc = schedulers.start(config=fast_config())
    wait_for(lambda: svc.is_leader, what="the lease")
    server.store.create("pods", o.pod("p", 4, priority=1, labels={"app": "db"}))
    server.store.create("pods", o.pod("q", 4, priority=1, labels={"app": "batch"}))
    wait_for(lambda: len(bound_pods(server)) == 2, what="the low-priority pods bound")
    return svc


def test_the_pod_a_budget_protects_is_spared_and_the_other_one_is_the_victim(apiserver, schedulers):
    protect(apiserver, "db", {"app": "db"}, 0)
    svc = start(apiserver, schedulers)
    wait_for(lambda: svc.scheduler.cache.budgets, what="the budget in the cache")
    apiserver.store.create("pods", o.pod("hi", 4, priority=100))

    bound = wait_for(lambda: "hi" in bound_pods(apiserver) and bound_pods(apiserver), what="hi bound")
    assert sorted(bound) == ["hi", "p"]
    notes = [e["message"] for e in wait_for(lambda: events_for(apiserver, "hi", "Preempting"), what="Preempting")]
    assert notes == ["Preempting 1 pod(s) of lower priority (at most 1) on node(s) n0"]


def test_a_budget_is_broken_when_nothing_else_makes_room_and_the_event_says_so(apiserver, schedulers):
    protect(apiserver, "all", {}, 0)  # empty selector: every pod of the namespace
    svc = start(apiserver, schedulers)
    wait_for(lambda: svc.scheduler.cache.budgets, what="the budget in the cache")
    apiserver.store.create("pods", o.pod("hi", 8, priority=100))

    wait_for(lambda: sorted(bound_pods(apiserver)) == ["hi"], what="hi bound alone")
    notes = [e["message"] for e in wait_for(lambda: events_for(apiserver, "hi", "Preempting"), what="Preempting")]
    assert notes == ["Preempting 2 pod(s) of lower priority (at most 1) on node(s) n0; "
                     "2 of them break(s) a PodDisruptionBudget"]


def test_a_server_without_policy_v1_budgets_does_not_stop_scheduling_or_preemption(apiserver, schedulers):
    apiserver.store.fail_next("list", r"^/apis/policy/v1/poddisruptionbudgets", 404)
    protect(apiserver, "db", {"app": "db"}, 0)  # stored, but the scheduler's list of budgets got 404
    svc = start(apiserver, schedulers)
    answers = wait_for(lambda: [r.status for r in apiserver.store.find_requests(
        path_regex=r"^/apis/policy/v1/poddisruptionbudgets")], what="the budget list asked for")
    assert answers == [404]
    apiserver.store.create("pods", o.pod("hi", 4, priority=100))

    bound = wait_for(lambda: "hi" in bound_pods(apiserver) and bound_pods(apiserver), what="hi bound")
    assert len(bound) == 2 and not svc.scheduler.cache.budgets  # planned without the budget
    answers = [r.status for r in apiserver.store.find_requests(path_regex=r"^/apis/policy/v1/poddisruptionbudgets")]
    assert answers == [404]  # looked for once; the next look is a minute away
