"""Node failure against a real cluster (kind or any other): docs/e2e.md and docs/failures.md.

Needs ``TOPOSCHED_E2E_KUBECONFIG``; skipped otherwise. Like the scheduler e2e suite it
runs the scheduler in this process under a scheduler name unique to the run and creates
its own namespace and six fake 8-GPU Nodes (no kubelet) in two racks; a heartbeat thread
keeps them Ready. To fail a node the test stops its heartbeat and patches its Ready
condition to ``Unknown`` (what the node lifecycle controller writes when a kubelet stops
reporting). toposched must delete the gang member on it (with events), and repair the
gang next to its survivor when the test, playing the job controller, recreates the pod::

    rack r0: n0 n1 n2      rack r1: n3 n4 n5
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.reads import PodReads, now
from tests.polling import wait_for as poll

KUBECONFIG = os.environ.get("TOPOSCHED_E2E_KUBECONFIG")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not KUBECONFIG, reason="TOPOSCHED_E2E_KUBECONFIG is not set")]

RUN = uuid.uuid4().hex[:6]
NAMESPACE = f"toposched-fail-{RUN}"
READS = PodReads(NAMESPACE)  # pods, alive, bound, events, force_delete of the test namespace
pods, alive, bound, events, force_delete = (READS.pods, READS.alive, READS.bound, READS.events,
                                           READS.force_delete)
SCHEDULER = f"toposched-fail-{RUN}"
RUN_LABEL = "toposched.io/e2e-run"
RACK_LABEL = "e2e.toposched.io/rack"
NODES = [f"toposched-fail-{RUN}-n{i}" for i in range(6)]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
TOLERATIONS = [{"key": k, "operator": "Exists", "effect": "NoSchedule"}
               for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
GRACE_S = 2.0


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    return poll(predicate, timeout_s, what, interval_s=0.2)


def set_ready(api: Any, name: str, status: str) -> None:
    cond = {"type": "Ready", "status": status, "reason": "KubeletReady" if status == "True" else "NodeStatusUnknown",
            "message": "toposched failure e2e", "lastHeartbeatTime": now(), "lastTransitionTime": now()}
    api.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": {"conditions": [cond]}},
                content_type=STRATEGIC)


class Fleet:
    """The fake nodes and their heartbeat; ``down`` nodes get none."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.down: set[str] = set()
        self.stop = threading.Event()

    def beat(self) -> None:
        from scheduler.ports import KubeApiError

        while not self.stop.wait(3.0):
            for name in NODES:
                if name in self.down:
                    continue
                try:
                    set_ready(self.api, name, "True")
                except KubeApiError:
                    continue


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    from scheduler.adapters.kube import KubeApi, load_configuration
    from scheduler.ports import KubeApiError

    api = KubeApi(load_configuration(KUBECONFIG), request_timeout_s=15.0)
    api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": NAMESPACE, "labels": {RUN_LABEL: RUN}}})
    for i, name in enumerate(NODES):
        labels = {RUN_LABEL: RUN, "kubernetes.io/hostname": name, RACK_LABEL: f"r{i // 3}",
                  "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node",
                                                   "metadata": {"name": name, "labels": labels}})
        res = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
        api.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": {"capacity": res, "allocatable": res}},
                    content_type=MERGE)
        set_ready(api, name, "True")
    f = Fleet(api)
    t = threading.Thread(target=f.beat, daemon=True)
    t.start()
    yield f
    f.stop.set()
    t.join(10)
    for path in [f"/api/v1/namespaces/{NAMESPACE}", *(f"/api/v1/nodes/{n}" for n in NODES)]:
        try:
            api.request("DELETE", path)
        except KubeApiError:
            pass
    api.close()


@pytest.fixture
def scheduler(fleet) -> Iterator[Any]:
    from models.spec import LevelSpec
    from scheduler.adapters.kube import load_configuration
    from scheduler.engine import GangConfig, PlacementConfig
    from scheduler.failures import NodeFailureConfig
    from scheduler.serve import SchedulerService, ServiceOptions
    from scheduler.serve_config import BackoffConfig, LeaderElectionConfig, ServeConfig

    cfg = ServeConfig(scheduler_name=SCHEDULER, levels=[LevelSpec(name="rack", label=RACK_LABEL)],
                      leader_election=LeaderElectionConfig(lease_namespace=NAMESPACE, lease_name=SCHEDULER,
                                                           lease_duration_s=3, renew_deadline_s=2, retry_period_s=0.5),
                      backoff=BackoffConfig(initial_s=0.2, max_s=1.0),
                      placement=PlacementConfig(gang=GangConfig(time_limit_s=0.5)),
                      node_failures=NodeFailureConfig(grace_s=GRACE_S),
                      watch_timeout_s=60, metrics_port=0, bind_workers=4)
    svc = SchedulerService(cfg, load_configuration(KUBECONFIG), ServiceOptions(identity=f"fail_{RUN}", serve_http=False))
    svc.start()
    assert svc.wait_ready(60), svc.ready()[1]
    wait_for(lambda: svc.is_leader, what="the lease")
    yield svc
    svc.stop()


def member(name: str, group: str, size: int) -> dict[str, Any]:
    res = {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "8"}
    ann = {"toposched.io/gang": group, "toposched.io/gang-size": str(size), "toposched.io/required-level": "rack"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {RUN_LABEL: RUN}, "annotations": ann},
            "spec": {"schedulerName": SCHEDULER, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9",
                                     "resources": {"requests": res, "limits": {"nvidia.com/gpu": "8"}}}]}}


def rack(node: str) -> int:
    return NODES.index(node) // 3


def test_node_not_ready_gang_is_repaired_next_to_its_survivor(fleet, scheduler):
    api = fleet.api
    for i in range(2):
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=member(f"llm-{i}", "llm", 2))
    first = wait_for(lambda: len(bound(api)) == 2 and bound(api), what="the gang bound")
    dead = first["llm-1"]

    fleet.down.add(dead)
    set_ready(api, dead, "Unknown")
    wait_for(lambda: "llm-1" not in alive(api), what="the lost member deleted")
    note = wait_for(lambda: events(api, "llm-1", "NodeFailed"), what="NodeFailed event on the pod")[0]
    assert note.startswith(f"node {dead} failed (Ready=Unknown for ")
    wait_for(lambda: events(api, dead, "NodeFailed", "default"), what="NodeFailed event on the node")
    force_delete(api, "llm-1")

    api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=member("llm-1b", "llm", 2))
    now = wait_for(lambda: "llm-1b" in bound(api) and bound(api), what="the replacement bound")
    assert now["llm-0"] == first["llm-0"]
    assert now["llm-1b"] != dead and rack(now["llm-1b"]) == rack(first["llm-0"])
    assert wait_for(lambda: events(api, "llm-1b", "GangRepaired"), what="GangRepaired event")

    fleet.down.discard(dead)
    set_ready(api, dead, "True")
    wait_for(lambda: events(api, dead, "NodeRecovered", "default"), what="NodeRecovered event on the node")
    assert bound(api)["llm-1b"] == now["llm-1b"]  # nothing moves back
