"""One pod: is it ours, what it asks for (``Resources``), who owns it, where to spread it.

``pod_resources`` follows kube-scheduler's effective request (K8S.md 5.2), per resource:

  1. each container's request (its limit when only the limit is set);
  2. app containers summed, plus every sidecar (init container with ``restartPolicy: Always``);
  3. each ordinary init container plus the sidecars started before it; the largest counts;
  4. the larger of 2 and 3, replaced by pod-level ``spec.resources`` where set (cpu and
     memory only), plus ``spec.overhead``.

Extended resources (any name but cpu, memory, ``nvidia.com/gpu`` and the ignored
``ephemeral-storage``: ``rdma/ib``, ``vpc.amazonaws.com/efa``, ``hugepages-2Mi``) are whole
numbers, requests equal to limits where both are set; they go to ``Resources.extended``.

Constraints we cannot honour (required pod (anti-)affinity, hard topology spread, node
affinity beyond one term of single-value ``In``, host ports, DRA claims) raise
``UnsupportedConstraint``: fail closed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from models.errors import SpecError
from models.readers.k8s_node import parse_quantity
from models.requests import GPU_MILLI, PodRequest, Resources, Toleration
from models.spec import LevelSpec, check_extended_resources

from .common import (
    GPU_MILLI_ANNOTATION,
    GPU_MODELS_ANNOTATION,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    HOST_LEVEL,
    SPREAD_LEVEL_ANNOTATION,
    UnsupportedConstraint,
    WorkloadError,
    annotations_of,
    controller_of,
    get,
    labels_of,
    level_from_name,
    namespace_of,
    parse_int,
    pod_key,
    quote,
)

DEFAULT_SCHEDULER = "default-scheduler"
TERMINAL_PHASES = ("Succeeded", "Failed")
# Resources read into their own ``Resources`` fields; those in IGNORED_RESOURCES are not
# modelled (kubelet still enforces them); every other name is an extended resource.
MODELLED_RESOURCES = ("cpu", "memory", GPU_RESOURCE)
IGNORED_RESOURCES = ("ephemeral-storage",)
# Controllers whose pods are interchangeable replicas (spread over domains).
REPLICA_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")
_MIB = Decimal(1024 * 1024)
_AFFINITY = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"


def is_terminal(pod: Mapping[str, Any]) -> bool:
    """The pod has finished (phase Succeeded or Failed)."""
    return get(pod, "status", "phase") in TERMINAL_PHASES


def is_ours(pod: Mapping[str, Any], scheduler_name: str) -> bool:
    """Ours to place now: our schedulerName, not bound, not terminating, not gated, not finished."""
    spec = get(pod, "spec") or {}
    return ((spec.get("schedulerName") or DEFAULT_SCHEDULER) == scheduler_name
            and not spec.get("nodeName")
            and not get(pod, "metadata", "deletionTimestamp")
            and not spec.get("schedulingGates")
            and not is_terminal(pod))


# --- resources ------------------------------------------------------------------------


def _quantity(key: str, path: str, text: Any) -> Decimal:
    try:
        value = parse_quantity(text)
    except SpecError:
        raise WorkloadError(key, path, f"{quote(text)} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)") from None
    if value < 0:
        raise WorkloadError(key, path, f"{quote(text)} is negative")
    return value


def _resource_map(key: str, path: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise WorkloadError(key, path, "must map resource names to quantities")
    return dict(raw)


def _container_requests(key: str, c: Mapping[str, Any], path: str) -> dict[str, Decimal]:
    """One container's requests (limits where no request is set), checked resource by resource."""
    req = _resource_map(key, f"{path}.resources.requests", get(c, "resources", "requests"))
    lim = _resource_map(key, f"{path}.resources.limits", get(c, "resources", "limits"))
    out: dict[str, Decimal] = {}
    for name in sorted(set(req) | set(lim)):
        field = "requests" if name in req else "limits"
        where = f"{path}.resources.{field}[{name}]"
        text = req[name] if name in req else lim[name]
        value = _quantity(key, where, text)
        if name in IGNORED_RESOURCES:
            continue
        if name not in MODELLED_RESOURCES:
            if not isinstance(name, str) or name == "pods":
                raise WorkloadError(key, where, f"{quote(str(name))} is not a resource a container can request")
            try:
                check_extended_resources({name: 0})
            except ValueError as exc:
                raise WorkloadError(key, where, str(exc)) from None
        if name not in ("cpu", "memory"):
            if value != value.to_integral_value():
                noun = "GPUs" if name == GPU_RESOURCE else f"{name} (an extended resource)"
                raise WorkloadError(key, where, f"{quote(str(text))} is not a whole number of {noun}")
            if name in req and name in lim and _quantity(key, f"{path}.resources.limits[{name}]", lim[name]) != value:
                raise WorkloadError(key, f"{path}.resources", f"{name} requests ({req[name]}) and limits "
                                                              f"({lim[name]}) must be equal")
        if value == 0 and name not in MODELLED_RESOURCES:
            continue
        out[name] = value
    return out


def _containers(key: str, pod: Mapping[str, Any], field: str) -> list[tuple[str, Mapping[str, Any]]]:
    raw = get(pod, "spec", field) or []
    if not isinstance(raw, list) or any(not isinstance(c, Mapping) for c in raw):
        raise WorkloadError(key, f"spec.{field}", "must be a list of containers")
    return [(f"spec.{field}[{c.get('name', i)}]", c) for i, c in enumerate(raw)]


def _list(key: str, value: Any, where: str) -> list[Any]:
    """``value`` when it is a list (None: empty); anything else is an error at ``where``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorkloadError(key, where, f"must be a list, not {type(value).__name__}")
    return value


def _add(a: dict[str, Decimal], b: Mapping[str, Decimal]) -> dict[str, Decimal]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) + v
    return out


def _max(a: dict[str, Decimal], b: Mapping[str, Decimal]) -> dict[str, Decimal]:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, Decimal(0)), v)
    return out


def effective_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """cpu (cores), memory (bytes), nvidia.com/gpu and extended resources the pod occupies (phases in the module doc)."""
    key = pod_key(pod)
    apps: dict[str, Decimal] = {}
    for path, c in _containers(key, pod, "containers"):
        apps = _add(apps, _container_requests(key, c, path))
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for path, c in _containers(key, pod, "initContainers"):
        req = _container_requests(key, c, path)
        if c.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, req)
            init_peak = _max(init_peak, sidecars)
        else:
            init_peak = _max(init_peak, _add(req, sidecars))
    total = _max(_add(apps, sidecars), init_peak)
    pod_level = get(pod, "spec", "resources")
    if pod_level:
        level = _container_requests(key, {"resources": pod_level}, "spec")
        total.update({k: v for k, v in level.items() if k in ("cpu", "memory")})
    overhead = _resource_map(key, "spec.overhead", get(pod, "spec", "overhead"))
    for name, text in overhead.items():
        if name in ("cpu", "memory"):
            total = _add(total, {name: _quantity(key, f"spec.overhead[{name}]", text)})
    return total


def _gpu_share(key: str, annotations: Mapping[str, str], gpus: int) -> tuple[int, int]:
    """(gpus, gpu_milli) after the shared-GPU annotation."""
    where = f"annotation {GPU_MILLI_ANNOTATION}"
    if GPU_MILLI_ANNOTATION not in annotations:
        return gpus, GPU_MILLI
    milli = parse_int(key, where, annotations[GPU_MILLI_ANNOTATION], minimum=1)
    if milli > GPU_MILLI:
        raise WorkloadError(key, where, f"{milli} is over {GPU_MILLI} (one whole GPU); use nvidia.com/gpu for more")
    if milli < GPU_MILLI and gpus > 1:
        raise WorkloadError(key, where, f"a shared GPU ({milli} milli-GPU) is one GPU, but the pod requests "
                                        f"{gpus} nvidia.com/gpu; request 1 (or none) with a share")
    if milli < GPU_MILLI:
        return 1, milli
    return gpus, GPU_MILLI


def _merge_models(key: str, where: str, current: list[str] | None, new: Sequence[str]) -> list[str]:
    """Intersect allowed GPU models (case-insensitive); an empty result is a conflict."""
    new = [m.strip() for m in new if m.strip()]
    if current is None:
        return new
    wanted = {m.lower() for m in new}
    kept = [m for m in current if m.lower() in wanted]
    if not kept:
        raise WorkloadError(key, where, f"allows GPU models {', '.join(new)}, none of which is in "
                                        f"{', '.join(current)} allowed elsewhere in the pod")
    return kept


def _node_affinity(key: str, pod: Mapping[str, Any], selector: dict[str, str],
                   models: list[str] | None) -> list[str] | None:
    """Fold required node affinity into ``selector`` / GPU models; refuse what we cannot express."""
    affinity = get(pod, "spec", "affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        if get(affinity, kind, "requiredDuringSchedulingIgnoredDuringExecution"):
            raise UnsupportedConstraint(key, f"spec.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution",
                                        f"toposched does not implement required {kind}; use a gang with "
                                        "toposched.io/required-level, or leave the pod to the default scheduler")
    terms = _list(key, get(affinity, "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                           "nodeSelectorTerms"), f"{_AFFINITY}.nodeSelectorTerms")
    if not terms:
        return models
    if len(terms) > 1:
        raise UnsupportedConstraint(key, f"{_AFFINITY}.nodeSelectorTerms",
                                    f"{len(terms)} alternative terms (ORed) are not supported; use one term")
    term = terms[0] if isinstance(terms[0], Mapping) else {}
    if term.get("matchFields"):
        raise UnsupportedConstraint(key, f"{_AFFINITY}.nodeSelectorTerms[0].matchFields",
                                    "matchFields is not supported; use nodeSelector")
    for i, expr in enumerate(_list(key, term.get("matchExpressions"), f"{_AFFINITY}.nodeSelectorTerms[0].matchExpressions")):
        where = f"{_AFFINITY}.nodeSelectorTerms[0].matchExpressions[{i}]"
        label, op, values = get(expr, "key"), get(expr, "operator"), get(expr, "values") or []
        if not isinstance(label, str) or not isinstance(values, list):
            raise WorkloadError(key, where, "needs a key and a list of values")
        if op == "In" and label == GPU_PRODUCT_LABEL and values:
            models = _merge_models(key, where, models, [str(v) for v in values])
        elif op == "In" and len(values) == 1:
            value = str(values[0])
            if selector.get(label, value) != value:
                raise WorkloadError(key, where, f"{label} In [{value}] conflicts with nodeSelector "
                                                f"{label}={selector[label]}; no node can match both")
            selector[label] = value
        else:
            raise UnsupportedConstraint(key, where, f"{label} {op} {quote(values)} is not supported; only In with one value "
                                                    f"(or In with GPU models on {GPU_PRODUCT_LABEL})")
    return models


def _check_other_constraints(key: str, pod: Mapping[str, Any]) -> None:
    """Refuse hard topology spread, host ports and DRA claims (we would silently break them)."""
    for i, c in enumerate(_list(key, get(pod, "spec", "topologySpreadConstraints"), "spec.topologySpreadConstraints")):
        if get(c, "whenUnsatisfiable") in (None, "DoNotSchedule"):
            raise UnsupportedConstraint(key, f"spec.topologySpreadConstraints[{i}]",
                                        "hard topology spread (DoNotSchedule) is not supported; use ScheduleAnyway "
                                        "or toposched.io/spread-level")
    for field in ("containers", "initContainers"):
        for path, c in _containers(key, pod, field):
            for j, port in enumerate(_list(key, c.get("ports"), f"{path}.ports")):
                if get(port, "hostPort"):
                    raise UnsupportedConstraint(key, f"{path}.ports[{j}].hostPort",
                                                "host ports are not supported (toposched does not track them)")
    if get(pod, "spec", "resourceClaims"):
        raise UnsupportedConstraint(key, "spec.resourceClaims", "dynamic resource allocation (DRA) claims are "
                                                                "not supported yet")


def _tolerations(key: str, pod: Mapping[str, Any]) -> tuple[Toleration, ...]:
    out = []
    for i, t in enumerate(_list(key, get(pod, "spec", "tolerations"), "spec.tolerations")):
        where = f"spec.tolerations[{i}]"
        if not isinstance(t, Mapping):
            raise WorkloadError(key, where, "must be a mapping")
        for field in ("key", "operator", "value", "effect"):
            if t.get(field) is not None and not isinstance(t.get(field), str):
                raise WorkloadError(key, f"{where}.{field}", f"must be a string, not {type(t.get(field)).__name__}")
        op = t.get("operator") or "Equal"
        if op not in ("Equal", "Exists"):
            raise UnsupportedConstraint(key, f"{where}.operator", f"operator {quote(op)} is not supported "
                                                                   "(Equal or Exists)")
        data = {"key": t.get("key") or "", "operator": op, "value": t.get("value") or "", "effect": t.get("effect") or ""}
        try:
            out.append(Toleration(**data))
        except ValidationError:
            raise WorkloadError(key, where, f"effect {quote(data['effect'])} is not NoSchedule, PreferNoSchedule "
                                            "or NoExecute") from None
    return tuple(out)


def pod_resources(pod: Mapping[str, Any]) -> Resources:
    """The engine's view of one pod: requests, GPU share and models, node selector, tolerations, priority."""
    key = pod_key(pod)
    annotations = annotations_of(pod)
    _check_other_constraints(key, pod)
    req = effective_requests(pod)
    gpus, gpu_milli = _gpu_share(key, annotations, int(req.get(GPU_RESOURCE, 0)))

    raw_selector = get(pod, "spec", "nodeSelector") or {}
    if not isinstance(raw_selector, Mapping) or any(not isinstance(v, str) for v in raw_selector.values()):
        raise WorkloadError(key, "spec.nodeSelector", "must map label keys to strings")
    selector = dict(raw_selector)
    models: list[str] | None = None
    if GPU_MODELS_ANNOTATION in annotations:
        models = _merge_models(key, f"annotation {GPU_MODELS_ANNOTATION}", None,
                               annotations[GPU_MODELS_ANNOTATION].split(","))
    if GPU_PRODUCT_LABEL in selector:
        models = _merge_models(key, f"spec.nodeSelector[{GPU_PRODUCT_LABEL}]", models, [selector.pop(GPU_PRODUCT_LABEL)])
    models = _node_affinity(key, pod, selector, models)

    priority = get(pod, "spec", "priority") or 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise WorkloadError(key, "spec.priority", f"{quote(priority)} is not an integer")
    data = {
        "cpu_milli": math.ceil(req.get("cpu", Decimal(0)) * 1000),
        "memory_mib": math.ceil(req.get("memory", Decimal(0)) / _MIB),
        "gpus": gpus, "gpu_milli": gpu_milli, "gpu_models": tuple(models or ()),
        "extended": {k: int(v) for k, v in sorted(req.items()) if k not in MODELLED_RESOURCES and v > 0},
        "node_selector": selector, "tolerations": _tolerations(key, pod), "priority": priority,
    }
    try:
        return Resources(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "resources"
        raise WorkloadError(key, field, err["msg"].removeprefix("Value error, ")) from None


# --- owners and replica spread ----------------------------------------------------------


def owner_of(pod: Mapping[str, Any]) -> str | None:
    """``ns/Kind/name`` of the controlling owner; a Deployment's ReplicaSet becomes the Deployment."""
    ctrl = controller_of(pod)
    if ctrl is None or not ctrl.get("kind") or not ctrl.get("name"):
        return None
    kind, name = str(ctrl["kind"]), str(ctrl["name"])
    hash_ = labels_of(pod).get("pod-template-hash")
    if kind == "ReplicaSet" and hash_ and name.endswith("-" + hash_):
        kind, name = "Deployment", name[: -len(hash_) - 1]
    return f"{namespace_of(pod)}/{kind}/{name}"


def spread_level_of(pod: Mapping[str, Any], levels: Sequence[LevelSpec]) -> str | None:
    """The level replicas spread over: annotation ``toposched.io/spread-level``, else the narrowest level.

    ``host`` (or no levels at all) means spread over nodes, which the engine spells None.
    """
    raw = annotations_of(pod).get(SPREAD_LEVEL_ANNOTATION)
    if raw is None:
        return levels[-1].name if levels else None
    level = level_from_name(pod_key(pod), f"annotation {SPREAD_LEVEL_ANNOTATION}", raw, levels)
    return None if level == HOST_LEVEL else level


def pod_request(pod: Mapping[str, Any], levels: Sequence[LevelSpec]) -> PodRequest:
    """A single pod as the engine's ``PodRequest``; replicas of a Deployment/ReplicaSet/StatefulSet carry their owner."""
    owner = owner_of(pod)
    if owner is not None and owner.split("/")[1] not in REPLICA_KINDS:
        owner = None
    spread = spread_level_of(pod, levels) if owner is not None else None
    return PodRequest(name=pod_key(pod), owner=owner, spread_level=spread, **dict(pod_resources(pod)))
