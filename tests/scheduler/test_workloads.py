"""Kubernetes workloads -> requests: resources, gangs from every ecosystem source, assignment annotations.

Levels of the test cluster (widest first), as Kueue's docs spell the labels::

    block  cloud.provider.com/topology-block
    rack   cloud.provider.com/topology-rack
    host   kubernetes.io/hostname  (one node)
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from models.placement import Placement
from models.requests import Toleration
from models.spec import LevelSpec
from scheduler.workloads import (
    GangPolicy,
    GroupRef,
    GroupSource,
    MissingGroupObject,
    ObjectRef,
    UnsupportedConstraint,
    WorkloadError,
    assignment_annotations,
    build_gang_request,
    common,
    gang_policy,
    group_of,
    is_ours,
    is_terminal,
    owner_of,
    parse_assignment,
    pod_key,
    pod_request,
    pod_resources,
    spread_level_of,
)

ROOT = Path(__file__).resolve().parents[2]
BLOCK, RACK = "cloud.provider.com/topology-block", "cloud.provider.com/topology-rack"
LEVELS = [LevelSpec(name="block", label=BLOCK), LevelSpec(name="rack", label=RACK)]


# --- builders ----------------------------------------------------------------------------------


def container(name="main", *, cpu="1", memory="1Gi", gpus=None, requests=None, limits=None, **extra):
    """A container; GPUs go in limits, as users write them."""
    req = {"cpu": cpu, "memory": memory} if requests is None else requests
    lim = dict(limits or {})
    if gpus is not None:
        lim["nvidia.com/gpu"] = str(gpus)
    res = {"requests": req} if req else {}
    if lim:
        res["limits"] = lim
    return {"name": name, "image": "nvcr.io/nvidia/pytorch:24.08-py3", "resources": res, **extra}


def make_pod(name="p", *, ns="ml", labels=None, annotations=None, containers=None, owner=None, **spec):
    meta = {"name": name, "namespace": ns, "uid": f"uid-{name}"}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner:
        api, kind, oname = owner
        meta["ownerReferences"] = [{"apiVersion": api, "kind": kind, "name": oname, "uid": "u", "controller": True}]
    body = {"schedulerName": "toposched", "containers": containers or [container()], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body, "status": {"phase": "Pending"}}


def error_text(exc_info) -> str:
    return str(exc_info.value)


# --- which pods are ours -----------------------------------------------------------------------


@pytest.mark.parametrize(("change", "ours"), [
    ({}, True),
    ({"spec": {"schedulerName": "default-scheduler"}}, False),
    ({"spec": {"schedulerName": None}}, False),
    ({"spec": {"nodeName": "gpu-1"}}, False),
    ({"metadata": {"deletionTimestamp": "2026-11-27T14:17:22Z"}}, False),
    ({"spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/topology"}]}}, False),
    ({"spec": {"schedulingGates": []}}, True),
    ({"status": {"phase": "Failed"}}, False),
], ids=["ours", "other-scheduler", "no-scheduler-name", "bound", "deleting", "gated", "empty-gates", "finished"])
def test_is_ours(change, ours):
    pod = make_pod()
    for part, fields in change.items():
        pod[part].update(fields)
    assert is_ours(pod, "toposched") is ours


def test_no_scheduler_name_belongs_to_the_default_scheduler():
    pod = make_pod()
    del pod["spec"]["schedulerName"]
    assert is_ours(pod, "default-scheduler") and not is_ours(pod, "toposched")


@pytest.mark.parametrize(("phase", "terminal"), [("Pending", False), ("Running", False), ("Succeeded", True),
                                                 ("Failed", True)])
def test_is_terminal(phase, terminal):
    assert is_terminal({"status": {"phase": phase}}) is terminal


def test_pod_key_defaults_the_namespace():
    assert pod_key({"metadata": {"name": "x"}}) == "default/x"
    assert pod_key(make_pod("w-3")) == "ml/w-3"


# --- effective resources -----------------------------------------------------------------------

SIDECAR = {"restartPolicy": "Always"}

RESOURCE_CASES = [
    ("plain", make_pod(containers=[container(cpu="500m", memory="1Gi")]), {"cpu_milli": 500, "memory_mib": 1024}),
    ("two-containers-sum", make_pod(containers=[container(cpu="1", memory="1Gi"), container("b", cpu="250m", memory="512Mi")]),
     {"cpu_milli": 1250, "memory_mib": 1536}),
    ("limits-only-gpu-and-cpu", make_pod(containers=[container(requests={}, limits={"cpu": "2", "memory": "4Gi"}, gpus=8)]),
     {"cpu_milli": 2000, "memory_mib": 4096, "gpus": 8}),
    ("gpu-in-requests-and-limits", make_pod(containers=[container(requests={"cpu": "4", "nvidia.com/gpu": "2"}, gpus=2)]),
     {"cpu_milli": 4000, "gpus": 2}),
    ("init-container-larger", make_pod(containers=[container(cpu="1", memory="1Gi")],
                                       initContainers=[container("init", cpu="4", memory="512Mi")]),
     {"cpu_milli": 4000, "memory_mib": 1024}),
    ("sidecar-adds-to-apps", make_pod(containers=[container(cpu="1", memory="1Gi")],
                                      initContainers=[container("proxy", cpu="500m", memory="256Mi", **SIDECAR)]),
     {"cpu_milli": 1500, "memory_mib": 1280}),
    ("init-after-sidecar-counts-it", make_pod(containers=[container(cpu="1", memory="1Gi")],
                                              initContainers=[container("proxy", cpu="500m", memory="256Mi", **SIDECAR),
                                                              container("fetch", cpu="2", memory="256Mi")]),
     {"cpu_milli": 2500, "memory_mib": 1280}),
    ("init-before-sidecar-does-not", make_pod(containers=[container(cpu="1", memory="1Gi")],
                                              initContainers=[container("fetch", cpu="2", memory="256Mi"),
                                                              container("proxy", cpu="500m", memory="256Mi", **SIDECAR)]),
     {"cpu_milli": 2000, "memory_mib": 1280}),
    ("overhead", make_pod(containers=[container(cpu="1", memory="1Gi")], overhead={"cpu": "250m", "memory": "120Mi"}),
     {"cpu_milli": 1250, "memory_mib": 1144}),
    ("pod-level-resources", make_pod(containers=[container(cpu="1", memory="1Gi")],
                                     resources={"requests": {"cpu": "8"}}, overhead={"cpu": "100m"}),
     {"cpu_milli": 8100, "memory_mib": 1024}),
    ("decimal-memory-rounds-up", make_pod(containers=[container(cpu="0.1", memory="1G")]),
     {"cpu_milli": 100, "memory_mib": 954}),
    ("ephemeral-storage-ignored", make_pod(containers=[container(requests={"cpu": "1", "ephemeral-storage": "10Gi"})]),
     {"cpu_milli": 1000}),
    ("shared-gpu-without-gpu-request", make_pod(annotations={"toposched.io/gpu-milli": "250"}),
     {"cpu_milli": 1000, "memory_mib": 1024, "gpus": 1, "gpu_milli": 250}),
    ("shared-gpu-with-one-gpu", make_pod(annotations={"toposched.io/gpu-milli": "500"}, containers=[container(gpus=1)]),
     {"cpu_milli": 1000, "memory_mib": 1024, "gpus": 1, "gpu_milli": 500}),
    ("gpu-milli-1000-is-whole", make_pod(annotations={"toposched.io/gpu-milli": "1000"}, containers=[container(gpus=2)]),
     {"cpu_milli": 1000, "memory_mib": 1024, "gpus": 2}),
    ("extended-resources", make_pod(containers=[container(gpus=8, limits={"rdma/rdma_shared_device_a": "1",
                                                                          "nvidia.com/hostdev": "8"})]),
     {"cpu_milli": 1000, "memory_mib": 1024, "gpus": 8,
      "extended": {"nvidia.com/hostdev": 8, "rdma/rdma_shared_device_a": 1}}),
    ("extended-summed-and-init-peak", make_pod(
        containers=[container(limits={"vpc.amazonaws.com/efa": "16"}), container("b", limits={"vpc.amazonaws.com/efa": "16"})],
        initContainers=[container("init", requests={"vpc.amazonaws.com/efa": "4"}, limits={"vpc.amazonaws.com/efa": "4"})]),
     {"cpu_milli": 2000, "memory_mib": 2048, "extended": {"vpc.amazonaws.com/efa": 32}}),
    ("hugepages-in-bytes", make_pod(containers=[container(requests={"cpu": "1", "hugepages-2Mi": "1Gi"},
                                                          limits={"hugepages-2Mi": "1Gi"})]),
     {"cpu_milli": 1000, "extended": {"hugepages-2Mi": 1 << 30}}),
    ("extended-zero-is-nothing", make_pod(containers=[container(limits={"rdma/ib": "0"})]),
     {"cpu_milli": 1000, "memory_mib": 1024}),
    ("pod-level-resources-leave-extended-alone", make_pod(containers=[container(limits={"rdma/ib": "2"})],
                                                          resources={"requests": {"cpu": "8"}}),
     {"cpu_milli": 8000, "memory_mib": 1024, "extended": {"rdma/ib": 2}}),
]


@pytest.mark.parametrize(("pod", "want"), [c[1:] for c in RESOURCE_CASES], ids=[c[0] for c in RESOURCE_CASES])
def test_effective_resources(pod, want):
    res = pod_resources(pod)
    got = {k: getattr(res, k) for k in ("cpu_milli", "memory_mib", "gpus", "gpu_milli", "extended")}
    assert got == {"cpu_milli": 0, "memory_mib": 0, "gpus": 0, "gpu_milli": 1000, "extended": {}, **want}


def test_constraints_selector_models_tolerations_priority():
    pod = make_pod(
        annotations={"toposched.io/gpu-models": "NVIDIA-H100-80GB-HBM3, NVIDIA-H200"},
        containers=[container(gpus=8)],
        nodeSelector={"pool": "training", "nvidia.com/gpu.product": "nvidia-h200"},
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": RACK, "operator": "In", "values": ["r7"]},
                                  {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H200", "B200"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}},
        topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": RACK, "whenUnsatisfiable": "ScheduleAnyway"}],
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                     {"key": "dedicated", "value": "ml", "tolerationSeconds": 60, "effect": "NoExecute"}],
        priority=1000,
    )
    res = pod_resources(pod)
    assert res.gpu_models == ("NVIDIA-H200",)
    assert res.node_selector == {"pool": "training", RACK: "r7"}
    assert res.tolerations == (Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
                               Toleration(key="dedicated", value="ml", effect="NoExecute"))
    assert res.priority == 1000


def _affinity(*exprs, terms=None):
    terms = terms if terms is not None else [{"matchExpressions": list(exprs)}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


AFF = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
BAD_PODS = [
    ("bad-quantity", make_pod("p", containers=[container(cpu="lots")]), WorkloadError,
     'pod ml/p: spec.containers[main].resources.requests[cpu]: "lots" is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)'),
    ("negative-cpu", make_pod("p", containers=[container(cpu="-1")]), WorkloadError,
     'pod ml/p: spec.containers[main].resources.requests[cpu]: "-1" is negative'),
    ("fractional-gpu", make_pod("p", containers=[container(gpus="1.5")]), WorkloadError,
     'pod ml/p: spec.containers[main].resources.limits[nvidia.com/gpu]: "1.5" is not a whole number of GPUs'),
    ("gpu-request-not-limit", make_pod("p", containers=[container(requests={"nvidia.com/gpu": "2"}, gpus=4)]), WorkloadError,
     "pod ml/p: spec.containers[main].resources: nvidia.com/gpu requests (2) and limits (4) must be equal"),
    ("shared-gpu-with-2-gpus", make_pod("p", annotations={"toposched.io/gpu-milli": "250"}, containers=[container(gpus=2)]),
     WorkloadError, "pod ml/p: annotation toposched.io/gpu-milli: a shared GPU (250 milli-GPU) is one GPU, but the pod "
                    "requests 2 nvidia.com/gpu; request 1 (or none) with a share"),
    ("gpu-milli-zero", make_pod("p", annotations={"toposched.io/gpu-milli": "0"}), WorkloadError,
     "pod ml/p: annotation toposched.io/gpu-milli: 0 is too small; it must be at least 1"),
    ("gpu-milli-over", make_pod("p", annotations={"toposched.io/gpu-milli": "1500"}), WorkloadError,
     "pod ml/p: annotation toposched.io/gpu-milli: 1500 is over 1000 (one whole GPU); use nvidia.com/gpu for more"),
    ("gpu-milli-not-int", make_pod("p", annotations={"toposched.io/gpu-milli": "half"}), WorkloadError,
     'pod ml/p: annotation toposched.io/gpu-milli: "half" is not an integer'),
    ("too-many-gpus", make_pod("p", containers=[container(gpus=65)]), WorkloadError,
     "pod ml/p: gpus: Input should be less than or equal to 64"),
    ("required-pod-affinity", make_pod("p", affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}),
     UnsupportedConstraint, "pod ml/p: spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution: "
                            "toposched does not implement required podAffinity; use a gang with "
                            "toposched.io/required-level, or leave the pod to the default scheduler"),
    ("required-anti-affinity", make_pod("p", affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname"}]}}), UnsupportedConstraint,
     "pod ml/p: spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution: toposched does not "
     "implement required podAntiAffinity; use a gang with toposched.io/required-level, or leave the pod to the "
     "default scheduler"),
    ("hard-spread", make_pod("p", topologySpreadConstraints=[
        {"maxSkew": 1, "topologyKey": RACK, "whenUnsatisfiable": "DoNotSchedule"}]), UnsupportedConstraint,
     "pod ml/p: spec.topologySpreadConstraints[0]: hard topology spread (DoNotSchedule) is not supported; use "
     "ScheduleAnyway or toposched.io/spread-level"),
    ("affinity-notin", make_pod("p", affinity=_affinity({"key": RACK, "operator": "NotIn", "values": ["r1"]})),
     UnsupportedConstraint, f'pod ml/p: {AFF}.nodeSelectorTerms[0].matchExpressions[0]: {RACK} NotIn ["r1"] is not '
                            "supported; only In with one value (or In with GPU models on nvidia.com/gpu.product)"),
    ("affinity-two-values", make_pod("p", affinity=_affinity({"key": RACK, "operator": "In", "values": ["r1", "r2"]})),
     UnsupportedConstraint, f'pod ml/p: {AFF}.nodeSelectorTerms[0].matchExpressions[0]: {RACK} In ["r1", "r2"] is '
                            "not supported; only In with one value (or In with GPU models on nvidia.com/gpu.product)"),
    ("affinity-two-terms", make_pod("p", affinity=_affinity(terms=[{"matchExpressions": []}, {"matchExpressions": []}])),
     UnsupportedConstraint, f"pod ml/p: {AFF}.nodeSelectorTerms: 2 alternative terms (ORed) are not supported; use one term"),
    ("affinity-match-fields", make_pod("p", affinity=_affinity(terms=[{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}])), UnsupportedConstraint,
     f"pod ml/p: {AFF}.nodeSelectorTerms[0].matchFields: matchFields is not supported; use nodeSelector"),
    ("affinity-vs-selector", make_pod("p", nodeSelector={RACK: "r1"},
                                      affinity=_affinity({"key": RACK, "operator": "In", "values": ["r2"]})),
     WorkloadError, f"pod ml/p: {AFF}.nodeSelectorTerms[0].matchExpressions[0]: {RACK} In [r2] conflicts with "
                    f"nodeSelector {RACK}=r1; no node can match both"),
    ("gpu-model-conflict", make_pod("p", annotations={"toposched.io/gpu-models": "Tesla-T4"},
                                    nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H200"}), WorkloadError,
     "pod ml/p: spec.nodeSelector[nvidia.com/gpu.product]: allows GPU models NVIDIA-H200, none of which is in "
     "Tesla-T4 allowed elsewhere in the pod"),
    ("host-port", make_pod("p", containers=[container(ports=[{"containerPort": 29500, "hostPort": 29500}])]),
     UnsupportedConstraint, "pod ml/p: spec.containers[main].ports[0].hostPort: host ports are not supported "
                            "(toposched does not track them)"),
    ("dra-claims", make_pod("p", resourceClaims=[{"name": "gpu", "resourceClaimName": "c"}]), UnsupportedConstraint,
     "pod ml/p: spec.resourceClaims: dynamic resource allocation (DRA) claims are not supported yet"),
    ("extended-fraction", make_pod("p", containers=[container(limits={"rdma/ib": "500m"})]), WorkloadError,
     'pod ml/p: spec.containers[main].resources.limits[rdma/ib]: "500m" is not a whole number of rdma/ib '
     "(an extended resource)"),
    ("extended-requests-differ-from-limits", make_pod("p", containers=[container(
        requests={"cpu": "1", "rdma/ib": "1"}, limits={"rdma/ib": "2"})]), WorkloadError,
     "pod ml/p: spec.containers[main].resources: rdma/ib requests (1) and limits (2) must be equal"),
    ("extended-bad-name", make_pod("p", containers=[container(limits={"rdma/ib/x": "1"})]), WorkloadError,
     "pod ml/p: spec.containers[main].resources.limits[rdma/ib/x]: 'rdma/ib/x' is not a Kubernetes resource name "
     "(e.g. rdma/ib, vpc.amazonaws.com/efa, hugepages-2Mi)"),
    ("toleration-gt", make_pod("p", tolerations=[{"key": "k", "operator": "Gt", "value": "3"}]), UnsupportedConstraint,
     'pod ml/p: spec.tolerations[0].operator: operator "Gt" is not supported (Equal or Exists)'),
    ("toleration-bad-effect", make_pod("p", tolerations=[{"key": "k", "effect": "NoWay"}]), WorkloadError,
     'pod ml/p: spec.tolerations[0]: effect "NoWay" is not NoSchedule, PreferNoSchedule or NoExecute'),
    # lists that are not lists (found by the extender fuzz test: a 500 before, now the pod's error)
    ("tolerations-not-a-list", make_pod("p", tolerations=True), WorkloadError,
     "pod ml/p: spec.tolerations: must be a list, not bool"),
    ("toleration-value-not-a-string", make_pod("p", tolerations=[{"key": "k", "value": 3}]), WorkloadError,
     "pod ml/p: spec.tolerations[0].value: must be a string, not int"),
    ("ports-not-a-list", make_pod("p", containers=[{**container(), "ports": 8080}]), WorkloadError,
     "pod ml/p: spec.containers[main].ports: must be a list, not int"),
    ("spread-not-a-list", make_pod("p", topologySpreadConstraints={"maxSkew": 1}), WorkloadError,
     "pod ml/p: spec.topologySpreadConstraints: must be a list, not dict"),
    ("affinity-terms-not-a-list", make_pod("p", affinity=_affinity(terms=7)), WorkloadError,
     f"pod ml/p: {AFF}.nodeSelectorTerms: must be a list, not int"),
    ("affinity-expressions-not-a-list", make_pod("p", affinity=_affinity(terms=[{"matchExpressions": "x"}])),
     WorkloadError, f"pod ml/p: {AFF}.nodeSelectorTerms[0].matchExpressions: must be a list, not str"),
]


@pytest.mark.parametrize(("pod", "exc", "message"), [c[1:] for c in BAD_PODS], ids=[c[0] for c in BAD_PODS])
def test_bad_pods_name_the_field_and_problem(pod, exc, message):
    with pytest.raises(exc) as info:
        pod_resources(pod)
    assert error_text(info) == message
    assert info.value.pod == "ml/p"


def test_a_label_that_is_not_a_string_is_named():
    with pytest.raises(WorkloadError) as info:
        group_of(make_pod("p", labels={"n": 3}))
    assert error_text(info) == "pod ml/p: label n: must be a string, not int"


# --- owners and replica spread -----------------------------------------------------------------


@pytest.mark.parametrize(("pod", "owner"), [
    (make_pod("chat-7d9f-x", labels={"pod-template-hash": "7d9f"}, owner=("apps/v1", "ReplicaSet", "chat-7d9f")),
     "ml/Deployment/chat"),
    (make_pod("rs-x", owner=("apps/v1", "ReplicaSet", "rs")), "ml/ReplicaSet/rs"),
    (make_pod("db-0", owner=("apps/v1", "StatefulSet", "db")), "ml/StatefulSet/db"),
    (make_pod("lonely"), None),
], ids=["deployment", "bare-replicaset", "statefulset", "no-owner"])
def test_owner_of(pod, owner):
    assert owner_of(pod) == owner


def test_owner_reference_that_is_not_the_controller_is_ignored():
    pod = make_pod(owner=("apps/v1", "ReplicaSet", "rs"))
    pod["metadata"]["ownerReferences"][0]["controller"] = False
    assert owner_of(pod) is None


@pytest.mark.parametrize(("annotation", "levels", "want"), [
    (None, LEVELS, "rack"),
    ("block", LEVELS, "block"),
    (BLOCK, LEVELS, "block"),
    ("host", LEVELS, None),
    (None, [], None),
], ids=["default-narrowest", "by-name", "by-label", "host-is-nodes", "no-levels"])
def test_spread_level(annotation, levels, want):
    pod = make_pod(annotations={"toposched.io/spread-level": annotation} if annotation else None)
    assert spread_level_of(pod, levels) == want


def test_unknown_spread_level_is_an_error():
    with pytest.raises(WorkloadError) as info:
        spread_level_of(make_pod(annotations={"toposched.io/spread-level": "row"}), LEVELS)
    assert error_text(info) == ('pod ml/p: annotation toposched.io/spread-level: "row" is not a topology level of '
                                "this cluster (levels: block, rack, or host for one node)")


def test_pod_request_gives_replicas_their_owner_and_jobs_none():
    rep = make_pod("chat-7d9f-x", labels={"pod-template-hash": "7d9f"}, owner=("apps/v1", "ReplicaSet", "chat-7d9f"),
                   containers=[container(gpus=2)])
    req = pod_request(rep, LEVELS)
    assert (req.name, req.owner, req.spread_level, req.gpus) == ("ml/chat-7d9f-x", "ml/Deployment/chat", "rack", 2)
    job_pod = make_pod("batch-x", owner=("batch/v1", "Job", "batch"))
    assert pod_request(job_pod, LEVELS).owner is None


# --- gang membership ---------------------------------------------------------------------------

PG_COSCHED = ObjectRef("scheduling.x-k8s.io/v1alpha1", "PodGroup", "ml", "llm")
GROUP_CASES = [
    ("native", make_pod(schedulingGroup={"podGroupName": "llm"}),
     GroupRef(GroupSource.NATIVE, "ml", "llm", ObjectRef("scheduling.k8s.io/v1alpha3", "PodGroup", "ml", "llm"))),
    ("coscheduling", make_pod(labels={"scheduling.x-k8s.io/pod-group": "llm"}),
     GroupRef(GroupSource.COSCHEDULING, "ml", "llm", PG_COSCHED)),
    ("volcano", make_pod(annotations={"scheduling.k8s.io/group-name": "llm"}),
     GroupRef(GroupSource.VOLCANO, "ml", "llm", ObjectRef("scheduling.volcano.sh/v1beta1", "PodGroup", "ml", "llm"))),
    ("volcano-new-key", make_pod(annotations={"scheduling.volcano.sh/group-name": "llm"}),
     GroupRef(GroupSource.VOLCANO, "ml", "llm", ObjectRef("scheduling.volcano.sh/v1beta1", "PodGroup", "ml", "llm"))),
    ("kubeflow-owner", make_pod(labels={"training.kubeflow.org/job-name": "bert"}, owner=("kubeflow.org/v1", "TFJob", "bert")),
     GroupRef(GroupSource.KUBEFLOW, "ml", "bert", ObjectRef("kubeflow.org/v1", "TFJob", "ml", "bert"))),
    ("kubeflow-operator-label", make_pod(labels={"training.kubeflow.org/job-name": "bert",
                                                 "training.kubeflow.org/operator-name": "pytorchjob-controller"}),
     GroupRef(GroupSource.KUBEFLOW, "ml", "bert", ObjectRef("kubeflow.org/v1", "PyTorchJob", "ml", "bert"))),
    ("jobset", make_pod(labels={"jobset.sigs.k8s.io/jobset-name": "js", "jobset.sigs.k8s.io/replicatedjob-name": "w"}),
     GroupRef(GroupSource.JOBSET, "ml", "js", ObjectRef("jobset.x-k8s.io/v1alpha2", "JobSet", "ml", "js"))),
    ("lws", make_pod(labels={"leaderworkerset.sigs.k8s.io/name": "vllm", "leaderworkerset.sigs.k8s.io/group-index": "2",
                             "leaderworkerset.sigs.k8s.io/group-key": "9f3c"}),
     GroupRef(GroupSource.LWS, "ml", "vllm-2", ObjectRef("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "ml", "vllm"))),
    ("toposched", make_pod(annotations={"toposched.io/gang": "exp1"}), GroupRef(GroupSource.TOPOSCHED, "ml", "exp1")),
    ("none", make_pod(), None),
    ("native-beats-coscheduling", make_pod(schedulingGroup={"podGroupName": "a"},
                                           labels={"scheduling.x-k8s.io/pod-group": "b"}),
     GroupRef(GroupSource.NATIVE, "ml", "a", ObjectRef("scheduling.k8s.io/v1alpha3", "PodGroup", "ml", "a"))),
    ("coscheduling-beats-volcano-and-kubeflow", make_pod(
        labels={"scheduling.x-k8s.io/pod-group": "llm", "training.kubeflow.org/job-name": "llm"},
        annotations={"scheduling.k8s.io/group-name": "other"}), GroupRef(GroupSource.COSCHEDULING, "ml", "llm", PG_COSCHED)),
    ("volcano-beats-kubeflow", make_pod(labels={"training.kubeflow.org/job-name": "llm"},
                                        annotations={"scheduling.k8s.io/group-name": "llm"}),
     GroupRef(GroupSource.VOLCANO, "ml", "llm", ObjectRef("scheduling.volcano.sh/v1beta1", "PodGroup", "ml", "llm"))),
    ("jobset-beats-ours", make_pod(labels={"jobset.sigs.k8s.io/jobset-name": "js"}, annotations={"toposched.io/gang": "g"}),
     GroupRef(GroupSource.JOBSET, "ml", "js", ObjectRef("jobset.x-k8s.io/v1alpha2", "JobSet", "ml", "js"))),
]


@pytest.mark.parametrize(("pod", "want"), [c[1:] for c in GROUP_CASES], ids=[c[0] for c in GROUP_CASES])
def test_group_of(pod, want):
    assert group_of(pod) == want


# --- realistic gang manifests ------------------------------------------------------------------


def pytorchjob_pods():
    """PyTorchJob bert: 1 master (16 CPU) + 3 workers (32 CPU), 8 GPUs each, gang-scheduled by Volcano."""
    def one(rtype, i, cpu):
        labels = {"training.kubeflow.org/job-name": "bert", "training.kubeflow.org/operator-name": "pytorchjob-controller",
                  "training.kubeflow.org/replica-type": rtype, "training.kubeflow.org/replica-index": str(i)}
        if rtype == "Master":
            labels["training.kubeflow.org/job-role"] = "master"
        return make_pod(f"bert-{rtype.lower()}-{i}", labels=labels, owner=("kubeflow.org/v1", "PyTorchJob", "bert"),
                        annotations={"scheduling.k8s.io/group-name": "bert"},
                        containers=[container("pytorch", cpu=cpu, memory="64Gi", gpus=8)])
    # deliberately out of order: members are ordered by replica index
    return [one("Worker", 2, "32"), one("Master", 0, "16"), one("Worker", 0, "32"), one("Worker", 1, "32")]


PYTORCHJOB = {
    "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "bert", "namespace": "ml"},
    "spec": {"runPolicy": {"schedulingPolicy": {"minAvailable": 4, "scheduleTimeoutSeconds": 600}},
             "pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}},
}
VOLCANO_PG = {
    "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup", "metadata": {"name": "bert", "namespace": "ml"},
    "spec": {"minMember": 4, "queue": "default", "networkTopology": {"mode": "hard", "highestTierAllowed": 1}},
}


def test_pytorchjob_with_volcano_podgroup_is_one_rack_gang_of_two_roles():
    pods = pytorchjob_pods()
    ref = group_of(pods[0])
    assert ref.source == GroupSource.VOLCANO and ref.key == "ml/bert"
    policy = gang_policy(ref, pods, VOLCANO_PG, PYTORCHJOB, LEVELS)
    assert policy == GangPolicy(min_members=4, total_members=4, required_level="rack", timeout_s=600.0)
    req, members = build_gang_request(ref, policy, pods)
    assert [(r.name, r.count, r.cpu_milli, r.gpus) for r in req.roles] == [("master", 1, 16000, 8), ("worker", 3, 32000, 8)]
    assert (req.name, req.min_members, req.required_level) == ("ml/bert", None, "rack")
    assert members == [("ml/bert/master-0", "ml/bert-master-0"), ("ml/bert/worker-0", "ml/bert-worker-0"),
                       ("ml/bert/worker-1", "ml/bert-worker-1"), ("ml/bert/worker-2", "ml/bert-worker-2")]


def test_kubeflow_without_gang_plugin_sizes_from_the_job():
    pods = [make_pod(f"bert-worker-{i}", labels={"training.kubeflow.org/job-name": "bert",
                                                 "training.kubeflow.org/replica-type": "Worker"}) for i in range(2)]
    job = copy.deepcopy(PYTORCHJOB)
    del job["spec"]["runPolicy"]
    policy = gang_policy(group_of(pods[0]), pods, None, job, LEVELS)
    assert (policy.min_members, policy.total_members, policy.timeout_s) == (4, 4, 300.0)
    assert not policy.is_ready(2) and policy.is_ready(4)


def coscheduling_pods(n=4):
    return [make_pod(f"train-{i}", labels={"scheduling.x-k8s.io/pod-group": "llm"}, containers=[container(gpus=8)])
            for i in range(n)]


COSCHED_PG = {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
              "metadata": {"name": "llm", "namespace": "ml"}, "spec": {"minMember": 3, "scheduleTimeoutSeconds": 120}}


def test_coscheduling_podgroup_with_more_pods_than_min_member_is_elastic():
    pods = coscheduling_pods(4)
    ref = group_of(pods[0])
    policy = gang_policy(ref, pods, COSCHED_PG, None, LEVELS)
    assert policy == GangPolicy(min_members=3, timeout_s=120.0)
    req, members = build_gang_request(ref, policy, pods)
    assert (req.size, req.min_members, [r.name for r in req.roles]) == (4, 3, ["worker"])
    req, _ = build_gang_request(ref, policy, pods[:3])
    assert req.min_members is None  # exactly the minimum: all or nothing
    req, _ = build_gang_request(ref, policy, pods[:2], bound=2)
    assert req.min_members == 1


def test_native_schedulinggroup_with_topology_key():
    pods = [make_pod(f"w-{i}", schedulingGroup={"podGroupName": "llm"}) for i in range(2)]
    pg = {"apiVersion": "scheduling.k8s.io/v1alpha3", "kind": "PodGroup", "metadata": {"name": "llm", "namespace": "ml"},
          "spec": {"schedulingPolicy": {"gang": {"minCount": 2}},
                   "schedulingConstraints": {"topology": [{"key": BLOCK}]}}}
    policy = gang_policy(group_of(pods[0]), pods, pg, None, LEVELS)
    assert (policy.min_members, policy.required_level) == (2, "block")


def jobset_pods():
    """JobSet js: replicated job driver (1 x parallelism 1) and workers (2 x parallelism 2)."""
    out = []
    for rjob, replicas, parallelism, cpu, first_global in (("driver", 1, 1, "2", 0), ("workers", 2, 2, "16", 1)):
        for j in range(replicas):
            for k in range(parallelism):
                labels = {"jobset.sigs.k8s.io/jobset-name": "js", "jobset.sigs.k8s.io/replicatedjob-name": rjob,
                          "jobset.sigs.k8s.io/replicatedjob-replicas": str(replicas),
                          "jobset.sigs.k8s.io/job-index": str(j), "jobset.sigs.k8s.io/job-global-index": str(first_global + j),
                          "jobset.sigs.k8s.io/global-replicas": "3", "batch.kubernetes.io/job-completion-index": str(k)}
                out.append(make_pod(f"js-{rjob}-{j}-{k}-x", labels=labels,
                                    containers=[container(cpu=cpu, gpus=8 if rjob == "workers" else None)]))
    return out


def jobset(exclusive=None, worker_parallelism=2):
    meta = {"name": "js", "namespace": "ml"}
    if exclusive:
        meta["annotations"] = {"alpha.jobset.sigs.k8s.io/exclusive-topology": exclusive}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": meta,
            "spec": {"replicatedJobs": [
                {"name": "driver", "replicas": 1, "template": {"spec": {"parallelism": 1}}},
                {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": worker_parallelism}}}]}}


def test_jobset_is_one_gang_sized_replicas_times_parallelism():
    pods = jobset_pods()
    ref = group_of(pods[0])
    policy = gang_policy(ref, pods, None, jobset(), LEVELS)
    assert (policy.min_members, policy.total_members) == (5, 5)
    req, members = build_gang_request(ref, policy, list(reversed(pods)))
    assert [(r.name, r.count) for r in req.roles] == [("driver", 1), ("workers", 4)]
    assert [k for _, k in members] == ["ml/js-driver-0-0-x", "ml/js-workers-0-0-x", "ml/js-workers-0-1-x",
                                       "ml/js-workers-1-0-x", "ml/js-workers-1-1-x"]


def test_jobset_without_the_object_or_size_waits_for_it():
    pods = jobset_pods()
    with pytest.raises(MissingGroupObject) as info:
        gang_policy(group_of(pods[0]), pods, None, None, LEVELS)
    assert error_text(info) == ("pod ml/js-driver-0-0-x: gang ml/js: size unknown: needs JobSet ml/js or annotation "
                                "toposched.io/gang-size")


def test_jobset_exclusive_topology_makes_one_slice_per_child_job():
    pods = [p for p in jobset_pods() if "workers" in p["metadata"]["name"]]
    js = jobset(exclusive=RACK)
    js["spec"]["replicatedJobs"] = js["spec"]["replicatedJobs"][1:]
    policy = gang_policy(group_of(pods[0]), pods, None, js, LEVELS)
    assert (policy.total_members, policy.slice_size, policy.slice_level) == (4, 2, "rack")
    req, _ = build_gang_request(group_of(pods[0]), policy, pods)
    assert (req.slice_size, req.slice_level) == (2, "rack")


def test_jobset_exclusive_topology_with_uneven_child_jobs_is_refused():
    pods = jobset_pods()
    with pytest.raises(WorkloadError, match=r"needs child Jobs of equal parallelism"):
        gang_policy(group_of(pods[0]), pods, None, jobset(exclusive=RACK), LEVELS)


def lws_pods(size="4"):
    """LeaderWorkerSet vllm group 0: a leader (4 CPU) and 3 workers (8 CPU), 8 GPUs each, exclusive per rack."""
    out = []
    for w in range(4):
        labels = {"leaderworkerset.sigs.k8s.io/name": "vllm", "leaderworkerset.sigs.k8s.io/group-index": "0",
                  "leaderworkerset.sigs.k8s.io/group-key": "a1b2", "leaderworkerset.sigs.k8s.io/worker-index": str(w)}
        name = "vllm-0" if w == 0 else f"vllm-0-{w}"
        out.append(make_pod(name, labels=labels, annotations={"leaderworkerset.sigs.k8s.io/size": size,
                                                              "leaderworkerset.sigs.k8s.io/exclusive-topology": RACK},
                            containers=[container(cpu="4" if w == 0 else "8", gpus=8)]))
    return out


def test_leaderworkerset_group_is_a_gang_in_one_rack():
    pods = lws_pods()
    ref = group_of(pods[0])
    policy = gang_policy(ref, pods, None, None, LEVELS)
    assert policy == GangPolicy(min_members=4, total_members=4, required_level="rack")
    req, members = build_gang_request(ref, policy, pods)
    assert [(r.name, r.count) for r in req.roles] == [("leader", 1), ("worker", 3)]
    assert members[0] == ("ml/vllm-0/leader-0", "ml/vllm-0")
    lws = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": "vllm"},
           "spec": {"leaderWorkerTemplate": {"size": 4}}}
    assert gang_policy(ref, pods, None, lws, LEVELS).total_members == 4


def ours(n=2, **annotations):
    base = {"toposched.io/gang": "exp", "toposched.io/gang-size": str(n)}
    return [make_pod(f"exp-{i}", annotations={**base, **annotations}, containers=[container(gpus=8)]) for i in range(n)]


TOPOLOGY_CASES = [
    ("ours", ours(**{"toposched.io/required-level": "block", "toposched.io/preferred-level": "rack", "toposched.io/rail-aligned": "true",
                                              "toposched.io/gang-timeout-seconds": "90"}), None,
     {"required_level": "block", "preferred_level": "rack", "rail_aligned": True, "timeout_s": 90.0}),
    ("kueue-required", ours(**{"kueue.x-k8s.io/podset-required-topology": BLOCK}), None, {"required_level": "block"}),
    ("kueue-preferred", ours(**{"kueue.x-k8s.io/podset-preferred-topology": RACK}), None, {"preferred_level": "rack"}),
    ("kueue-hostname", ours(**{"kueue.x-k8s.io/podset-required-topology": "kubernetes.io/hostname"}), None,
     {"required_level": "host"}),
    ("kueue-unconstrained", ours(**{"kueue.x-k8s.io/podset-unconstrained-topology": "true"}), None, {}),
    ("kueue-slice", ours(4, **{"kueue.x-k8s.io/podset-required-topology": BLOCK,
                               "kueue.x-k8s.io/podset-slice-required-topology": RACK,
                               "kueue.x-k8s.io/podset-slice-size": "2"}), None,
     {"required_level": "block", "slice_size": 2, "slice_level": "rack"}),
    ("our-slice", ours(4, **{"toposched.io/slice-size": "2", "toposched.io/slice-level": "rack"}), None,
     {"slice_size": 2, "slice_level": "rack"}),
    ("narrowest-required-wins", ours(**{"toposched.io/required-level": "block",
                                        "kueue.x-k8s.io/podset-required-topology": RACK}), None, {"required_level": "rack"}),
    ("preferred-wider-than-required-dropped", ours(**{"toposched.io/required-level": "rack",
                                                      "toposched.io/preferred-level": "block"}), None,
     {"required_level": "rack"}),
    ("volcano-hard-tier-1", ours(), {"mode": "hard", "highestTierAllowed": 1}, {"required_level": "rack"}),
    ("volcano-default-mode-tier-2", ours(), {"highestTierAllowed": 2}, {"required_level": "block"}),
    ("volcano-tier-above-levels", ours(), {"highestTierAllowed": 3}, {}),
    ("volcano-tier-0-one-node", ours(), {"highestTierAllowed": 0}, {"required_level": "host"}),
    ("volcano-soft", ours(), {"mode": "soft", "highestTierAllowed": 1}, {"preferred_level": "rack"}),
    ("volcano-tier-name", ours(), {"highestTierName": "block"}, {"required_level": "block"}),
    ("ours-preferred-beats-volcano-soft", ours(**{"toposched.io/preferred-level": "block"}),
     {"mode": "soft", "highestTierAllowed": 1}, {"preferred_level": "block"}),
]


@pytest.mark.parametrize(("pods", "network", "want"), [c[1:] for c in TOPOLOGY_CASES], ids=[c[0] for c in TOPOLOGY_CASES])
def test_topology_sources(pods, network, want):
    # the same pods, read as a toposched gang or (with a networkTopology) as a Volcano gang
    if network is None:
        ref, pg = group_of(pods[0]), None
    else:
        ref = GroupRef(GroupSource.VOLCANO, "ml", "exp")
        pg = {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
              "metadata": {"name": "exp", "namespace": "ml"}, "spec": {"minMember": len(pods), "networkTopology": network}}
    policy = gang_policy(ref, pods, pg, None, LEVELS)
    base = GangPolicy(min_members=len(pods), total_members=len(pods))
    assert policy == GangPolicy(**{**base.__dict__, **want})
    req, _ = build_gang_request(ref, policy, pods)
    assert (req.required_level, req.preferred_level, req.slice_size, req.rail_aligned) == (
        policy.required_level, policy.preferred_level, policy.slice_size, policy.rail_aligned)


def test_required_level_annotation_keyword():
    pods = ours(**{"toposched.io/required-level": "rack"})
    assert gang_policy(group_of(pods[0]), pods, None, None, LEVELS).required_level == "rack"


def _with(pods, i, **annotations):
    pods[i]["metadata"]["annotations"].update(annotations)
    return pods


GANG_ERRORS = [
    ("unknown-kueue-level", ours(**{"kueue.x-k8s.io/podset-required-topology": "cloud.example/rack"}), None, None,
     WorkloadError, 'pod ml/exp-0: annotation kueue.x-k8s.io/podset-required-topology: "cloud.example/rack" is not a '
                    "topology level of this cluster (levels: block, rack; their node labels: "
                    f"{BLOCK}, {RACK}, kubernetes.io/hostname)"),
    ("unknown-our-level", ours(**{"toposched.io/required-level": "row"}), None, None, WorkloadError,
     'pod ml/exp-0: annotation toposched.io/required-level: "row" is not a topology level of this cluster '
     "(levels: block, rack, or host for one node)"),
    ("negative-size", ours(**{"toposched.io/gang-size": "-2"}), None, None, WorkloadError,
     "pod ml/exp-0: annotation toposched.io/gang-size: -2 is negative; it must be at least 1"),
    ("size-not-int", ours(**{"toposched.io/gang-size": "two"}), None, None, WorkloadError,
     'pod ml/exp-0: annotation toposched.io/gang-size: "two" is not an integer'),
    ("members-disagree", _with(ours(2), 1, **{"toposched.io/gang-size": "8"}), None, None, WorkloadError,
     'pod ml/exp-1: annotation toposched.io/gang-size: "8" disagrees with pod ml/exp-0 ("2"); all members of gang '
     "ml/exp must agree"),
    ("min-over-size", ours(**{"toposched.io/gang-min-members": "3"}), None, None, WorkloadError,
     "pod ml/exp-0: annotation toposched.io/gang-min-members: minimum members 3 conflicts with the gang size 2 from "
     "annotation toposched.io/gang-size"),
    ("podgroup-negative-min", coscheduling_pods(2), {**COSCHED_PG, "spec": {"minMember": -1}}, None, WorkloadError,
     "pod ml/train-0: PodGroup ml/llm spec.minMember: -1 is negative; it must be at least 1"),
    ("podgroup-vs-job", pytorchjob_pods(), {**VOLCANO_PG, "spec": {"minMember": 5}}, PYTORCHJOB, WorkloadError,
     "pod ml/bert-master-0: PyTorchJob ml/bert spec.runPolicy.schedulingPolicy.minAvailable: minimum members 4 "
     "conflicts with 5 from PodGroup ml/bert spec.minMember"),
    ("lws-size-vs-object", lws_pods("3"), None, {"kind": "LeaderWorkerSet", "metadata": {"name": "vllm", "namespace": "ml"},
                                                 "spec": {"leaderWorkerTemplate": {"size": 4}}}, WorkloadError,
     'pod ml/vllm-0: annotation leaderworkerset.sigs.k8s.io/size: gang size 3 conflicts with 4 from LeaderWorkerSet '
     "ml/vllm spec.leaderWorkerTemplate.size"),
    ("missing-podgroup", coscheduling_pods(2), None, None, MissingGroupObject,
     "pod ml/train-0: PodGroup ml/llm: not found (scheduling.x-k8s.io/v1alpha1); the gang waits for it"),
    ("our-gang-without-size", [make_pod("x", annotations={"toposched.io/gang": "g"})], None, None, WorkloadError,
     "pod ml/x: annotation toposched.io/gang-size: missing; a toposched.io/gang needs its member count"),
    ("kueue-required-and-preferred", ours(**{"kueue.x-k8s.io/podset-required-topology": RACK,
                                             "kueue.x-k8s.io/podset-preferred-topology": BLOCK}), None, None, WorkloadError,
     "pod ml/exp-0: annotation kueue.x-k8s.io/podset-preferred-topology: conflicts with annotation "
     "kueue.x-k8s.io/podset-required-topology; a pod set takes at most one of them"),
    ("kueue-slice-without-size", ours(**{"kueue.x-k8s.io/podset-slice-required-topology": RACK}), None, None,
     WorkloadError, "pod ml/exp-0: annotation kueue.x-k8s.io/podset-slice-required-topology: needs annotation "
                    "kueue.x-k8s.io/podset-slice-size as well"),
    ("volcano-bad-mode", coscheduling_pods(2), {**VOLCANO_PG, "spec": {"minMember": 2, "networkTopology": {"mode": "firm"}}},
     None, WorkloadError, 'pod ml/train-0: PodGroup ml/bert spec.networkTopology.mode: "firm" is not hard or soft'),
    ("volcano-unknown-tier-name", coscheduling_pods(2),
     {**VOLCANO_PG, "spec": {"minMember": 2, "networkTopology": {"highestTierName": "spine"}}}, None, WorkloadError,
     'pod ml/train-0: PodGroup ml/bert spec.networkTopology.highestTierName: "spine" is not a topology level of this '
     "cluster (levels: block, rack, or host for one node)"),
    ("rail-aligned-not-bool", ours(**{"toposched.io/rail-aligned": "maybe"}), None, None, WorkloadError,
     'pod ml/exp-0: annotation toposched.io/rail-aligned: "maybe" is not true or false'),
    ("native-unknown-topology-key", [make_pod("w", schedulingGroup={"podGroupName": "llm"})],
     {"apiVersion": "scheduling.k8s.io/v1alpha3", "kind": "PodGroup", "metadata": {"name": "llm", "namespace": "ml"},
      "spec": {"schedulingConstraints": {"topology": [{"key": "example.com/row"}]}}}, None, WorkloadError,
     'pod ml/w: PodGroup ml/llm spec.schedulingConstraints.topology[0].key: "example.com/row" is not a topology level '
     f"of this cluster (levels: block, rack; their node labels: {BLOCK}, {RACK}, kubernetes.io/hostname)"),
]


@pytest.mark.parametrize(("pods", "pg", "job", "exc", "message"), [c[1:] for c in GANG_ERRORS],
                         ids=[c[0] for c in GANG_ERRORS])
def test_bad_gangs_name_the_pod_and_the_place(pods, pg, job, exc, message):
    with pytest.raises(exc) as info:
        gang_policy(group_of(pods[0]), pods, pg, job, LEVELS)
    assert error_text(info) == message


def test_build_refuses_too_few_too_many_and_uneven_slices():
    pods = ours(4)
    ref = group_of(pods[0])
    policy = gang_policy(ref, pods, None, None, LEVELS)
    with pytest.raises(WorkloadError, match=r"^pod ml/exp-0: gang ml/exp: has 3 of its 4 minimum members; it waits"):
        build_gang_request(ref, policy, pods[:3])
    with pytest.raises(WorkloadError, match=r"^pod ml/exp-0: gang ml/exp: has 5 members but its size is 4$"):
        build_gang_request(ref, policy, pods, bound=1)
    sliced = GangPolicy(min_members=3, total_members=4, slice_size=2, slice_level="rack")
    with pytest.raises(WorkloadError, match=r"^pod ml/exp-0: gang ml/exp: 3 members do not split into slices of 2$"):
        build_gang_request(ref, sliced, pods[:3])


def test_a_bad_member_is_named_when_the_gang_is_built():
    pods = ours(2)
    pods[1]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "x"
    ref = group_of(pods[0])
    with pytest.raises(WorkloadError) as info:
        build_gang_request(ref, gang_policy(ref, pods, None, None, LEVELS), pods)
    assert info.value.pod == "ml/exp-1"


def test_gang_roles_and_single_pods_carry_extended_resources():
    pods = ours(3)
    for i, p in enumerate(pods):
        # the same amounts written in a different order still make one role
        lim = {"rdma/ib": "4", "vpc.amazonaws.com/efa": "32"} if i else {"vpc.amazonaws.com/efa": "32", "rdma/ib": "4"}
        p["spec"]["containers"][0]["resources"]["limits"].update(lim)
    ref = group_of(pods[0])
    req, _ = build_gang_request(ref, gang_policy(ref, pods, None, None, LEVELS), pods)
    assert [(r.name, r.count, r.gpus, r.extended) for r in req.roles] == \
        [("worker", 3, 8, {"rdma/ib": 4, "vpc.amazonaws.com/efa": 32})]
    assert pod_request(pods[0], LEVELS).extended == {"rdma/ib": 4, "vpc.amazonaws.com/efa": 32}


def test_roles_with_the_same_label_but_different_resources_get_distinct_names():
    pods = ours(3)
    pods[2]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    ref = group_of(pods[0])
    req, members = build_gang_request(ref, gang_policy(ref, pods, None, None, LEVELS), pods)
    assert [(r.name, r.count, r.gpus) for r in req.roles] == [("worker", 2, 8), ("worker-2", 1, 4)]
    assert members[-1] == ("ml/exp/worker-2-0", "ml/exp-2")


# --- GPU assignment annotations ----------------------------------------------------------------


@pytest.mark.parametrize(("gpus", "milli", "short"), [((0, 1, 2, 3), 1000, "0,1,2,3"), ((5,), 250, "5"), ((), 1000, "void")],
                         ids=["whole", "shared", "cpu-only"])
def test_assignment_round_trip(gpus, milli, short):
    placement = Placement(pod="ml/train-0", node="dgx-004", node_index=3, gpus=gpus, gpu_milli=milli, cpu_milli=1000,
                          memory_mib=1024)
    ann = assignment_annotations(placement)
    assert ann["toposched.io/gpus"] == short
    assert json.loads(ann["toposched.io/assignment"]) == {"node": "dgx-004", "gpus": list(gpus), "gpu_milli": milli,
                                                          "version": "toposched.io/v1"}
    pod = make_pod("train-0", annotations=ann, nodeName="dgx-004")
    assert parse_assignment(pod) == (gpus, milli)


def test_no_assignment_is_none():
    assert parse_assignment(make_pod()) is None


REC = '{"node":"dgx-004","gpus":[0,1],"gpu_milli":1000,"version":"toposched.io/v1"}'
BAD_ASSIGNMENTS = [
    ("bad-json", {"toposched.io/assignment": "{node: dgx-004}"},
     "pod ml/p: annotation toposched.io/assignment: malformed JSON at column 2: Expecting property name enclosed in "
     "double quotes"),
    ("not-object", {"toposched.io/assignment": "[0, 1]"},
     "pod ml/p: annotation toposched.io/assignment: must be a JSON object, not list"),
    ("wrong-version", {"toposched.io/assignment": REC.replace("v1", "v2")},
     'pod ml/p: annotation toposched.io/assignment.version: "toposched.io/v2" is not toposched.io/v1, the version '
     "this toposched reads"),
    ("unknown-key", {"toposched.io/assignment": REC[:-1] + ',"rail":1}'},
     "pod ml/p: annotation toposched.io/assignment: unknown keys rail"),
    ("duplicate-gpus", {"toposched.io/assignment": REC.replace("[0,1]", "[1,1]")},
     "pod ml/p: annotation toposched.io/assignment.gpus: [1, 1] is not a list of distinct GPU indices"),
    ("share-on-two", {"toposched.io/assignment": REC.replace("1000", "500")},
     "pod ml/p: annotation toposched.io/assignment.gpu_milli: a share (500) needs exactly one GPU, not 2"),
    ("other-node", {"toposched.io/assignment": REC.replace("dgx-004", "dgx-009")},
     'pod ml/p: annotation toposched.io/assignment.node: "dgx-009" but the pod is bound to "dgx-004"'),
    ("short-disagrees", {"toposched.io/assignment": REC, "toposched.io/gpus": "0,2"},
     'pod ml/p: annotation toposched.io/gpus: "0,2" disagrees with annotation toposched.io/assignment ("0,1")'),
    ("short-alone", {"toposched.io/gpus": "0,1"},
     "pod ml/p: annotation toposched.io/assignment: missing next to annotation toposched.io/gpus; toposched writes both"),
]


@pytest.mark.parametrize(("annotations", "message"), [c[1:] for c in BAD_ASSIGNMENTS], ids=[c[0] for c in BAD_ASSIGNMENTS])
def test_bad_assignment_is_named(annotations, message):
    with pytest.raises(WorkloadError) as info:
        parse_assignment(make_pod("p", annotations=annotations, nodeName="dgx-004"))
    assert error_text(info) == message


# --- the docs match the code -------------------------------------------------------------------


def test_gpu_assignment_doc_snippet_reads_our_annotation():
    text = (ROOT / "docs" / "gpu-assignment.md").read_text()
    snippet = re.search(r"<!-- example: parsed by tests/scheduler/test_workloads.py -->\n```yaml\n(.*?)```", text, re.S)
    pod = yaml.safe_load(snippet.group(1))
    env = pod["spec"]["containers"][0]["env"][0]
    assert env["name"] == "NVIDIA_VISIBLE_DEVICES"
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{common.GPUS_ANNOTATION}']"
    assert is_ours(pod, "toposched") and pod_resources(pod).gpus == 4


def test_every_toposched_annotation_is_documented():
    text = (ROOT / "docs" / "workloads.md").read_text()
    keys = [v for k, v in vars(common).items() if k.endswith("_ANNOTATION") and isinstance(v, str)]
    assert len(keys) >= 14
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing


def test_owner_references_that_are_not_a_list_mean_no_owner():
    pod = make_pod("p")
    pod["metadata"]["ownerReferences"] = 5
    assert owner_of(pod) is None
    assert group_of(pod) is None
