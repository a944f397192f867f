"""kube-scheduler's extender wire format (``k8s.io/kube-scheduler/extender/v1``) as pydantic models.

The Go structs carry no ``json`` tags, so kube-scheduler sends the Go field names
(``Pod``, ``Nodes``, ``NodeNames``, ...) and decodes replies case-insensitively. Our models:

- accept any letter case for a top-level key (``nodenames`` = ``NodeNames``; for
  duplicates the last one wins, as Go's decoder does);
- serialise PascalCase, every field present, ``null`` where Go has a nil map or slice;
- are null-tolerant: ``null`` for an optional field is "absent" (Go's zero value);
- are strict about types (a number where a string belongs is an error, not coerced);
- ignore unknown top-level keys (a newer kube-scheduler may add some). Nested Kubernetes
  objects (``Pod``, ``Nodes.items``) stay raw API JSON dicts; the handlers read them.

``decode(verb, body)`` turns request bytes into the verb's args model or raises
``WireError`` whose message names the field and the problem.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MIN_EXTENDER_PRIORITY = 0
MAX_EXTENDER_PRIORITY = 10
INT64 = Field(ge=-(2**63), le=2**63 - 1)


class WireError(ValueError):
    """A request body that is not valid for its verb; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class _Wire(BaseModel):
    """PascalCase on the wire, any case accepted, ``null`` means absent, unknown keys ignored."""

    model_config = ConfigDict(strict=True, populate_by_name=True, extra="ignore", frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _fold_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        by_fold = _fold_table(cls)
        if all(by_fold.get(k) == k for k in data) and None not in data.values():
            return data  # already canonical: kube-scheduler's own requests
        out: dict[str, Any] = {}
        for key, value in data.items():
            canonical = by_fold.get(key.casefold()) if isinstance(key, str) else None
            if canonical is None:
                continue  # unknown key: ignored, as Go does
            if value is None:
                out.pop(canonical, None)  # null = Go zero value = absent
                continue
            out[canonical] = value
        return out

    def to_wire(self) -> dict[str, Any]:
        """The JSON document Go would produce (PascalCase keys, nulls kept)."""
        return self.model_dump(by_alias=True, mode="json")

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


_FOLD_CACHE: dict[type, dict[str, str]] = {}


def _fold_table(cls: type[BaseModel]) -> dict[str, str]:
    table = _FOLD_CACHE.get(cls)
    if table is None:
        table = {}
        for name, info in cls.model_fields.items():
            alias = info.alias or name
            table[alias.casefold()] = alias
            table.setdefault(name.casefold(), alias)
        _FOLD_CACHE[cls] = table
    return table


KubeObject = dict[str, Any]  # a raw Kubernetes API object (camelCase JSON)


class NodeList(BaseModel):
    """A ``v1.NodeList``: ``items`` are raw Node dicts; other keys (apiVersion, kind) are kept."""

    model_config = ConfigDict(strict=True, extra="allow")

    metadata: dict[str, Any] = Field(default_factory=dict)
    items: list[KubeObject] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k in ("metadata", "items") and v is None)}
        return data


class ExtenderArgs(_Wire):
    """Filter and prioritize request: the pod and either full ``Nodes`` or ``NodeNames``."""

    pod: KubeObject = Field(alias="Pod")
    nodes: NodeList | None = Field(default=None, alias="Nodes")
    node_names: list[str] | None = Field(default=None, alias="NodeNames")

    def candidate_names(self) -> list[str]:
        """Node names in request order: from ``Nodes`` when present, else ``NodeNames``."""
        if self.nodes is not None:
            return [_node_name(n) for n in self.nodes.items]
        return list(self.node_names or [])

    @model_validator(mode="after")
    def _node_names_present(self) -> ExtenderArgs:
        if self.nodes is not None:
            for i, n in enumerate(self.nodes.items):
                name = _node_name(n)
                if not name:
                    raise ValueError(f"Nodes.items[{i}].metadata.name: a Node needs a non-empty name")
        return self


def _node_name(node: KubeObject) -> str:
    meta = node.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


class ExtenderFilterResult(_Wire):
    """Filter reply. kube-scheduler reads ``NodeNames`` when it is nodeCacheCapable, else ``Nodes``."""

    nodes: NodeList | None = Field(default=None, alias="Nodes")
    node_names: list[str] | None = Field(default=None, alias="NodeNames")
    failed_nodes: dict[str, str] = Field(default_factory=dict, alias="FailedNodes")
    failed_and_unresolvable_nodes: dict[str, str] = Field(default_factory=dict, alias="FailedAndUnresolvableNodes")
    error: str = Field(default="", alias="Error")


class HostPriority(_Wire):
    """One node's extender score, 0..10."""

    host: str = Field(alias="Host")
    score: Annotated[int, Field(ge=MIN_EXTENDER_PRIORITY, le=MAX_EXTENDER_PRIORITY)] = Field(alias="Score")


def encode_priorities(items: list[HostPriority]) -> bytes:
    """A ``HostPriorityList`` as JSON (one pass; a reply holds one entry per node)."""
    return json.dumps([{"Host": h.host, "Score": int(h.score)} for h in items], separators=(",", ":")).encode()


class ExtenderBindingArgs(_Wire):
    """Bind request: which pod goes to which node."""

    pod_name: Annotated[str, Field(min_length=1)] = Field(alias="PodName")
    pod_namespace: Annotated[str, Field(min_length=1)] = Field(alias="PodNamespace")
    pod_uid: str = Field(default="", alias="PodUID")
    node: Annotated[str, Field(min_length=1)] = Field(alias="Node")


class ExtenderBindingResult(_Wire):
    """Bind reply: empty ``Error`` means bound."""

    error: str = Field(default="", alias="Error")


class MetaPod(_Wire):
    uid: str = Field(alias="UID")


class MetaVictims(_Wire):
    """Victims on one node by UID, plus the PodDisruptionBudget violations they cause."""

    pods: list[MetaPod] | None = Field(default=None, alias="Pods")
    num_pdb_violations: Annotated[int, INT64] = Field(default=0, alias="NumPDBViolations")


class Victims(_Wire):
    """Victims on one node as full Pod objects (sent when the extender is not nodeCacheCapable)."""

    pods: list[KubeObject] | None = Field(default=None, alias="Pods")
    num_pdb_violations: Annotated[int, INT64] = Field(default=0, alias="NumPDBViolations")

    def to_meta(self) -> MetaVictims:
        uids = []
        for p in self.pods or []:
            meta = p.get("metadata")
            uid = meta.get("uid") if isinstance(meta, dict) else None
            uids.append(MetaPod(uid=uid if isinstance(uid, str) else ""))
        return MetaVictims(pods=uids, num_pdb_violations=self.num_pdb_violations)


class ExtenderPreemptionArgs(_Wire):
    """Preempt request: the pod and kube-scheduler's candidate victims per node (one map is set)."""

    pod: KubeObject = Field(alias="Pod")
    node_name_to_victims: dict[str, Victims] | None = Field(default=None, alias="NodeNameToVictims")
    node_name_to_meta_victims: dict[str, MetaVictims] | None = Field(default=None, alias="NodeNameToMetaVictims")

    def meta_victims(self) -> dict[str, MetaVictims]:
        """Candidates in the Meta form, whichever map the request used (Meta wins if both are set)."""
        if self.node_name_to_meta_victims is not None:
            return dict(self.node_name_to_meta_victims)
        return {node: v.to_meta() for node, v in (self.node_name_to_victims or {}).items()}


class ExtenderPreemptionResult(_Wire):
    """Preempt reply: the candidate nodes that remain and their victims (always the Meta form)."""

    node_name_to_meta_victims: dict[str, MetaVictims] | None = Field(default=None, alias="NodeNameToMetaVictims")


VERB_ARGS: dict[str, type[_Wire]] = {
    "filter": ExtenderArgs,
    "prioritize": ExtenderArgs,
    "bind": ExtenderBindingArgs,
    "preempt": ExtenderPreemptionArgs,
}


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode(verb: str, body: bytes) -> _Wire:
    """The args model of ``verb`` from a request body; ``WireError`` (400 bad JSON, 422 bad shape)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("request body is not UTF-8 text", 400) from None
    if not text.strip():
        raise WireError(f"{verb}: empty request body; expected a JSON object", 400)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        where = "truncated" if exc.pos >= len(text.rstrip()) else f"line {exc.lineno} column {exc.colno}"
        raise WireError(f"malformed JSON ({where}): {exc.msg}", 400) from None
    except RecursionError:
        raise WireError("malformed JSON: nested too deeply", 400) from None
    if not isinstance(doc, dict):
        raise WireError(f"{verb}: the body must be a JSON object, not {_json_type(doc)}")
    if _SURROGATE_ESCAPE.search(text):  # rare: check the decoded text is valid Unicode (no lone surrogates)
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise WireError(f"{verb}: the body holds a \\u escape of a lone UTF-16 surrogate, which is not "
                            "Unicode text", 400) from None
    model = VERB_ARGS[verb]
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise WireError(f"{verb}: {describe_validation(exc, model)}") from None
    except RecursionError:
        raise WireError(f"{verb}: body nested too deeply", 400) from None


def describe_validation(exc: ValidationError, model: type[BaseModel]) -> str:
    """``Nodes.items[2]: expected an object, got string; PodName: required`` (first three errors)."""
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        path = _path(err.get("loc", ()), model)
        msg = _message(err)
        parts.append(f"{path}: {msg}" if path else msg)
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _path(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    out = ""
    aliases = {name: (info.alias or name) for name, info in model.model_fields.items()}
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = aliases.get(part, part) if i == 0 else str(part)
            out += f".{name}" if out else name
    return out


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    got = err.get("input")
    if kind == "missing":
        return "required"
    if kind.endswith("_type") or kind == "model_type" or kind == "model_attributes_type":
        expected = {"string_type": "a string", "int_type": "an integer", "dict_type": "an object",
                    "list_type": "an array", "model_type": "an object", "model_attributes_type": "an object"
                    }.get(kind, kind.removesuffix("_type"))
        return f"expected {expected}, got {_json_type(got)}"
    if kind == "value_error":
        return str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("less_than_equal", "greater_than_equal"):
        limit = (err.get("ctx") or {}).get("le", (err.get("ctx") or {}).get("ge"))
        return f"{got} is out of range (limit {limit})"
    return str(err.get("msg", kind))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
