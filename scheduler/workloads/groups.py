"""Which gang a pod belongs to, read from what users already write (docs/workloads.md).

Precedence, first match wins:

  1. native ``spec.schedulingGroup.podGroupName`` (scheduling.k8s.io PodGroup)
  2. scheduler-plugins coscheduling label ``scheduling.x-k8s.io/pod-group``
  3. Volcano annotation ``scheduling.k8s.io/group-name`` / ``scheduling.volcano.sh/group-name``
  4. Kubeflow training-operator label ``training.kubeflow.org/job-name``
  5. JobSet label ``jobset.sigs.k8s.io/jobset-name`` (one gang per JobSet)
  6. LeaderWorkerSet label ``leaderworkerset.sigs.k8s.io/group-key`` (one gang per group)
  7. our annotation ``toposched.io/gang``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .common import GANG_ANNOTATION, annotations_of, controller_of, get, labels_of, namespace_of

NATIVE_PODGROUP_API = "scheduling.k8s.io/v1alpha3"
COSCHEDULING_LABEL = "scheduling.x-k8s.io/pod-group"
COSCHEDULING_API = "scheduling.x-k8s.io/v1alpha1"
VOLCANO_ANNOTATIONS = ("scheduling.k8s.io/group-name", "scheduling.volcano.sh/group-name")
VOLCANO_API = "scheduling.volcano.sh/v1beta1"
KUBEFLOW_PREFIX = "training.kubeflow.org/"
KUBEFLOW_JOB_LABEL = KUBEFLOW_PREFIX + "job-name"
KUBEFLOW_TYPE_LABEL = KUBEFLOW_PREFIX + "replica-type"
KUBEFLOW_INDEX_LABEL = KUBEFLOW_PREFIX + "replica-index"
KUBEFLOW_OPERATOR_LABEL = KUBEFLOW_PREFIX + "operator-name"
KUBEFLOW_API = "kubeflow.org/v1"
# operator-name label -> job kind, for pods whose ownerReference is missing
KUBEFLOW_KINDS = {f"{k.lower()}-controller": k
                  for k in ("PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob")}
JOBSET_PREFIX = "jobset.sigs.k8s.io/"
JOBSET_NAME_LABEL = JOBSET_PREFIX + "jobset-name"
JOBSET_RJOB_LABEL = JOBSET_PREFIX + "replicatedjob-name"
JOBSET_GLOBAL_INDEX_LABEL = JOBSET_PREFIX + "job-global-index"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LWS_PREFIX = "leaderworkerset.sigs.k8s.io/"
LWS_NAME_LABEL = LWS_PREFIX + "name"
LWS_GROUP_KEY_LABEL = LWS_PREFIX + "group-key"
LWS_GROUP_INDEX_LABEL = LWS_PREFIX + "group-index"
LWS_WORKER_INDEX_LABEL = LWS_PREFIX + "worker-index"
LWS_SIZE_ANNOTATION = LWS_PREFIX + "size"
LWS_API = "leaderworkerset.x-k8s.io/v1"


class GroupSource(StrEnum):
    """Where a pod's gang membership came from (in precedence order)."""

    NATIVE = "native"
    COSCHEDULING = "coscheduling"
    VOLCANO = "volcano"
    KUBEFLOW = "kubeflow"
    JOBSET = "jobset"
    LWS = "lws"
    TOPOSCHED = "toposched"


@dataclass(frozen=True)
class ObjectRef:
    """An object the driver should fetch and pass to ``gang_policy`` (``podgroup`` or ``job``)."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def is_podgroup(self) -> bool:
        return self.kind == "PodGroup"


@dataclass(frozen=True)
class GroupRef:
    """A gang: its namespace, name, source and the object that describes it (if any)."""

    source: GroupSource
    namespace: str
    name: str
    object: ObjectRef | None = None

    @property
    def key(self) -> str:
        """``ns/name``: the GangRequest name and the key gangs are collected under."""
        return f"{self.namespace}/{self.name}"


def _kubeflow_object(pod: Mapping[str, Any], ns: str, job: str, labels: Mapping[str, str]) -> ObjectRef | None:
    ctrl = controller_of(pod)
    if ctrl and str(ctrl.get("apiVersion", "")).startswith("kubeflow.org/") and ctrl.get("name") == job:
        return ObjectRef(str(ctrl["apiVersion"]), str(ctrl.get("kind")), ns, job)
    kind = KUBEFLOW_KINDS.get(labels.get(KUBEFLOW_OPERATOR_LABEL, ""))
    return ObjectRef(KUBEFLOW_API, kind, ns, job) if kind else None


def group_of(pod: Mapping[str, Any]) -> GroupRef | None:
    """The gang this pod belongs to, or None for a pod placed on its own (precedence in the module doc)."""
    ns = namespace_of(pod)
    labels = labels_of(pod)
    annotations = annotations_of(pod)

    native = get(pod, "spec", "schedulingGroup", "podGroupName")
    if isinstance(native, str) and native:
        return GroupRef(GroupSource.NATIVE, ns, native, ObjectRef(NATIVE_PODGROUP_API, "PodGroup", ns, native))
    if labels.get(COSCHEDULING_LABEL):
        name = labels[COSCHEDULING_LABEL]
        return GroupRef(GroupSource.COSCHEDULING, ns, name, ObjectRef(COSCHEDULING_API, "PodGroup", ns, name))
    for key in VOLCANO_ANNOTATIONS:
        if annotations.get(key):
            name = annotations[key]
            return GroupRef(GroupSource.VOLCANO, ns, name, ObjectRef(VOLCANO_API, "PodGroup", ns, name))
    if labels.get(KUBEFLOW_JOB_LABEL):
        job = labels[KUBEFLOW_JOB_LABEL]
        return GroupRef(GroupSource.KUBEFLOW, ns, job, _kubeflow_object(pod, ns, job, labels))
    if labels.get(JOBSET_NAME_LABEL):
        name = labels[JOBSET_NAME_LABEL]
        return GroupRef(GroupSource.JOBSET, ns, name, ObjectRef(JOBSET_API, "JobSet", ns, name))
    if labels.get(LWS_GROUP_KEY_LABEL):
        lws, index = labels.get(LWS_NAME_LABEL), labels.get(LWS_GROUP_INDEX_LABEL)
        name = f"{lws}-{index}" if lws and index else labels[LWS_GROUP_KEY_LABEL]
        obj = ObjectRef(LWS_API, "LeaderWorkerSet", ns, lws) if lws else None
        return GroupRef(GroupSource.LWS, ns, name, obj)
    if annotations.get(GANG_ANNOTATION):
        return GroupRef(GroupSource.TOPOSCHED, ns, annotations[GANG_ANNOTATION].strip())
    return None
