"""Node failures, live: the scheduler against the test API server over real HTTP on 127.0.0.1.

A node goes NotReady (its Ready condition patched to Unknown, as the node lifecycle
controller does when the kubelet stops reporting); after the grace period toposched
deletes the pods on it with events, the test plays the job controller and recreates
them, and the gang is repaired next to its survivor::

    rack r0: n0 n1 n2      rack r1: n3 n4 n5      (8 GPUs each)

The ``apiserver`` fixture (tests/integration/conftest.py) is ``tests.kube.apiserver.running_apiserver``.
"""

from __future__ import annotations

from tests.integration import objects as o
from tests.integration.conftest import bound_pods, events_for, fast_config, wait_for

GRACE_S = 0.5


def add_nodes(server, count: int = 6, per_rack: int = 3) -> None:
    for i in range(count):
        server.store.create("nodes", o.node(f"n{i}", 8, rack=f"r{i // per_rack}"))


def set_ready(server, name: str, status: str) -> None:
    def change(node):
        node["status"]["conditions"] = [{"type": "Ready", "status": status, "reason": "NodeStatusUnknown"}]
    server.store.mutate("nodes", name, None, change)


def recreate(server, pod: dict, suffix: str) -> str:
    """What a job controller does for a deleted member: a new pod with the same labels and annotations."""
    meta = {k: v for k, v in pod["metadata"].items()
            if k in ("namespace", "labels", "annotations", "ownerReferences")}
    meta["name"] = f"{pod['metadata']['name']}-{suffix}"
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("toposched.io/")
                           or k in ("toposched.io/gang", "toposched.io/gang-size", "toposched.io/required-level")}
    spec = {k: v for k, v in pod["spec"].items() if k != "nodeName"}
    server.store.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                                 "status": {"phase": "Pending"}})
    return meta["name"]


def rack(name: str) -> int:
    return int(name[1:]) // 3


def start(schedulers):
    from scheduler.failures import NodeFailureConfig

    svc = schedulers.start(config=fast_config(node_failures=NodeFailureConfig(grace_s=GRACE_S)))
    wait_for(lambda: svc.is_leader, what="the lease")
    return svc


def test_node_not_ready_gang_repaired_next_to_its_survivor_with_events(apiserver, schedulers):
    add_nodes(apiserver)
    start(schedulers)
    for p in o.our_gang("llm", 2, 8, required_level="rack"):
        apiserver.store.create("pods", p)
    bound = wait_for(lambda: len(bound_pods(apiserver)) == 2 and bound_pods(apiserver), what="gang bound")
    victim, survivor = "llm-1", "llm-0"
    dead = bound[victim]
    lost = apiserver.store.get("pods", victim)

    set_ready(apiserver, dead, "Unknown")
    wait_for(lambda: apiserver.store.get("pods", victim) is None, what="the lost member deleted")
    (ev,) = wait_for(lambda: events_for(apiserver, victim, "NodeFailed"), what="NodeFailed event on the pod")
    note = ev.get("note") or ev.get("message")
    assert note.startswith(f"node {dead} failed (Ready=Unknown for ")
    assert "deleted by toposched so that its controller recreates it" in note
    wait_for(lambda: events_for(apiserver, dead, "NodeFailed"), what="NodeFailed event on the node")

    new = recreate(apiserver, lost, "r1")
    now = wait_for(lambda: new in bound_pods(apiserver) and bound_pods(apiserver), what="replacement bound")
    assert now[survivor] == bound[survivor]  # the survivor was not touched
    assert now[new] != dead and rack(now[new]) == rack(bound[survivor])
    (rep,) = wait_for(lambda: events_for(apiserver, new, "GangRepaired"), what="GangRepaired event")
    assert "kept 1 survivors, replaced 1 within rack" in (rep.get("note") or rep.get("message"))
    assert apiserver.store.get("pods", survivor) is not None


def test_node_recovers_and_nothing_moves_back(apiserver, schedulers):
    add_nodes(apiserver)
    svc = start(schedulers)
    apiserver.store.create("pods", o.pod("solo", 8))
    dead = wait_for(lambda: bound_pods(apiserver).get("solo"), what="solo bound")
    lost = apiserver.store.get("pods", "solo")
    set_ready(apiserver, dead, "False")
    wait_for(lambda: apiserver.store.get("pods", "solo") is None, what="solo deleted")
    new = recreate(apiserver, lost, "r1")
    placed = wait_for(lambda: bound_pods(apiserver).get(new), what="replacement bound")
    assert placed != dead
    set_ready(apiserver, dead, "True")
    wait_for(lambda: events_for(apiserver, dead, "NodeRecovered"), what="NodeRecovered event")
    wait_for(lambda: not svc.scheduler.failures.failed, what="the node counted as recovered")
    assert bound_pods(apiserver)[new] == placed


def test_a_refused_deletion_of_a_lost_member_is_tried_again_over_http(apiserver, schedulers, monkeypatch):
    """The API server refuses the DELETE of the lost member twice (403, as RBAC would): toposched
    says so once (DeleteFailed) and deletes it again until it is gone (retries every 0.2 s, 0.4 s
    here instead of 2 s, 4 s)."""
    from scheduler import failures

    monkeypatch.setattr(failures, "DELETE_RETRY_S", 0.2)
    add_nodes(apiserver)
    start(schedulers)
    for p in o.our_gang("llm", 2, 8, required_level="rack"):
        apiserver.store.create("pods", p)
    bound = wait_for(lambda: len(bound_pods(apiserver)) == 2 and bound_pods(apiserver), what="gang bound")
    victim = "llm-1"
    apiserver.store.fail_next("DELETE", rf"/pods/{victim}$", 403, times=2, message="forbidden for a moment")
    set_ready(apiserver, bound[victim], "Unknown")
    (ev,) = wait_for(lambda: events_for(apiserver, victim, "DeleteFailed"), what="DeleteFailed event")
    note = ev.get("note") or ev.get("message")
    assert note.startswith(f"toposched could not delete this pod (lost on failed node {bound[victim]}): ")
    assert "403" in note and note.endswith("it tries again until the pod is gone")
    wait_for(lambda: apiserver.store.get("pods", victim) is None, timeout_s=20, what="the lost member deleted at last")
    assert len(events_for(apiserver, victim, "DeleteFailed")) == 1
