"""``toposched serve --mode scheduler`` against a real cluster (kind or any other): docs/e2e.md.

Needs ``TOPOSCHED_E2E_KUBECONFIG``; skipped otherwise. The scheduler runs in this process
(``SchedulerService``, the same object ``toposched serve`` starts) under a scheduler name
unique to the run, so it never touches anything else. Each test module run creates:

- a namespace ``toposched-e2e-<run>`` (pods, events, the Lease), deleted afterwards;
- four fake 8-GPU Nodes (no kubelet), two racks, labelled for the run, deleted afterwards.
  With no kubelet the node controller would mark them NotReady and taint them: a
  heartbeat thread renews their Ready condition and their Lease in ``kube-node-lease``,
  and the pods tolerate the ``node.kubernetes.io/not-ready`` / ``unreachable`` NoSchedule
  taints a new node may carry until the controller removes them.

Bound pods never start (no kubelet); the tests check bindings, annotations and events.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.reads import PodReads, now
from tests.polling import wait_for as poll

KUBECONFIG = os.environ.get("TOPOSCHED_E2E_KUBECONFIG")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not KUBECONFIG, reason="TOPOSCHED_E2E_KUBECONFIG is not set")]

RUN = uuid.uuid4().hex[:6]
NAMESPACE = f"toposched-e2e-{RUN}"
READS = PodReads(NAMESPACE)  # pods, alive, bound, events, force_delete of the test namespace
pods, alive, bound, events, force_delete = (READS.pods, READS.alive, READS.bound, READS.events,
                                           READS.force_delete)
SCHEDULER = f"toposched-e2e-{RUN}"
RUN_LABEL = "toposched.io/e2e-run"
RACK_LABEL = "e2e.toposched.io/rack"
NODES = [f"toposched-e2e-{RUN}-n{i}" for i in range(4)]  # n0 n1 in rack r0, n2 n3 in rack r1
MERGE = "application/merge-patch+json"
TOLERATIONS = [{"key": k, "operator": "Exists", "effect": "NoSchedule"}
               for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    return poll(predicate, timeout_s, what, interval_s=0.2)


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    from scheduler.adapters.kube import KubeApi, load_configuration

    client = KubeApi(load_configuration(KUBECONFIG), request_timeout_s=15.0)
    yield client
    client.close()


def _heartbeat(api: Any, stop: threading.Event) -> None:
    """Keep the fake nodes Ready: what a kubelet's status updates and node Lease renewals do."""
    from scheduler.leader import micro_time
    from scheduler.ports import KubeApiError

    while not stop.wait(5.0):
        for name in NODES:
            try:
                cond = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "toposched e2e",
                        "lastHeartbeatTime": now()}
                api.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": {"conditions": [cond]}},
                            content_type="application/strategic-merge-patch+json")
                api.request("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
                            body={"spec": {"renewTime": micro_time()}}, content_type=MERGE)
            except KubeApiError:
                continue


@pytest.fixture(scope="module")
def cluster(api) -> Iterator[Any]:
    from scheduler.leader import micro_time
    from scheduler.ports import KubeApiError

    api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": NAMESPACE, "labels": {RUN_LABEL: RUN}}})
    for i, name in enumerate(NODES):
        labels = {RUN_LABEL: RUN, "kubernetes.io/hostname": name, RACK_LABEL: f"r{i // 2}",
                  "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node",
                                                   "metadata": {"name": name, "labels": labels}})
        res = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
        status = {"capacity": res, "allocatable": res, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "toposched e2e fake node",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}
        api.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": status}, content_type=MERGE)
        try:
            api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body={
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "labels": {RUN_LABEL: RUN}},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_time()}})
        except KubeApiError:
            pass  # no kube-node-lease namespace: a cluster without a node controller
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(api, stop), daemon=True)
    beat.start()
    yield api
    stop.set()
    beat.join(10)
    for path in [f"/api/v1/namespaces/{NAMESPACE}",
                 *(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}" for n in NODES),
                 *(f"/api/v1/nodes/{n}" for n in NODES)]:
        try:
            api.request("DELETE", path)
        except KubeApiError:
            pass


def config(**overrides: Any) -> Any:
    from models.spec import LevelSpec
    from scheduler.engine import GangConfig, PlacementConfig
    from scheduler.serve_config import BackoffConfig, LeaderElectionConfig, ServeConfig

    base: dict[str, Any] = {
        "scheduler_name": SCHEDULER, "levels": [LevelSpec(name="rack", label=RACK_LABEL)],
        "leader_election": LeaderElectionConfig(lease_namespace=NAMESPACE, lease_name=SCHEDULER,
                                                lease_duration_s=3, renew_deadline_s=2, retry_period_s=0.5),
        "backoff": BackoffConfig(initial_s=0.2, max_s=1.0), "placement": PlacementConfig(gang=GangConfig(time_limit_s=0.5)),
        "watch_timeout_s": 60, "metrics_port": 0, "bind_workers": 4,
    }
    base.update(overrides)
    return ServeConfig(**base)


class Running:
    """Schedulers started by a test; all stopped at its end."""

    def __init__(self) -> None:
        self.services: list[Any] = []
        self.bound_by: dict[str, list[str]] = {}

    def start(self, name: str, binder_wrapper: Callable[[Any], Any] | None = None) -> Any:
        from scheduler.adapters.kube import load_configuration
        from scheduler.serve import SchedulerService, ServiceOptions

        log = self.bound_by.setdefault(name, [])
        svc = SchedulerService(config(), load_configuration(KUBECONFIG),
                               ServiceOptions(identity=f"{name}_{RUN}", serve_http=False,
                                              on_bound=lambda key, node: log.append(key)))
        if binder_wrapper is not None:
            svc.scheduler.binder = binder_wrapper(svc.scheduler.binder)
        svc.start()
        assert svc.wait_ready(60), svc.ready()[1]
        self.services.append(svc)
        return svc

    def stop(self, svc: Any) -> None:
        svc.stop()
        self.services.remove(svc)


@pytest.fixture
def schedulers(cluster) -> Iterator[Running]:
    r = Running()
    yield r
    for svc in list(r.services):
        r.stop(svc)
    # each test starts from an empty namespace
    for name in pods(cluster):
        force_delete(cluster, name)
    wait_for(lambda: not cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"], what="cleanup")


def pod(name: str, gpus: int, annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    res = {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {RUN_LABEL: RUN, **(labels or {})},
                         "annotations": annotations or {}},
            "spec": {"schedulerName": SCHEDULER, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9",
                                     "resources": {"requests": res, "limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def gang(name: str, count: int, gpus: int, **annotations: str) -> list[dict[str, Any]]:
    ann = {"toposched.io/gang": name, "toposched.io/gang-size": str(count),
           **{f"toposched.io/{k.replace('_', '-')}": v for k, v in annotations.items()}}
    return [pod(f"{name}-{i}", gpus, ann) for i in range(count)]


def create(api: Any, *pods: dict[str, Any]) -> None:
    for p in pods:
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=p)


def rack(node: str) -> int:
    return NODES.index(node) // 2


def leader(schedulers: Running, name: str = "a") -> Any:
    svc = schedulers.start(name)
    wait_for(lambda: svc.is_leader, what="the lease")
    return svc


# --- scenarios ------------------------------------------------------------------------------------


def test_gang_is_bound_together_with_annotations_and_events(cluster, schedulers):
    leader(schedulers)
    create(cluster, *gang("llm", 2, 8, required_level="rack"))
    b = wait_for(lambda: len(bound(cluster)) == 2 and bound(cluster), what="the gang bound")
    assert len({rack(n) for n in b.values()}) == 1
    for name, node in b.items():
        ann = pods(cluster)[name]["metadata"]["annotations"]
        assert ann["toposched.io/gpus"] == "0,1,2,3,4,5,6,7"
        assert json.loads(ann["toposched.io/assignment"])["node"] == node
        wait_for(lambda name=name: events(cluster, name, "Scheduled"), what="Scheduled event")


def test_gang_that_cannot_fit_stays_pending_with_one_event(cluster, schedulers):
    leader(schedulers)
    create(cluster, *gang("big", 5, 8))
    for i in range(5):
        wait_for(lambda i=i: events(cluster, f"big-{i}", "FailedScheduling"), what="FailedScheduling")
    time.sleep(3)  # several retries later
    assert not bound(cluster)
    for i in range(5):
        notes = events(cluster, f"big-{i}", "FailedScheduling")
        assert len(notes) == 1 and "gang" in notes[0]
        cond = next(c for c in pods(cluster)[f"big-{i}"]["status"]["conditions"] if c["type"] == "PodScheduled")
        assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")


class FailOnce:
    """Wraps the Kubernetes binder: the first bind of one pod fails as a 500 would."""

    def __init__(self, inner: Any, pod_name: str) -> None:
        self.inner, self.pod_name, self.failed = inner, pod_name, False

    def bind(self, ref: Any, node: str, annotations: Any) -> None:
        from scheduler.ports import KubeApiError

        if ref.name == self.pod_name and not self.failed:
            self.failed = True
            raise KubeApiError(500, "InternalError", "injected by the e2e test", operation=f"bind {ref.key}")
        self.inner.bind(ref, node, annotations)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_member_bind_failure_rolls_the_gang_back(cluster, schedulers):
    svc = schedulers.start("a", binder_wrapper=lambda b: FailOnce(b, "g-2"))
    wait_for(lambda: svc.is_leader, what="the lease")
    create(cluster, *gang("g", 3, 8))
    wait_for(lambda: "g-0" not in alive(cluster) and "g-1" not in alive(cluster), what="bound members deleted")
    assert "g-2" in alive(cluster) and not bound(cluster)
    for name in ("g-0", "g-1"):
        assert wait_for(lambda name=name: events(cluster, name, "GangRollback"), what="rollback event")
        force_delete(cluster, name)
    wait_for(lambda: "g-0" not in pods(cluster) and "g-1" not in pods(cluster), what="deleted members gone")
    create(cluster, *gang("g", 3, 8)[:2])  # the controller's re-created members
    wait_for(lambda: len(bound(cluster)) == 3, what="the gang bound whole")


def test_only_the_leader_binds_and_the_standby_takes_over(cluster, schedulers):
    a = leader(schedulers, "a")
    b = schedulers.start("b")
    create(cluster, pod("p0", 1), pod("p1", 1))
    wait_for(lambda: len(schedulers.bound_by["a"]) == 2, what="a binds")
    assert schedulers.bound_by["b"] == [] and not b.is_leader
    schedulers.stop(a)
    wait_for(lambda: b.is_leader, what="b takes over")
    create(cluster, pod("q0", 1))
    wait_for(lambda: schedulers.bound_by["b"] == [f"{NAMESPACE}/q0"], what="b binds")


def test_dropped_watch_is_followed_by_a_relist_and_no_pod_is_missed(cluster, schedulers):
    svc = leader(schedulers)
    create(cluster, pod("before", 1))
    wait_for(lambda: "before" in bound(cluster), what="before bound")
    pods_reflector = svc.reflectors[1]
    wait_for(lambda: pods_reflector._resp is not None, what="pod watch open")
    pods_reflector._resp.shutdown()  # the connection breaks mid-stream
    create(cluster, pod("after", 1))
    wait_for(lambda: "after" in bound(cluster), what="after bound")
    relists = [s for m in svc.metrics.relists.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["resource"] == "pods" and s.labels["cause"] == "dropped"]
    assert relists and relists[0].value >= 1


def test_restart_rebuilds_the_ledger_and_hands_out_no_gpu_twice(cluster, schedulers):
    a = leader(schedulers)
    create(cluster, *(pod(f"p{i}", 4) for i in range(5)))
    wait_for(lambda: len(bound(cluster)) == 5, what="first pods bound")
    schedulers.stop(a)
    leader(schedulers, "b")
    create(cluster, *(pod(f"q{i}", 4) for i in range(4)))  # 32 GPUs, 20 taken: 3 of 4 fit
    wait_for(lambda: len(bound(cluster)) == 8, what="what fits is bound")
    used: dict[str, list[int]] = {}
    for p in pods(cluster).values():
        if p["spec"].get("nodeName"):
            used.setdefault(p["spec"]["nodeName"], []).extend(
                json.loads(p["metadata"]["annotations"]["toposched.io/assignment"])["gpus"])
    for node, gpus in used.items():
        assert len(gpus) == len(set(gpus)), f"GPU handed out twice on {node}"
