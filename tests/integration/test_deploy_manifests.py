"""deploy/: the example workloads are placed as promised; manifests, RBAC and monitoring fit the code.

The examples' pods are created the way their controllers would (Job, training-operator,
ReplicaSet), on 8 nodes in 2 racks::

    rack r0: n0 n1 n2 n3      rack r1: n4 n5 n6 n7      (8 GPUs each)
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.metrics import SchedulerMetrics
from tests.integration import objects as o
from tests.integration.conftest import bound_pods, fast_config, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RACK = "topology.toposched.io/rack"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(path: Path, kind: str) -> dict[str, Any]:
    return next(d for d in docs(path) if d["kind"] == kind)


def pod_from_template(template: dict[str, Any], name: str, labels: dict[str, str] | None = None,
                      owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod as a controller stamps it out of ``template``."""
    t = copy.deepcopy(template)
    meta = {**t.get("metadata", {}), "name": name, "namespace": "default"}
    meta["labels"] = {**meta.get("labels", {}), **(labels or {})}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]}


@pytest.fixture
def cluster(apiserver, schedulers):
    from models.spec import LevelSpec

    for i in range(8):
        apiserver.store.create("nodes", o.node(f"n{i}", 8, labels={RACK: f"r{i // 4}"}))
    svc = schedulers.start(config=fast_config(levels=[LevelSpec(name="rack")]))
    wait_for(lambda: svc.is_leader, what="the lease")
    return apiserver


def racks(bound: dict[str, str]) -> set[int]:
    return {int(n[1:]) // 4 for n in bound.values()}


def test_coscheduling_example_is_placed_as_one_gang_in_one_rack(cluster):
    path = DEPLOY / "examples" / "coscheduling-gang.yaml"
    cluster.store.create("podgroups.scheduling.x-k8s.io", one(path, "PodGroup"))
    job = one(path, "Job")
    for i in range(job["spec"]["parallelism"]):
        cluster.store.create("pods", pod_from_template(job["spec"]["template"], f"allreduce-bench-{i}",
                                                       {"batch.kubernetes.io/job-completion-index": str(i)}))
    bound = wait_for(lambda: len(bound_pods(cluster)) == 4 and bound_pods(cluster), what="4 pods bound")
    assert len(racks(bound)) == 1


def test_pytorchjob_example_is_placed_whole(cluster):
    job = one(DEPLOY / "examples" / "pytorchjob-8-workers.yaml", "PyTorchJob")
    stored = cluster.store.create("pytorchjobs.kubeflow.org", job)
    spec = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "llm-pretrain",
             "uid": stored["metadata"]["uid"], "controller": True}
    for i in range(spec["replicas"]):
        labels = {"training.kubeflow.org/job-name": "llm-pretrain", "training.kubeflow.org/replica-type": "worker",
                  "training.kubeflow.org/replica-index": str(i),
                  "training.kubeflow.org/operator-name": "pytorchjob-controller"}
        cluster.store.create("pods", pod_from_template(spec["template"], f"llm-pretrain-worker-{i}", labels, owner))
    bound = wait_for(lambda: len(bound_pods(cluster)) == 8 and bound_pods(cluster), what="8 workers bound")
    assert len(set(bound.values())) == 8 and len(racks(bound)) == 2


def test_inference_example_replicas_are_placed_with_their_owner(cluster, schedulers):
    dep = one(DEPLOY / "examples" / "inference-deployment.yaml", "Deployment")
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-server-5d8f7", "uid": "rs-uid",
             "controller": True}
    for i in range(dep["spec"]["replicas"]):
        cluster.store.create("pods", pod_from_template(dep["spec"]["template"], f"chat-server-5d8f7-{i}",
                                                       {"pod-template-hash": "5d8f7"}, owner))
    wait_for(lambda: len(bound_pods(cluster)) == 4, what="4 replicas bound")
    ledger = schedulers.running[0].scheduler.cache.ledger
    assert {a.owner for a in ledger.allocations()} == {"default/Deployment/chat-server"}
    for p in cluster.store.list("pods"):
        assert len(p["metadata"]["annotations"]["toposched.io/gpus"].split(",")) == 2


# --- manifests -----------------------------------------------------------------------------------


def test_deployment_is_hardened_and_probed():
    dep = one(DEPLOY / "scheduler" / "deployment.yaml", "Deployment")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert dep["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert "--mode=scheduler" in c["args"]
    config = yaml.safe_load(one(DEPLOY / "scheduler" / "configmap.yaml", "ConfigMap")["data"]["config.yaml"])
    assert c["ports"][0]["containerPort"] == config["metrics_port"]
    role = one(DEPLOY / "scheduler" / "rbac.yaml", "Role")
    lease_names = [r.get("resourceNames") for r in role["rules"] if r.get("resourceNames")]
    assert lease_names == [[config["leader_election"]["lease_name"]]]
    assert role["metadata"]["namespace"] == config["leader_election"]["lease_namespace"]


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


@pytest.mark.parametrize("group,resource,verb", [
    ("", "nodes", "list"), ("", "nodes", "watch"), ("", "pods", "list"), ("", "pods", "watch"),
    ("", "pods/binding", "create"), ("", "pods/status", "patch"), ("", "pods", "patch"), ("", "pods", "delete"),
    ("events.k8s.io", "events", "create"), ("", "events", "create"),
    ("scheduling.x-k8s.io", "podgroups", "watch"), ("scheduling.volcano.sh", "podgroups", "watch"),
    ("scheduling.k8s.io", "podgroups", "watch"), ("kubeflow.org", "pytorchjobs", "watch"),
    ("jobset.x-k8s.io", "jobsets", "watch"), ("leaderworkerset.x-k8s.io", "leaderworkersets", "watch"),
    ("policy", "poddisruptionbudgets", "list"), ("policy", "poddisruptionbudgets", "watch"),
])
def test_cluster_role_allows_what_the_adapter_does(group, resource, verb):
    rules = one(DEPLOY / "scheduler" / "rbac.yaml", "ClusterRole")["rules"]
    assert _allowed(rules, group, resource, verb)


def test_cluster_role_grants_nothing_broad():
    rules = one(DEPLOY / "scheduler" / "rbac.yaml", "ClusterRole")["rules"]
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
        assert not {"secrets", "configmaps"} & set(r["resources"])


def test_every_watched_resource_is_in_the_cluster_role():
    from scheduler.adapters import kube

    rules = one(DEPLOY / "scheduler" / "rbac.yaml", "ClusterRole")["rules"]
    for res in (kube.NODES, kube.PODS, *kube.GROUP_RESOURCES, kube.PDBS):
        plural, _, group = res.name.partition(".")
        assert _allowed(rules, group, plural, "list") and _allowed(rules, group, plural, "watch"), res.name


def test_the_extender_may_read_every_resource_it_watches():
    """A 403 on a gang object's list is retried forever, and gangs sized by it never pass filter."""
    from scheduler.adapters import kube

    rules = next(d for d in yaml.safe_load_all((DEPLOY / "extender" / "rbac.yaml").read_text())
                 if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "toposched-extender")["rules"]
    for res in (kube.NODES, kube.PODS, *kube.GROUP_RESOURCES, kube.PDBS):
        plural, _, group = res.name.partition(".")
        assert _allowed(rules, group, plural, "list") and _allowed(rules, group, plural, "watch"), res.name


@pytest.mark.parametrize("bundle", ["scheduler", "extender", "agent"])
def test_every_bundle_declares_the_namespace_alike_and_its_pods_meet_restricted(bundle):
    """Applying one bundle must not relabel the namespace another set, and its pods must pass
    the restricted Pod Security profile the namespace enforces."""
    docs = [d for f in sorted((DEPLOY / bundle).glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    assert namespaces and all(n["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted"
                              for n in namespaces)
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", d["metadata"]["name"]
            for c in pod["containers"]:
                sc = c.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]


def _exported() -> set[str]:
    """Every series name the scheduler's registry can expose (labelled children included)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {m.name + sfx for m in SchedulerMetrics().registry.collect() for sfx in suffixes.get(m.type, ("",))}


def test_alerts_and_dashboard_use_metrics_the_scheduler_exports():
    exported = _exported()
    rules = one(DEPLOY / "monitoring" / "prometheus-rules.yaml", "PrometheusRule")
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:scheduler|toposched)_[a-z_]+)", e)}
    assert len(used) > 10, used
    assert not used - exported, sorted(used - exported)
