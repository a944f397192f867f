"""The live scheduler against the test API server: gangs, rollback, leader election, re-lists, restart.

Every test drives the official ``kubernetes`` client over real HTTP on 127.0.0.1. The
clusters are tiny; racks are drawn above the tests that care::

    rack r0: n0 n1      rack r1: n2 n3      (8 GPUs each)
"""

from __future__ import annotations

import json

from tests.integration import objects as o
from tests.integration.conftest import Schedulers, bound_pods, events_for, fast_config, wait_for

GPUS = "toposched.io/gpus"
ASSIGNMENT = "toposched.io/assignment"
PODGROUPS = "podgroups.scheduling.x-k8s.io"


def add_nodes(server, count: int = 4, per_rack: int = 2, gpus: int = 8) -> None:
    for i in range(count):
        server.store.create("nodes", o.node(f"n{i}", gpus, rack=f"r{i // per_rack}"))


def create(server, *pods) -> None:
    for p in pods:
        server.store.create("pods", p)


def leader(schedulers: Schedulers):
    svc = schedulers.start()
    wait_for(lambda: svc.is_leader, what="the lease")
    return svc


def condition(server, name: str) -> dict | None:
    pod = server.store.get("pods", name)
    return next((c for c in (pod or {}).get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"), None)


# --- gangs ----------------------------------------------------------------------------------


def test_gang_is_bound_together_in_one_rack_with_gpu_annotations(apiserver, schedulers):
    add_nodes(apiserver)
    leader(schedulers)
    apiserver.store.create(PODGROUPS, o.podgroup("llm", 2))
    create(apiserver, *o.gang_pods("llm", 2, 8, annotations={"toposched.io/required-level": "rack"}))

    bound = wait_for(lambda: len(bound_pods(apiserver)) == 2 and bound_pods(apiserver), what="both members bound")
    racks = {int(node[1:]) // 2 for node in bound.values()}
    assert len(racks) == 1 and len(set(bound.values())) == 2
    for name, node in bound.items():
        ann = apiserver.store.get("pods", name)["metadata"]["annotations"]
        assert ann[GPUS] == "0,1,2,3,4,5,6,7"
        assert json.loads(ann[ASSIGNMENT])["node"] == node
        wait_for(lambda name=name: events_for(apiserver, name, "Scheduled"), what="Scheduled event")


def test_gang_that_cannot_fit_stays_pending_with_one_clear_event(apiserver, schedulers):
    add_nodes(apiserver)
    svc = leader(schedulers)
    apiserver.store.create(PODGROUPS, o.podgroup("big", 5))
    create(apiserver, *o.gang_pods("big", 5, 8))
    names = [f"big-{i}" for i in range(5)]
    wait_for(lambda: all(events_for(apiserver, n, "FailedScheduling") for n in names), what="FailedScheduling")
    attempts = svc.metrics.gang_attempts.labels(result="unschedulable")
    first = attempts._value.get()
    for i in range(3):  # cluster changes make the gang try again; the same verdict is not repeated
        apiserver.store.mutate("nodes", "n0", None, lambda n, i=i: n["metadata"]["labels"].update({"touch": str(i)}))
        wait_for(lambda i=i: attempts._value.get() >= first + i + 1, what="another attempt")
    assert not bound_pods(apiserver)
    for n in names:
        events = events_for(apiserver, n, "FailedScheduling")
        assert len(events) == 1, [e["message"] for e in events]
        assert "gang default/big" in events[0]["message"] and "5x8 GPU" in events[0]["message"]
        cond = condition(apiserver, n)
        assert cond and cond["status"] == "False" and cond["reason"] == "Unschedulable"


def test_member_bind_failure_rolls_the_gang_back_then_retry_binds_all(apiserver, schedulers):
    add_nodes(apiserver)
    apiserver.store.create(PODGROUPS, o.podgroup("g", 3))
    apiserver.store.fail_next("POST", r"/pods/g-2/binding$", 500, message="etcd is sad")
    leader(schedulers)
    pods = o.gang_pods("g", 3, 8)
    create(apiserver, *pods)

    wait_for(lambda: events_for(apiserver, "g-2", "FailedScheduling"), what="the failed member's event")
    # the members that were bound are deleted through the API, with an event saying why
    wait_for(lambda: apiserver.store.get("pods", "g-0") is None and apiserver.store.get("pods", "g-1") is None,
             what="bound members deleted")
    assert not bound_pods(apiserver)
    for name in ("g-0", "g-1"):
        notes = [e["message"] for e in wait_for(lambda name=name: events_for(apiserver, name, "GangRollback"),
                                                what="GangRollback event")]
        assert "gang default/g could not be bound as a whole" in notes[0] and "g-2" in notes[0]
    assert "rolled back" in events_for(apiserver, "g-2", "FailedScheduling")[0]["message"]

    # the job controller re-creates the deleted members: the gang is placed whole
    create(apiserver, pods[0], pods[1])
    wait_for(lambda: len(bound_pods(apiserver)) == 3, what="the whole gang bound on retry")


def test_gang_waits_for_its_members_then_binds(apiserver, schedulers):
    add_nodes(apiserver)
    leader(schedulers)
    apiserver.store.create(PODGROUPS, o.podgroup("w", 3))
    pods = o.gang_pods("w", 3, 4)
    create(apiserver, pods[0], pods[1])
    wait_for(lambda: apiserver.store.get("pods", "w-0") and not bound_pods(apiserver), what="pending")
    create(apiserver, pods[2])
    wait_for(lambda: len(bound_pods(apiserver)) == 3, what="gang bound once complete")


# --- leader election ------------------------------------------------------------------------


def test_only_the_leader_binds_and_the_standby_takes_over(apiserver, schedulers):
    add_nodes(apiserver)
    a = leader(schedulers)
    b = schedulers.start("b")
    create(apiserver, *(o.pod(f"p{i}", 1) for i in range(3)))
    wait_for(lambda: len(schedulers.bound_by["a"]) == 3, what="first pods bound by a")
    assert sorted(schedulers.bound_by["a"]) == ["default/p0", "default/p1", "default/p2"]
    assert schedulers.bound_by["b"] == [] and not b.is_leader

    schedulers.stop(a)  # releases the lease
    wait_for(lambda: b.is_leader, timeout_s=5, what="the standby to take over")
    create(apiserver, *(o.pod(f"q{i}", 1) for i in range(2)))
    wait_for(lambda: len(schedulers.bound_by["b"]) == 2, what="pods bound by the new leader")
    assert sorted(schedulers.bound_by["b"]) == ["default/q0", "default/q1"]
    lease = apiserver.store.get("leases", "toposched", "default")
    assert lease["spec"]["holderIdentity"] == "b_test" and lease["spec"]["leaseTransitions"] >= 1


# --- watch: drops, 410 Gone, re-list --------------------------------------------------------


def test_dropped_watch_and_410_lead_to_a_relist_and_no_pod_is_missed(apiserver, schedulers):
    #   one node, 8 GPUs: a pod deleted while the watch was down must be freed by the re-list
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    svc = leader(schedulers)
    create(apiserver, o.pod("a", 8))
    wait_for(lambda: bound_pods(apiserver) == {"a": "n0"}, what="a bound")
    wait_for(lambda: all(r._resp is not None for r in svc.reflectors[:2]), what="node and pod watches open")

    apiserver.store.drop_watches()
    apiserver.store.delete("pods", "a")
    create(apiserver, o.pod("b", 8))
    wait_for(lambda: bound_pods(apiserver) == {"b": "n0"}, what="b bound after the re-list freed a's GPUs")

    apiserver.store.expire_watches()  # in-stream ERROR 410 and compaction
    apiserver.store.delete("pods", "b")
    create(apiserver, o.pod("c", 8))
    wait_for(lambda: bound_pods(apiserver) == {"c": "n0"}, what="c bound after 410")

    apiserver.store.drop_watches(clean=True)  # normal end of stream, then the resume point is compacted
    apiserver.store.compact()
    apiserver.store.delete("pods", "c")
    create(apiserver, o.pod("d", 8))
    wait_for(lambda: bound_pods(apiserver) == {"d": "n0"}, what="d bound after an HTTP 410 on re-watch")

    relists = {(s.labels["resource"], s.labels["cause"]) for m in svc.metrics.relists.collect()
               for s in m.samples if s.name.endswith("_total") and s.value > 0}
    assert {("pods", "dropped"), ("pods", "gone")} <= relists
    svc.scheduler.cache.ledger.check_invariants()


# --- restart ----------------------------------------------------------------------------------


def _assigned(server) -> dict[str, list[set[int]]]:
    out: dict[str, list[set[int]]] = {}
    for p in server.store.list("pods"):
        ann = p["metadata"].get("annotations") or {}
        if p["spec"].get("nodeName") and ASSIGNMENT in ann:
            out.setdefault(p["spec"]["nodeName"], []).append(set(json.loads(ann[ASSIGNMENT])["gpus"]))
    return out


def test_restart_rebuilds_the_ledger_and_hands_out_no_gpu_twice(apiserver, schedulers):
    add_nodes(apiserver, count=2, per_rack=2)
    a = leader(schedulers)
    create(apiserver, *(o.pod(f"p{i}", 2) for i in range(3)))
    wait_for(lambda: len(bound_pods(apiserver)) == 3, what="first pods bound")
    # a pod another scheduler put on n1: no assignment annotation, 2 GPUs
    create(apiserver, o.pod("other", 2, scheduler="default-scheduler"))
    apiserver.store.bind("default", "other", "n1")
    schedulers.stop(a)

    b = leader(schedulers)
    create(apiserver, *(o.pod(f"q{i}", 2) for i in range(5)))  # 16 GPUs, 8 taken: 4 of 5 fit
    wait_for(lambda: len(bound_pods(apiserver)) == 8, what="restart binds what fits")
    wait_for(lambda: events_for(apiserver, next(n for n in (f"q{i}" for i in range(5))
                                                if n not in bound_pods(apiserver)), "FailedScheduling"),
             what="the fifth is unschedulable")
    for node, sets in _assigned(apiserver).items():
        gpus = [g for s in sets for g in s]
        assert len(gpus) == len(set(gpus)), f"GPU handed out twice on {node}: {sets}"
    used_n1 = {g for s in _assigned(apiserver).get("n1", []) for g in s}
    ledger = b.scheduler.cache.ledger
    ledger.check_invariants()
    other = ledger.get("default/other")
    assert other is not None and not set(other.gpus) & used_n1


def test_client_side_rate_limit_throttles_requests_but_everything_binds(apiserver, schedulers):
    """api_qps / api_burst: the scheduler's requests wait for tokens (counted), the lease is held, all pods bind."""
    add_nodes(apiserver)
    svc = schedulers.start(config=fast_config(api_qps=40, api_burst=2))
    wait_for(lambda: svc.is_leader, what="the lease")
    create(apiserver, *(o.pod(f"p{i}", 1) for i in range(8)))
    wait_for(lambda: len(bound_pods(apiserver)) == 8, what="all 8 pods bound")
    assert svc.metrics.api_throttle._value.get() > 0  # 8 bindings + 8 events on 2 saved tokens had to wait
    assert svc.is_leader
