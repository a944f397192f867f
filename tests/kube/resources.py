"""The resource types the test apiserver serves, with their defaulting, validation and update rules.

Each ``ResourceType`` mirrors the registry strategy of the real type (pkg/registry/...): whether it is
namespaced, has a status subresource, tracks ``metadata.generation``, allows an update without
``resourceVersion``, returns the deleted object, and which fields a field selector may name.
events.k8s.io/v1 Event is a *view* of the core/v1 Event storage, converted on the way in and out, as in
kube-apiserver (both APIs list the same events).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .status import ApiError, FieldCause, bad_request, invalid

Obj = dict[str, Any]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _get(obj: Obj, dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


BOOL_FIELDS = frozenset({"spec.unschedulable", "spec.hostNetwork"})  # Go bools: unset reads "false"


def _as_field(value: Any) -> str:
    """Field selector string form of a value (Go's fmt of bools, empty for missing)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class ResourceType:
    """One served resource (group/version/plural) and the strategy its registry uses."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    storage: str = ""  # types sharing a storage see the same objects (core and events.k8s.io events)
    has_status: bool = False
    tracks_generation: bool = False
    unconditional_update: bool = True
    create_on_update: bool = False
    returns_deleted_object: bool = False
    builtin: bool = True  # built-in types accept strategic merge patch; list items omit kind/apiVersion
    struct_fields: tuple[str, ...] = ()  # Go struct fields that always serialize, at least as {}
    selectable_fields: tuple[str, ...] = ()
    field_aliases: dict[str, str] = field(default_factory=dict)
    name_pattern: re.Pattern[str] = _DNS_SUBDOMAIN
    default: Callable[[Obj], None] | None = None
    validate: Callable[[Obj], list[FieldCause]] | None = None
    validate_update: Callable[[Obj, Obj], list[FieldCause]] | None = None
    to_storage: Callable[[Obj], Obj] | None = None
    from_storage: Callable[[Obj], Obj] | None = None

    def __post_init__(self) -> None:
        if not self.storage:
            self.storage = self.qualified

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def fill_structs(self, obj: Obj) -> None:
        """Give absent struct fields their serialized zero value ``{}``, as a Go server does."""
        for name in self.struct_fields:
            if not isinstance(obj.get(name), dict):
                obj[name] = {}

    def field_values(self, obj: Obj) -> dict[str, str]:
        """String values of every selectable field of ``obj`` (in this type's own field names)."""
        values = {"metadata.name": _as_field(_get(obj, "metadata.name"))}
        if self.namespaced:
            values["metadata.namespace"] = _as_field(_get(obj, "metadata.namespace"))
        for name in self.selectable_fields:
            value = _get(obj, self.field_aliases.get(name, name))
            values[name] = _as_field(False if value is None and name in BOOL_FIELDS else value)
        return values

    def supports_field(self, name: str) -> bool:
        return name == "metadata.name" or (self.namespaced and name == "metadata.namespace") or name in self.selectable_fields

    def external(self, stored: Obj) -> Obj:
        """The object as this API version shows it (stored objects are never mutated)."""
        return self.from_storage(stored) if self.from_storage else stored

    def internal(self, obj: Obj) -> Obj:
        return self.to_storage(obj) if self.to_storage else obj


def _required(obj: Obj, dotted: str, causes: list[FieldCause]) -> None:
    value = _get(obj, dotted)
    if value in (None, "", [], {}):
        causes.append(FieldCause(dotted, "FieldValueRequired", "Required value"))


def _max_len(obj: Obj, dotted: str, limit: int, causes: list[FieldCause]) -> None:
    value = _get(obj, dotted)
    if isinstance(value, str) and len(value.encode()) > limit:
        causes.append(FieldCause(dotted, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes"))


# --- timestamps ---------------------------------------------------------------------------------------------

# metav1.Time parses time.RFC3339 (fraction optional, zone required) and prints whole seconds in UTC;
# metav1.MicroTime parses RFC3339Micro, which demands exactly six fractional digits.
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_RFC3339_MICRO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{6})(Z|[+-]\d{2}:\d{2})$")
_LAYOUT_TIME = "2006-01-02T15:04:05Z07:00"
_LAYOUT_MICRO = "2006-01-02T15:04:05.000000Z07:00"

# Storage kind -> (dotted path with [] for list items, "time" | "micro").
TIME_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "pods": (("status.conditions[].lastTransitionTime", "time"), ("status.conditions[].lastProbeTime", "time"),
             ("status.startTime", "time")),
    "nodes": (("status.conditions[].lastHeartbeatTime", "time"), ("status.conditions[].lastTransitionTime", "time"),
              ("spec.taints[].timeAdded", "time")),
    "leases.coordination.k8s.io": (("spec.acquireTime", "micro"), ("spec.renewTime", "micro")),
    "events": (("firstTimestamp", "time"), ("lastTimestamp", "time"), ("eventTime", "micro"),
               ("series.lastObservedTime", "micro")),
    "poddisruptionbudgets.policy": (("status.conditions[].lastTransitionTime", "time"),),
}


def _parse_time(text: Any, kind: str) -> str:
    """Parse like Go's metav1 (Micro)Time.UnmarshalJSON; return the form the server writes back."""
    layout = _LAYOUT_MICRO if kind == "micro" else _LAYOUT_TIME
    pattern = _RFC3339_MICRO if kind == "micro" else _RFC3339
    match = pattern.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'parsing time "{text}" as "{layout}": cannot parse "{text}" as "{layout}"')
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction = (match[7] or ".0")[1:]
    micros = int((fraction + "000000")[:6])
    zone = match[8]
    offset = dt.timedelta(0) if zone == "Z" else (1 if zone[0] == "+" else -1) * dt.timedelta(
        hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        value = dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=dt.timezone(offset))
    except ValueError as exc:
        raise ValueError(f'parsing time "{text}": {exc}') from None
    utc = value.astimezone(dt.UTC)
    if kind == "micro":
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _walk_times(node: Any, parts: list[str], kind: str) -> None:
    if not parts or not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    is_list = head.endswith("[]")
    key = head[:-2] if is_list else head
    if key not in node or node[key] is None:
        return
    if is_list:
        for item in node[key] if isinstance(node[key], list) else []:
            _walk_times(item, rest, kind)
    elif rest:
        _walk_times(node[key], rest, kind)
    else:
        node[key] = _parse_time(node[key], kind)


def normalize_times(rtype: ResourceType, obj: Obj) -> None:
    """Check and rewrite the timestamp fields of a built-in object in place (400 BadRequest if unparsable)."""
    for path, kind in TIME_FIELDS.get(rtype.storage, ()):
        try:
            _walk_times(obj, path.split("."), kind)
        except ValueError as exc:
            raise bad_request(f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: '
                              f"{exc}") from None


# --- pods -------------------------------------------------------------------------------------------------

POD_FIELDS = (
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
    "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
)


def _default(obj: Obj, key: str, value: Any) -> None:
    """Go defaulting: a zero string or nil pointer gets the default."""
    if obj.get(key) in (None, ""):
        obj[key] = value


def _default_pod(pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    _default(spec, "schedulerName", "default-scheduler")
    _default(spec, "restartPolicy", "Always")
    _default(spec, "dnsPolicy", "ClusterFirst")
    _default(spec, "terminationGracePeriodSeconds", 30)
    _default(spec, "securityContext", {})
    # The Priority admission plugin resolves priority; without a class the default is 0.
    _default(spec, "priority", 0)
    _default(spec, "preemptionPolicy", "PreemptLowerPriority")
    _default(spec, "enableServiceLinks", True)
    # DefaultTolerationSeconds admission (on in every cluster): tolerate not-ready/unreachable NoExecute 300 s.
    tolerations = spec.get("tolerations") if isinstance(spec.get("tolerations"), list) else []
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(isinstance(t, dict) and t.get("key") == taint and t.get("effect") in (None, "", "NoExecute")
                   for t in tolerations):
            tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    spec["tolerations"] = tolerations
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            _default(container, "terminationMessagePath", "/dev/termination-log")
            _default(container, "terminationMessagePolicy", "File")
            _default(container, "imagePullPolicy", "IfNotPresent")
            _default(container, "resources", {})
    if not isinstance(pod.get("status"), dict):
        pod["status"] = {}
    _default(pod["status"], "phase", "Pending")


def _validate_pod(pod: Obj) -> list[FieldCause]:
    causes: list[FieldCause] = []
    spec = pod.get("spec") or {}
    containers = spec.get("containers")
    if not containers:
        causes.append(FieldCause("spec.containers", "FieldValueRequired", "Required value"))
    seen: set[str] = set()
    for kind in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(kind) or []):
            where = f"spec.{kind}[{i}]"
            if not isinstance(c, dict):
                causes.append(FieldCause(where, "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append(FieldCause(f"{where}.name", "FieldValueRequired", "Required value"))
            elif name in seen:
                causes.append(FieldCause(f"{where}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
            else:
                seen.add(name)
            if not c.get("image"):
                causes.append(FieldCause(f"{where}.image", "FieldValueRequired", "Required value"))
    if spec.get("schedulingGates") and spec.get("nodeName"):
        causes.append(FieldCause("spec.nodeName", "FieldValueForbidden",
                                 "Forbidden: cannot be set until all schedulingGates have been cleared"))
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        causes.append(FieldCause("spec.restartPolicy", "FieldValueNotSupported",
                                 f'Unsupported value: "{spec.get("restartPolicy")}": supported values: "Always", "Never", "OnFailure"'))
    return causes


_POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
    "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _mutable_masked(spec: Obj, gated: bool) -> Obj:
    masked = copy.deepcopy(spec)
    for kind in ("containers", "initContainers"):
        for c in masked.get(kind) or []:
            if isinstance(c, dict):
                c.pop("image", None)
    for name in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates"):
        masked.pop(name, None)
    if gated:  # mutable scheduling directives of gated pods (Kueue injects node selectors this way)
        masked.pop("nodeSelector", None)
        masked.pop("affinity", None)
    return masked


def _validate_pod_update(old: Obj, new: Obj) -> list[FieldCause]:
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    causes = []
    old_gates = {g.get("name") for g in old_spec.get("schedulingGates") or []}
    new_gates = {g.get("name") for g in new_spec.get("schedulingGates") or []}
    added = sorted(n for n in new_gates - old_gates if n)
    if added:
        causes.append(FieldCause("spec.schedulingGates", "FieldValueForbidden",
                                 f"Forbidden: only deletion is allowed, but found new scheduling gate '{added[0]}'"))
    old_tol = old_spec.get("tolerations") or []
    new_tol = new_spec.get("tolerations") or []
    if any(t not in new_tol for t in old_tol):
        causes.append(FieldCause("spec.tolerations", "FieldValueForbidden",
                                 "Forbidden: existing toleration can not be modified except its tolerationSeconds"))
    if _mutable_masked(old_spec, bool(old_gates)) != _mutable_masked(new_spec, bool(old_gates)):
        causes.append(FieldCause("spec", "FieldValueForbidden", _POD_UPDATE_FORBIDDEN))
    return causes


def _default_namespace(namespace: Obj) -> None:
    if not isinstance(namespace.get("status"), dict):
        namespace["status"] = {}
    _default(namespace["status"], "phase", "Active")


# --- nodes, leases ----------------------------------------------------------------------------------------


def _validate_node(node: Obj) -> list[FieldCause]:
    causes: list[FieldCause] = []
    for i, taint in enumerate(_get(node, "spec.taints") or []):
        if taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(FieldCause(f"spec.taints[{i}].effect", "FieldValueNotSupported",
                                     f'Unsupported value: "{taint.get("effect")}": supported values: '
                                     '"NoSchedule", "PreferNoSchedule", "NoExecute"'))
        if not taint.get("key"):
            causes.append(FieldCause(f"spec.taints[{i}].key", "FieldValueRequired", "Required value"))
    return causes


def _validate_lease(lease: Obj) -> list[FieldCause]:
    causes: list[FieldCause] = []
    duration = _get(lease, "spec.leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        causes.append(FieldCause("spec.leaseDurationSeconds", "FieldValueInvalid",
                                 f"Invalid value: {duration}: must be greater than 0"))
    transitions = _get(lease, "spec.leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        causes.append(FieldCause("spec.leaseTransitions", "FieldValueInvalid",
                                 f"Invalid value: {transitions}: must be greater than or equal to 0"))
    return causes


# --- poddisruptionbudgets (policy/v1) ----------------------------------------------------------------------

# policy/v1 PodDisruptionBudgetStatus: these int32 fields have no omitempty, so a fresh status shows them as 0.
_PDB_STATUS_INTS = ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods")
_PERCENT = re.compile(r"^[0-9]+%$")
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _default_pdb(pdb: Obj) -> None:
    """PrepareForCreate: the status is reset (the disruption controller fills it in later)."""
    pdb["status"] = {name: 0 for name in _PDB_STATUS_INTS}


def _validate_int_or_percent(value: Any, where: str, causes: list[FieldCause]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | str):
        causes.append(FieldCause(where, "FieldValueInvalid", f"Invalid value: {value!r}: must be an integer or a "
                                                             "percentage"))
    elif isinstance(value, int):
        if value < 0:
            causes.append(FieldCause(where, "FieldValueInvalid",
                                     f"Invalid value: {value}: must be greater than or equal to 0"))
    elif not _PERCENT.match(value):
        causes.append(FieldCause(where, "FieldValueInvalid",
                                 f'Invalid value: "{value}": a valid percent string must be a numeric string '
                                 "followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                                 "'[0-9]+%')"))
    elif int(value[:-1]) > 100:
        causes.append(FieldCause(where, "FieldValueInvalid", f'Invalid value: "{value}": must not be greater than '
                                                             "100%"))


def _validate_label_selector(selector: Any, where: str, causes: list[FieldCause]) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict):
        causes.append(FieldCause(where, "FieldValueInvalid", "Invalid value: must be an object"))
        return
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        at = f"{where}.matchExpressions[{i}]"
        op = expr.get("operator") if isinstance(expr, dict) else None
        values = (expr.get("values") or []) if isinstance(expr, dict) else []
        if op in ("In", "NotIn") and not values:
            causes.append(FieldCause(f"{at}.values", "FieldValueRequired",
                                     "Required value: must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and values:
            causes.append(FieldCause(f"{at}.values", "FieldValueForbidden",
                                     "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        elif op not in _SELECTOR_OPERATORS:
            causes.append(FieldCause(f"{at}.operator", "FieldValueInvalid",
                                     f'Invalid value: "{op}": not a valid selector operator'))


def _validate_pdb(pdb: Obj) -> list[FieldCause]:
    """ValidatePodDisruptionBudget (spec and status) of policy/v1, the parts a test can trip over."""
    causes: list[FieldCause] = []
    spec = pdb.get("spec") or {}
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        causes.append(FieldCause("spec", "FieldValueInvalid",
                                 "Invalid value: minAvailable and maxUnavailable cannot be both set"))
    _validate_int_or_percent(spec.get("minAvailable"), "spec.minAvailable", causes)
    _validate_int_or_percent(spec.get("maxUnavailable"), "spec.maxUnavailable", causes)
    _validate_label_selector(spec.get("selector"), "spec.selector", causes)
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in ("IfHealthyBudget", "AlwaysAllow"):
        causes.append(FieldCause("spec.unhealthyPodEvictionPolicy", "FieldValueNotSupported",
                                 f'Unsupported value: "{policy}": supported values: "AlwaysAllow", "IfHealthyBudget"'))
    status = pdb.get("status") or {}
    for name in _PDB_STATUS_INTS:
        value = status.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            causes.append(FieldCause(f"status.{name}", "FieldValueInvalid",
                                     f"Invalid value: {value}: must be greater than or equal to 0"))
    return causes


# --- events (core/v1 storage, events.k8s.io/v1 view) -----------------------------------------------------

# events.k8s.io/v1 field -> core/v1 field (pkg/apis/events/v1 conversion).
_EVENT_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_EVENT_RENAMES_BACK = {v: k for k, v in _EVENT_RENAMES.items()}

CORE_EVENT_FIELDS = (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
    "reason", "reportingComponent", "source", "type",
)


def _events_v1_to_core(obj: Obj) -> Obj:
    core = {_EVENT_RENAMES.get(k, k): v for k, v in obj.items()}
    core["apiVersion"], core["kind"] = "v1", "Event"
    return core


def _core_to_events_v1(obj: Obj) -> Obj:
    out = {_EVENT_RENAMES_BACK.get(k, k): v for k, v in obj.items()}
    if isinstance(out.get("deprecatedSource"), dict) and not out["deprecatedSource"]:
        out.pop("deprecatedSource")
    out["apiVersion"], out["kind"] = "events.k8s.io/v1", "Event"
    return out


def _validate_core_event(event: Obj) -> list[FieldCause]:
    causes: list[FieldCause] = []
    ns = _get(event, "metadata.namespace")
    involved_ns = _get(event, "involvedObject.namespace")
    if involved_ns and ns and involved_ns != ns:
        causes.append(FieldCause("involvedObject.namespace", "FieldValueInvalid",
                                 f'Invalid value: "{involved_ns}": does not match event.namespace'))
    if event.get("type") not in (None, "", "Normal", "Warning"):
        causes.append(FieldCause("type", "FieldValueNotSupported",
                                 f'Unsupported value: "{event.get("type")}": supported values: "Normal", "Warning"'))
    return causes


def _validate_events_v1(event: Obj) -> list[FieldCause]:
    """Rules of events.k8s.io/v1 creates (field names are the core ones: validation runs after conversion)."""
    causes: list[FieldCause] = []
    names = _EVENT_RENAMES_BACK
    for core_field in ("eventTime", "reportingComponent", "reportingInstance", "action", "reason"):
        if event.get(core_field) in (None, ""):
            causes.append(FieldCause(names.get(core_field, core_field), "FieldValueRequired", "Required value"))
    for core_field, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128), ("message", 1024)):
        value = event.get(core_field)
        if isinstance(value, str) and len(value.encode()) > limit:
            causes.append(FieldCause(names.get(core_field, core_field), "FieldValueTooLong",
                                     f"Too long: may not be more than {limit} bytes"))
    if event.get("type") not in ("Normal", "Warning"):
        causes.append(FieldCause("type", "FieldValueNotSupported",
                                 f'Unsupported value: "{event.get("type") or ""}": supported values: "Normal", "Warning"'))
    series = event.get("series")
    if series is not None:
        if not isinstance(series.get("count"), int) or series["count"] < 2:
            causes.append(FieldCause("series.count", "FieldValueInvalid",
                                     f"Invalid value: {series.get('count')}: should be at least 2"))
        if not series.get("lastObservedTime"):
            causes.append(FieldCause("series.lastObservedTime", "FieldValueRequired", "Required value"))
    regarding_ns = _get(event, "involvedObject.namespace")
    ns = _get(event, "metadata.namespace")
    if regarding_ns and ns and regarding_ns != ns:
        causes.append(FieldCause("regarding.namespace", "FieldValueInvalid",
                                 f'Invalid value: "{regarding_ns}": does not match event.namespace'))
    return causes


# --- the registry ----------------------------------------------------------------------------------------


def builtin_types() -> list[ResourceType]:
    """Every built-in type this server serves."""
    return [
        ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, has_status=True,
                     struct_fields=("spec", "status"),
                     selectable_fields=("status.phase",), name_pattern=_DNS_LABEL,
                     default=_default_namespace),
        ResourceType("", "v1", "nodes", "Node", namespaced=False, has_status=True, struct_fields=("spec", "status"),
                     selectable_fields=("spec.unschedulable",), validate=_validate_node),
        ResourceType("", "v1", "pods", "Pod", namespaced=True, has_status=True, tracks_generation=True,
                     struct_fields=("spec", "status"),
                     returns_deleted_object=True, selectable_fields=POD_FIELDS, default=_default_pod,
                     validate=_validate_pod, validate_update=_validate_pod_update),
        ResourceType("", "v1", "events", "Event", namespaced=True, create_on_update=True,
                     selectable_fields=CORE_EVENT_FIELDS, validate=_validate_core_event),
        ResourceType("events.k8s.io", "v1", "events", "Event", namespaced=True, storage="events",
                     create_on_update=True,
                     selectable_fields=("regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                                        "reason", "reportingController", "type"),
                     field_aliases={"regarding.kind": "involvedObject.kind",
                                    "regarding.namespace": "involvedObject.namespace",
                                    "regarding.name": "involvedObject.name", "regarding.uid": "involvedObject.uid",
                                    "reportingController": "reportingComponent"},
                     validate=_validate_events_v1, to_storage=_events_v1_to_core, from_storage=_core_to_events_v1),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True, struct_fields=("spec",),
                     unconditional_update=False, create_on_update=True,  # the lease strategy
                     validate=_validate_lease),
        ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", namespaced=True,
                     has_status=True, tracks_generation=True, struct_fields=("spec", "status"),
                     default=_default_pdb, validate=_validate_pdb),
    ]


def custom_type(group: str, version: str, plural: str, kind: str, namespaced: bool = True) -> ResourceType:
    """A CustomResourceDefinition-backed type: status subresource, generation, CAS required on update."""
    return ResourceType(group, version, plural, kind, namespaced=namespaced, has_status=True,
                        tracks_generation=True, unconditional_update=False, builtin=False)


DEFAULT_CRDS = (
    ("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup", True),
    ("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup", True),
    ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", True),
    ("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", True),
    ("topology.volcano.sh", "v1alpha1", "hypernodes", "HyperNode", False),
    ("kueue.x-k8s.io", "v1beta2", "topologies", "Topology", False),
)


def check_name(rtype: ResourceType, obj: Obj) -> None:
    """Name validation shared by every type (422 like ValidateObjectMeta)."""
    name = _get(obj, "metadata.name") or ""
    if not name:
        raise invalid(rtype.kind, rtype.group, "", [FieldCause("metadata.name", "FieldValueRequired",
                                                               "Required value: name or generateName is required")])
    limit = 63 if rtype.name_pattern is _DNS_LABEL else 253
    if len(name) > limit or not rtype.name_pattern.match(name):
        what = "RFC 1123 label" if limit == 63 else "RFC 1123 subdomain"
        raise invalid(rtype.kind, rtype.group, name, [FieldCause(
            "metadata.name", "FieldValueInvalid",
            f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric characters, '
            "'-' or '.', and must start and end with an alphanumeric character")])


def run_validation(rtype: ResourceType, obj: Obj, old: Obj | None = None) -> None:
    """Raise 422 Invalid when the type's rules reject ``obj`` (``old`` set on updates)."""
    causes = list(rtype.validate(obj)) if rtype.validate else []
    if old is not None and rtype.validate_update:
        causes += rtype.validate_update(old, obj)
    if causes:
        raise invalid(rtype.kind, rtype.group, _get(obj, "metadata.name") or "", causes)


def check_kind(rtype: ResourceType, obj: Obj) -> None:
    """400 when the body names another kind or apiVersion than the URL (decoding into the wrong type)."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind and kind != rtype.kind:
        raise bad_request(f"the body of the request was of kind {kind!r}, but the URL serves {rtype.kind!r}")
    if api_version and api_version != rtype.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match the expected API version "
                          f"({rtype.api_version})")


__all__ = ["ApiError", "ResourceType", "builtin_types", "custom_type", "DEFAULT_CRDS", "check_name",
           "run_validation", "check_kind", "normalize_times"]
