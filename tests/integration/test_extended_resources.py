"""The live scheduler places pods by their extended resources (``rdma/ib``) against the test API server.

Three nodes of 8 GPUs in one rack; only ``ib`` offers ``rdma/ib`` (4 of them).
"""

from __future__ import annotations

from tests.integration import objects as o
from tests.integration.conftest import bound_pods, events_for, wait_for

IB = "rdma/ib"


def ib_pod(name: str, amount: int):
    pod = o.pod(name, 1)
    container = pod["spec"]["containers"][0]["resources"]
    container["requests"][IB] = str(amount)
    container["limits"][IB] = str(amount)
    return pod


def test_pod_asking_for_rdma_goes_to_the_node_that_has_it_and_the_next_one_waits(apiserver, schedulers):
    ib = o.node("ib", rack="r0")
    ib["status"]["allocatable"] = {**ib["status"]["allocatable"], IB: "4"}
    for node in (o.node("plain-0", rack="r0"), ib, o.node("plain-1", rack="r0")):
        apiserver.store.create("nodes", node)
    svc = schedulers.start()
    wait_for(lambda: svc.is_leader, what="the lease")

    apiserver.store.create("pods", ib_pod("first", 3))
    wait_for(lambda: bound_pods(apiserver).get("first"), what="first bound")
    assert bound_pods(apiserver)["first"] == "ib"

    apiserver.store.create("pods", ib_pod("second", 2))
    events = wait_for(lambda: events_for(apiserver, "second", "FailedScheduling"), what="FailedScheduling")
    assert "Insufficient rdma/ib" in events[0]["message"], events[0]["message"]
    assert "3 Insufficient rdma/ib" in events[0]["message"]
    assert "second" not in bound_pods(apiserver)

    # a pod without rdma is not held up by it
    apiserver.store.create("pods", o.pod("plain", 8))
    wait_for(lambda: bound_pods(apiserver).get("plain"), what="plain bound")
    svc.scheduler.cache.ledger.check_invariants()
