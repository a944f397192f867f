"""The three patch formats the apiserver accepts for JSON bodies.

* JSON merge patch (RFC 7386): maps merge, ``null`` deletes, lists are replaced.
* Strategic merge patch: like merge patch, but lists that the Go types tag ``patchStrategy:"merge"`` are merged
  by their ``patchMergeKey`` (``status.conditions`` by ``type``, ``spec.containers`` by ``name``, ...), lists of
  primitives tagged merge (``metadata.finalizers``) are unions, and the directives ``$patch: replace|delete``,
  ``$deleteFromPrimitiveList/<field>``, ``$setElementOrder/<field>`` and ``$retainKeys`` are understood.
  Only the merge keys of the built-in types this server stores are known (``MERGE_KEYS``).
* JSON patch (RFC 6902): add, remove, replace, move, copy, test with JSON pointers.
"""

from __future__ import annotations

import copy
from typing import Any

PRIMITIVE_SET = "<set>"


def _container_keys(prefix: str) -> dict[str, str]:
    return {
        prefix: "name",
        f"{prefix}.env": "name",
        f"{prefix}.ports": "containerPort",
        f"{prefix}.volumeMounts": "mountPath",
        f"{prefix}.volumeDevices": "devicePath",
    }


# Dotted field path (list items add no component) -> merge key, from the patchMergeKey tags of core/v1.
MERGE_KEYS: dict[str, str] = {
    "metadata.ownerReferences": "uid",
    "metadata.finalizers": PRIMITIVE_SET,
    **_container_keys("spec.containers"),
    **_container_keys("spec.initContainers"),
    **_container_keys("spec.ephemeralContainers"),
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "spec.schedulingGates": "name",
    "spec.resourceClaims": "name",
    "spec.podCIDRs": PRIMITIVE_SET,
    "status.conditions": "type",
    "status.podIPs": "ip",
    "status.hostIPs": "ip",
    "status.addresses": "type",
    "status.resourceClaimStatuses": "name",
}


class PatchError(ValueError):
    """A patch that cannot be applied; ``code`` is the HTTP status a real server answers with."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch; returns a new value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a strategic merge patch to a built-in object; returns a new dict."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch body must be a JSON object", code=400)
    merged = _smp_map(original, patch, "")
    return merged if merged is not None else {}


def _smp_map(original: dict[str, Any] | None, patch: dict[str, Any], path: str) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    if directive is not None:
        raise PatchError(f"Unknown patch type: {directive!r} at {path or '<root>'}", code=400)
    result = dict(original or {})
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        child = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key) if isinstance(result.get(key), dict) else None, value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, child)
        else:
            result[key] = value
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or [])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(original: Any, patch: list[Any], path: str) -> list[Any]:
    key = MERGE_KEYS.get(path)
    if key is None:
        return _strip_directives(patch)
    base = list(original) if isinstance(original, list) else []
    if key == PRIMITIVE_SET:
        return base + [v for v in patch if v not in base]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{path}: list element {item!r} is not an object but the list merges by {key!r}", code=400)
        if key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {key}", code=400)
        index = next((i for i, e in enumerate(base) if isinstance(e, dict) and e.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del base[index]
        elif index is not None:
            merged = _smp_map(base[index], item, path)
            base[index] = merged if merged is not None else base[index]
        else:
            base.append(_strip_directives(item))
    return base


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], op: str, path: str) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path}")
    return node


def _remove(doc: Any, parts: list[str], op: str, path: str) -> Any:
    parent = _resolve(doc, parts[:-1], op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path}")


def _add(doc: Any, parts: list[str], value: Any, op: str, path: str) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"jsonpatch {op} operation does not apply: index out of range: {path}")
    else:
        raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path}")
    return doc


def json_patch(document: Any, operations: list[Any]) -> Any:
    """Apply an RFC 6902 JSON patch; returns a new value."""
    if not isinstance(operations, list):
        raise PatchError("json patch body must be a JSON array of operations", code=400)
    doc = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid json patch operation: {op!r}", code=400)
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), kind, path)
        elif kind == "remove":
            _remove(doc, parts, kind, path)
        elif kind == "replace":
            _resolve(doc, parts, kind, path)
            if parts:
                _remove(doc, parts, kind, path)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), kind, path)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _resolve(doc, source, kind, op.get("from", ""))
            if kind == "move":
                value = _remove(doc, source, kind, op.get("from", ""))
            doc = _add(doc, parts, copy.deepcopy(value), kind, path)
        elif kind == "test":
            if _resolve(doc, parts, kind, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", code=400)
    return doc
