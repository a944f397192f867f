"""Read a Kubernetes Node object (a plain dict of API JSON, camelCase) into a ``NodeSpec``.

No ``kubernetes`` import: the adapters hand us ``obj.to_dict()``-style or raw JSON dicts
with the API's camelCase keys. What is read (see docs/readers.md):

- resources from ``status.allocatable`` (``status.capacity`` when allocatable is absent):
  ``cpu`` -> ``cpu_milli``, ``memory`` -> ``memory_mib``, ``pods`` -> ``max_pods``,
  ``nvidia.com/gpu`` -> GPU count; every other entry (``rdma/ib``, ``vpc.amazonaws.com/efa``,
  ``hugepages-2Mi`` in bytes, ...) -> ``extended_resources`` (whole numbers; ``ephemeral-storage``
  is not placed and left out);
- GPU model / memory from the GPU Feature Discovery labels ``nvidia.com/gpu.product`` /
  ``nvidia.com/gpu.memory`` (MiB); the NVLink domain from ``nvidia.com/gpu.clique``;
- intra-node topology from our annotation ``toposched.io/topology``, else N GPUs without NVLink;
- level values from each level's label key, with documented well-known fallbacks;
- state: the Ready condition, ``spec.unschedulable`` and ``spec.taints``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from pydantic import ValidationError

from models.errors import SpecError
from models.readers.annotation import ANNOTATION_KEY, decode_topology
from models.spec import (
    NOT_EXTENDED,
    GpuSpec,
    LevelSpec,
    NodeSpec,
    NodeStateSpec,
    NodeTopologySpec,
    TaintSpec,
    check_extended_resources,
    is_node_name,
    spec_error_from_validation,
)

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Where a node's NVLink domain comes from, first present wins: GPU Feature Discovery's
# clique, NVIDIA Topograph's accelerator domain, an EKS UltraServer id.
CLIQUE_LABELS = ("nvidia.com/gpu.clique", "network.topology.nvidia.com/accelerator", "topology.k8s.aws/ultraserver-id")
# Label families that describe the network, widest level first, in order of precedence.
LEVEL_FAMILIES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("topograph", (("core", "network.topology.nvidia.com/core"),
                   ("spine", "network.topology.nvidia.com/spine"),
                   ("leaf", "network.topology.nvidia.com/leaf"))),
    ("gke", (("block", "cloud.google.com/gce-topology-block"),
             ("subblock", "cloud.google.com/gce-topology-subblock"),
             ("gce-host", "cloud.google.com/gce-topology-host"))),
    ("eks", tuple((f"layer{i}", f"topology.k8s.aws/network-node-layer-{i}") for i in range(1, 5))),
)
# Fallback label for a level that names no ``label`` and whose default key is absent.
WELL_KNOWN_LEVEL_LABELS: dict[str, str] = {
    "zone": ZONE_LABEL, **{name: key for _, fam in LEVEL_FAMILIES for name, key in fam},
}

_QUANTITY_RE = re.compile(r"([+-]?)(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE])?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MIB = Decimal(1024 * 1024)


def parse_quantity(text: Any, *, source: str | None = None, path: str | None = None) -> Decimal:
    """A Kubernetes quantity (``96``, ``95500m``, ``2Ti``, ``1e3``, ``1.5Gi``) as an exact ``Decimal``."""
    s = str(text) if isinstance(text, int | float) and not isinstance(text, bool) else text
    m = _QUANTITY_RE.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise SpecError("not a Kubernetes quantity", source=source, path=path, value=text, has_value=True,
                        fix="use a number with an optional suffix: m, k, M, G, T, P, E, Ki..Ei or an exponent (1e3)")
    sign, number, suffix = m.groups()
    value = Decimal(number)
    if suffix in _BINARY:
        value *= Decimal(1024) ** _BINARY[suffix]
    elif suffix and len(suffix) > 1 and suffix[0] in "eE":
        exp = int(suffix[1:])
        if abs(exp) > 64:
            raise SpecError("quantity exponent out of range", source=source, path=path, value=text)
        value = value.scaleb(exp)
    elif suffix:
        value = value.scaleb(_DECIMAL[suffix])
    return -value if sign == "-" else value


@dataclass(frozen=True)
class NodeResources:
    """What the node offers for scheduling (``status.allocatable``)."""

    cpu_milli: int | None
    memory_mib: int | None
    gpus: int
    max_pods: int | None
    extended: dict[str, int] = field(default_factory=dict)


def _get(obj: Mapping[str, Any], *keys: str) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


def _where(obj: Mapping[str, Any], source: str | None) -> tuple[str, str]:
    name = _get(obj, "metadata", "name")
    if not isinstance(name, str) or not name:
        raise SpecError("a Node without a name", source=source, path="metadata.name")
    if not is_node_name(name):
        raise SpecError("node name is not a valid Kubernetes name", source=source, path="metadata.name",
                        value=name, fix="use lower-case letters, digits, '-' and '.'")
    where = f"node {name}"
    return name, f"{source}: {where}" if source else where


def node_resources(obj: Mapping[str, Any], *, source: str | None = None) -> NodeResources:
    """CPU (milli), memory (MiB), GPUs, pods and extended resources of a Node, from allocatable (else capacity)."""
    _, where = _where(obj, source)
    field = "allocatable"
    res = _get(obj, "status", "allocatable")
    if not res:
        field, res = "capacity", _get(obj, "status", "capacity") or {}
    if not isinstance(res, Mapping):
        raise SpecError("must be a mapping of resource name -> quantity", source=where, path=f"status.{field}")

    def q(key: str) -> Decimal | None:
        if key not in res:
            return None
        v = parse_quantity(res[key], source=where, path=f"status.{field}.{key}")
        if v < 0:
            raise SpecError("must not be negative", source=where, path=f"status.{field}.{key}", value=res[key])
        return v

    def whole(key: str, v: Decimal | None) -> int | None:
        if v is None:
            return None
        if v != v.to_integral_value():
            raise SpecError("must be a whole number", source=where, path=f"status.{field}.{key}", value=res[key])
        return int(v)

    cpu, mem = q("cpu"), q("memory")
    gpus = whole(GPU_RESOURCE, q(GPU_RESOURCE)) or 0
    pods = whole("pods", q("pods"))
    if pods is not None and pods < 1:
        raise SpecError("must be at least 1", source=where, path=f"status.{field}.pods", value=res["pods"])
    extended: dict[str, int] = {}
    for key in sorted((k for k in res if k not in NOT_EXTENDED), key=str):
        if not isinstance(key, str):
            raise SpecError("resource names must be strings", source=where, path=f"status.{field}", value=key)
        amount = whole(key, q(key))
        assert amount is not None
        try:
            check_extended_resources({key: amount})
        except ValueError as exc:
            raise SpecError(str(exc), source=where, path=f"status.{field}.{key}") from None
        extended[key] = amount
    return NodeResources(
        cpu_milli=int((cpu * 1000).to_integral_value(ROUND_FLOOR)) if cpu is not None else None,
        memory_mib=int((mem / _MIB).to_integral_value(ROUND_FLOOR)) if mem is not None else None,
        gpus=gpus,
        max_pods=pods,
        extended=extended,
    )


def _labels(obj: Mapping[str, Any], where: str) -> dict[str, str]:
    labels = _get(obj, "metadata", "labels") or {}
    if not isinstance(labels, Mapping) or any(not isinstance(v, str) for v in labels.values()):
        raise SpecError("must map label keys to strings", source=where, path="metadata.labels")
    return dict(labels)


def level_values(labels: Mapping[str, str], levels: Sequence[LevelSpec]) -> dict[str, str]:
    """Each level's value on a node: its label key, else (no explicit label) the well-known key.

    A level the node has no (non-empty) label for is left out.
    """
    out = {}
    for lv in levels:
        keys = [lv.label_key()]
        if lv.label is None and lv.name in WELL_KNOWN_LEVEL_LABELS:
            keys.append(WELL_KNOWN_LEVEL_LABELS[lv.name])
        value = next((labels[k] for k in keys if labels.get(k)), None)
        if value is not None:
            out[lv.name] = value
    return out


def levels_from_labels(nodes: Sequence[Mapping[str, Any]]) -> list[LevelSpec]:
    """Infer the ordered level list (widest first) from the label families on all nodes.

    ``topology.kubernetes.io/zone`` comes first when every node has it; then the first of
    Topograph, GKE, EKS of which every node carries at least one key, with those of its
    keys that every node carries. Families are not mixed: their trees need not nest.
    """
    label_sets = []
    for obj in nodes:
        _, where = _where(obj, None)
        label_sets.append({k for k, v in _labels(obj, where).items() if v})
    if not label_sets:
        return []
    common = set.intersection(*label_sets)
    out = [LevelSpec(name="zone", label=ZONE_LABEL)] if ZONE_LABEL in common else []
    for _, family in LEVEL_FAMILIES:
        present = [(name, key) for name, key in family if key in common]
        if present:
            out += [LevelSpec(name=name, label=key) for name, key in present]
            break
    return out


def _state(obj: Mapping[str, Any], where: str) -> NodeStateSpec:
    conditions = _get(obj, "status", "conditions") or []
    if not isinstance(conditions, list):
        raise SpecError("must be a list", source=where, path="status.conditions")
    ready = False
    for c in conditions:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            ready = c.get("status") == "True"
    unschedulable = _get(obj, "spec", "unschedulable") or False
    if not isinstance(unschedulable, bool):
        raise SpecError("must be true or false", source=where, path="spec.unschedulable", value=unschedulable)
    raw_taints = _get(obj, "spec", "taints") or []
    if not isinstance(raw_taints, list):
        raise SpecError("must be a list", source=where, path="spec.taints")
    taints = []
    for i, t in enumerate(raw_taints):
        if not isinstance(t, Mapping):
            raise SpecError("must be a mapping", source=where, path=f"spec.taints[{i}]", value=t)
        data = {k: t[k] for k in ("key", "value", "effect") if t.get(k) is not None}
        try:
            taints.append(TaintSpec.model_validate(data))
        except ValidationError as exc:
            err = spec_error_from_validation(exc, data, where)
            raise SpecError(err.problem, source=where, path=f"spec.taints[{i}].{err.path}", value=err.value,
                            has_value=err.value is not None, fix=err.fix) from None
    return NodeStateSpec(ready=ready, unschedulable=unschedulable, taints=tuple(taints))


def node_from_k8s(obj: Mapping[str, Any], levels: Sequence[LevelSpec], *, source: str | None = None) -> NodeSpec:
    """A ``NodeSpec`` from a Kubernetes Node dict; errors name the node and the field."""
    name, where = _where(obj, source)
    labels = _labels(obj, where)
    res = node_resources(obj, source=source)
    model = labels.get(GPU_PRODUCT_LABEL, "")
    memory_mib = 0
    if labels.get(GPU_MEMORY_LABEL):
        raw = labels[GPU_MEMORY_LABEL]
        if not raw.isdigit():
            raise SpecError("must be the per-GPU memory in MiB (an integer)", source=where,
                            path=f"metadata.labels[{GPU_MEMORY_LABEL}]", value=raw)
        memory_mib = int(raw)
    annotations = _get(obj, "metadata", "annotations") or {}
    text = annotations.get(ANNOTATION_KEY) if isinstance(annotations, Mapping) else None
    if text is not None:
        if not isinstance(text, str):
            raise SpecError("must be a string", source=where, path=f"metadata.annotations[{ANNOTATION_KEY}]")
        topo = decode_topology(text, where)
        gpus = topo.gpus
        if (not gpus.model and model) or (not gpus.memory_mib and memory_mib):
            gpus = GpuSpec(count=gpus.count, model=gpus.model or model, memory_mib=gpus.memory_mib or memory_mib)
            topo = topo.model_copy(update={"gpus": gpus})
    else:
        topo = NodeTopologySpec(gpus=GpuSpec(count=res.gpus, model=model, memory_mib=memory_mib))
    clique = next((labels[k] for k in CLIQUE_LABELS if labels.get(k)), None)
    data: dict[str, Any] = {
        "name": name, "topology": topo, "levels": level_values(labels, levels), "clique": clique,
        "labels": labels, "state": _state(obj, where),
    }
    if res.cpu_milli is not None:
        data["cpu_milli"] = res.cpu_milli
    if res.memory_mib is not None:
        data["memory_mib"] = res.memory_mib
    if res.max_pods is not None:
        data["max_pods"] = res.max_pods
    if res.extended:
        data["extended_resources"] = res.extended
    try:
        return NodeSpec(**data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, data, where) from None
