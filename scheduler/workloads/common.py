"""Keys, errors and small readers shared by the workload translators.

Every Kubernetes object here is a plain dict in API JSON form (camelCase). Nothing in
this package talks to a cluster; the driver in scheduler/adapters hands objects in and
turns a ``WorkloadError`` into a Warning event on the pod (the pod stays pending).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from models.errors import ToposchedError
from models.readers.k8s_node import WELL_KNOWN_LEVEL_LABELS
from models.spec import LevelSpec

# --- our own annotations (all documented in docs/workloads.md) -------------------------
PREFIX = "toposched.io/"
GPU_MILLI_ANNOTATION = PREFIX + "gpu-milli"
GPU_MODELS_ANNOTATION = PREFIX + "gpu-models"
GANG_ANNOTATION = PREFIX + "gang"
GANG_SIZE_ANNOTATION = PREFIX + "gang-size"
GANG_MIN_ANNOTATION = PREFIX + "gang-min-members"
GANG_TIMEOUT_ANNOTATION = PREFIX + "gang-timeout-seconds"
REQUIRED_LEVEL_ANNOTATION = PREFIX + "required-level"
PREFERRED_LEVEL_ANNOTATION = PREFIX + "preferred-level"
SLICE_SIZE_ANNOTATION = PREFIX + "slice-size"
SLICE_LEVEL_ANNOTATION = PREFIX + "slice-level"
RAIL_ALIGNED_ANNOTATION = PREFIX + "rail-aligned"
SPREAD_LEVEL_ANNOTATION = PREFIX + "spread-level"
GPUS_ANNOTATION = PREFIX + "gpus"
ASSIGNMENT_ANNOTATION = PREFIX + "assignment"

# --- well-known keys of Kubernetes and the ecosystem (K8S.md section 4) -----------------
HOSTNAME_LABEL = "kubernetes.io/hostname"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"

# The pseudo-level "one node": narrower than every level of the spec (level names may not
# be "host", so it cannot clash). ``required_level="host"`` puts a whole gang on one node.
HOST_LEVEL = "host"


class WorkloadError(ToposchedError):
    """A pod (or its group's object) says something we cannot read; the pod stays pending.

    ``pod`` is the key of the pod the event goes on, ``where`` the offending label,
    annotation or field, ``problem`` what is wrong:
    ``pod ml/w-3: annotation kueue.x-k8s.io/podset-required-topology: "cloud.example/rack" is
    not a topology level of this cluster (levels: block, rack)``.
    """

    def __init__(self, pod: str, where: str, problem: str) -> None:
        self.pod = pod
        self.where = where
        self.problem = problem
        super().__init__(f"pod {pod}: {where}: {problem}")


class UnsupportedConstraint(WorkloadError):
    """The pod asks for a constraint toposched does not implement; refused, never ignored."""


class MissingGroupObject(WorkloadError):
    """The gang's PodGroup / job object is needed but was not given (yet); retry later."""


def quote(value: Any) -> str:
    """A value as it appears in messages: JSON-quoted (``"rack"``, ``-2``)."""
    return json.dumps(value)


def get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None where a step is missing or not a mapping."""
    cur = obj
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


def shape_problem(obj: Any) -> str | None:
    """What makes ``obj`` unreadable as a Kubernetes object at all (``metadata`` not a mapping
    or without a name, ``spec`` / ``status`` / labels / annotations of the wrong JSON type), as
    ``field: problem``; None when its shape is fine. The API server never sends such objects
    for built-in kinds, but a custom resource without a schema can carry anything."""
    if not isinstance(obj, Mapping):
        return f"the object: must be a mapping, not {type(obj).__name__}"
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return f"metadata: must be a mapping, not {type(meta).__name__}"
    if not isinstance(meta.get("name"), str) or not meta.get("name"):
        return "metadata.name: must be a non-empty string"
    if meta.get("namespace") is not None and not isinstance(meta.get("namespace"), str):
        return "metadata.namespace: must be a string"
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and (not isinstance(value, Mapping) or
                                  any(not isinstance(k, str) or not isinstance(v, str) for k, v in value.items())):
            return f"metadata.{field}: must map strings to strings"
    for field in ("spec", "status"):
        value = obj.get(field)
        if value is not None and not isinstance(value, Mapping):
            return f"{field}: must be a mapping, not {type(value).__name__}"
    return None


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference marked ``controller`` (None when there is none, or when
    ``ownerReferences`` is not a list: the API server refuses anything else)."""
    refs = get(obj, "metadata", "ownerReferences")
    refs = refs if isinstance(refs, list) else []
    return next((r for r in refs if isinstance(r, Mapping) and r.get("controller")), None)


def pod_key(pod: Mapping[str, Any]) -> str:
    """``namespace/name`` (namespace ``default`` when unset)."""
    ns = get(pod, "metadata", "namespace") or "default"
    name = get(pod, "metadata", "name") or get(pod, "metadata", "generateName") or "?"
    return f"{ns}/{name}"


def namespace_of(obj: Mapping[str, Any]) -> str:
    return get(obj, "metadata", "namespace") or "default"


def _string_map(obj: Mapping[str, Any], field: str) -> dict[str, str]:
    raw = get(obj, "metadata", field) or {}
    if not isinstance(raw, Mapping):
        raise WorkloadError(pod_key(obj), f"metadata.{field}", "must map keys to strings")
    for k, v in raw.items():
        if not isinstance(v, str):
            kind = field[:-1]
            raise WorkloadError(pod_key(obj), f"{kind} {k}", f"must be a string, not {type(v).__name__}")
    return dict(raw)


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return _string_map(obj, "labels")


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return _string_map(obj, "annotations")


def parse_int(pod: str, where: str, text: str, *, minimum: int | None = None) -> int:
    """An integer from a label/annotation value, at least ``minimum``."""
    s = text.strip()
    try:
        value = int(s)
    except ValueError:
        raise WorkloadError(pod, where, f"{quote(text)} is not an integer") from None
    if minimum is not None and value < minimum:
        what = "negative" if value < 0 else "too small"
        raise WorkloadError(pod, where, f"{value} is {what}; it must be at least {minimum}")
    return value


def parse_bool(pod: str, where: str, text: str) -> bool:
    s = text.strip().lower()
    if s in ("true", "yes", "1"):
        return True
    if s in ("false", "no", "0", ""):
        return False
    raise WorkloadError(pod, where, f"{quote(text)} is not true or false")


def level_names(levels: Sequence[LevelSpec]) -> list[str]:
    return [lv.name for lv in levels]


def level_rank(name: str, levels: Sequence[LevelSpec]) -> int:
    """0 for the widest level, larger is narrower; ``host`` is the narrowest of all."""
    names = level_names(levels)
    return len(names) if name == HOST_LEVEL else names.index(name)


def level_for_label(key: str, levels: Sequence[LevelSpec]) -> str | None:
    """Our level whose node label is ``key`` (``kubernetes.io/hostname`` is ``host``), or None."""
    if key == HOSTNAME_LABEL:
        return HOST_LEVEL
    for lv in levels:
        if lv.label_key() == key or (lv.label is None and WELL_KNOWN_LEVEL_LABELS.get(lv.name) == key):
            return lv.name
    return None


def _levels_text(levels: Sequence[LevelSpec]) -> str:
    return ", ".join(level_names(levels)) or "none"


def level_from_label(pod: str, where: str, key: str, levels: Sequence[LevelSpec]) -> str:
    """Like ``level_for_label`` but an unknown key is a ``WorkloadError``."""
    name = level_for_label(key.strip(), levels)
    if name is None:
        labels = ", ".join([*(lv.label_key() for lv in levels), HOSTNAME_LABEL])
        raise WorkloadError(pod, where, f"{quote(key)} is not a topology level of this cluster "
                                        f"(levels: {_levels_text(levels)}; their node labels: {labels})")
    return name


def level_from_name(pod: str, where: str, value: str, levels: Sequence[LevelSpec]) -> str:
    """A level given by name (or, leniently, by its node label key); ``host`` is one node."""
    v = value.strip()
    if v == HOST_LEVEL or v in level_names(levels):
        return v
    by_label = level_for_label(v, levels)
    if by_label is not None:
        return by_label
    raise WorkloadError(pod, where, f"{quote(value)} is not a topology level of this cluster "
                                    f"(levels: {_levels_text(levels)}, or host for one node)")
