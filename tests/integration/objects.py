"""Builders for Kubernetes API dicts (Nodes, Pods, PodGroups) in integration tests: each states only what matters."""

from __future__ import annotations

from typing import Any

SCHEDULER = "toposched"
RACK_LABEL = "example.com/rack"


def node(name: str, gpus: int = 8, *, rack: str | None = None, model: str = "NVIDIA-H100-80GB-HBM3",
         cpu: str = "96", memory: str = "1Ti", ready: bool = True, labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A GPU Node as a kubelet with the NVIDIA device plugin and GPU Feature Discovery would report it."""
    all_labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.product": model,
                  "nvidia.com/gpu.count": str(gpus), **(labels or {})}
    if rack is not None:
        all_labels[RACK_LABEL] = rack
    alloc = {"cpu": cpu, "memory": memory, "pods": "110", "nvidia.com/gpu": str(gpus)}
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": dict(annotations or {})},
        "spec": {"taints": list(taints or [])},
        "status": {"capacity": dict(alloc), "allocatable": alloc,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    return obj


def pod(name: str, gpus: int = 1, *, namespace: str = "default", scheduler: str = SCHEDULER, cpu: str = "1",
        memory: str = "1Gi", labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        node_name: str | None = None, owner: tuple[str, str] | None = None, uid: str | None = None,
        **spec: Any) -> dict[str, Any]:
    """A pod asking for ``gpus`` whole GPUs; ``owner`` = (kind, name) of its controller."""
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {}
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
        limits["nvidia.com/gpu"] = str(gpus)
    container = {"name": "main", "image": "registry.example/train:1", "resources": {"requests": requests}}
    if limits:
        container["resources"]["limits"] = limits
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                            "annotations": dict(annotations or {})}
    if uid:
        meta["uid"] = uid
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": f"uid-{owner[1]}", "controller": True}]
    body: dict[str, Any] = {"schedulerName": scheduler, "containers": [container], **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body, "status": {"phase": "Pending"}}


def podgroup(name: str, min_member: int, *, namespace: str = "default", timeout_s: int | None = None) -> dict[str, Any]:
    """A scheduler-plugins coscheduling PodGroup."""
    spec: dict[str, Any] = {"minMember": min_member}
    if timeout_s is not None:
        spec["scheduleTimeoutSeconds"] = timeout_s
    return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def gang_pods(group: str, count: int, gpus: int = 8, *, namespace: str = "default",
              annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``count`` members of a coscheduling gang ``group`` (label ``scheduling.x-k8s.io/pod-group``)."""
    return [pod(f"{group}-{i}", gpus, namespace=namespace, labels={"scheduling.x-k8s.io/pod-group": group},
                annotations=annotations) for i in range(count)]


def our_gang(group: str, count: int, gpus: int = 8, *, namespace: str = "default",
             **annotations: str) -> list[dict[str, Any]]:
    """``count`` members of a gang named by our own annotations (``toposched.io/gang`` + ``gang-size``);
    extra annotations by keyword, ``_`` for ``-`` (``required_level="rack"``)."""
    ann = {"toposched.io/gang": group, "toposched.io/gang-size": str(count),
           **{f"toposched.io/{k.replace('_', '-')}": v for k, v in annotations.items()}}
    return [pod(f"{group}-{i}", gpus, namespace=namespace, annotations=ann) for i in range(count)]
