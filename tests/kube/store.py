"""The in-memory object store behind the test apiserver: objects, resourceVersions, history, watches.

Model (what etcd + the watch cache do for kube-apiserver, reduced to one process):

* One global ``resourceVersion`` counter. Every write that changes an object takes the next value; the
  object, and the history entry of the write, carry it. A write that changes nothing is a no-op (no new
  resourceVersion, no event), as in the real GuaranteedUpdate.
* ``history``: the last ``history_window`` writes (all resources together, like etcd revisions). Everything
  at or below ``compacted_rv`` is gone: a watch or a continue token from an older version gets 410.
* A watcher holds a queue. Each write is offered to every watcher of the same storage; the watcher's
  filter turns it into ADDED / MODIFIED / DELETED (an object that stops matching a selector arrives as
  DELETED, one that starts matching as ADDED, as the cacher does).
* Stored dicts are never mutated in place; every write stores a new dict. Readers may share them.

The ``api_*`` methods implement request semantics (preconditions, update rules, status codes via
``ApiError``) for the HTTP layer. The plain methods (``create``, ``get``, ``mutate``, ...) are for test setup
and fault injection; ``mutate`` writes like a kubelet or another controller would, bypassing update rules.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import resources
from .patch import PatchError, json_patch, merge_patch, strategic_merge
from .resources import Obj, ResourceType
from .selectors import FieldTerm, Requirement, SelectorError, fields_match, labels_match, parse_field_selector
from .selectors import parse_label_selector as _parse_labels
from .status import (
    STALE_OBJECT,
    ApiError,
    FieldCause,
    already_exists,
    bad_request,
    conflict,
    expired,
    generic,
    invalid,
    not_found,
    success_status,
)

Key = tuple[str, str]  # (namespace or "", name)

MEDIA_JSON_PATCH = "application/json-patch+json"
MEDIA_MERGE_PATCH = "application/merge-patch+json"
MEDIA_STRATEGIC = "application/strategic-merge-patch+json"
MEDIA_APPLY = "application/apply-patch+yaml"


def now_rfc3339() -> str:
    """metav1.Time format: RFC 3339, whole seconds, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class HistoryEntry:
    """One committed write; ``obj`` is the new state (for DELETED: the last state), ``prev`` the old one."""

    rv: int
    storage: str
    type: str
    key: Key
    obj: Obj
    prev: Obj | None


@dataclass
class Watcher:
    """An open watch stream: its filter and the queue of (type, object) events not yet written."""

    rtype: ResourceType
    namespace: str | None
    labels: tuple[Requirement, ...]
    fields: tuple[FieldTerm, ...]
    bookmarks: bool
    start_rv: int
    queue: deque[tuple[str, Obj]] = field(default_factory=deque)
    closed: str | None = None  # "drop" (cut the connection), "clean" (end the stream), "expire" (ERROR 410)
    close_message: str = ""
    bookmark_now: bool = False
    id: int = 0

    def matches(self, stored: Obj | None) -> bool:
        if stored is None:
            return False
        meta = stored.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and fields_match(self.fields, self.rtype.field_values(stored))

    def offer(self, entry: HistoryEntry) -> None:
        """Queue what this watcher sees of one write (nothing, ADDED, MODIFIED or DELETED)."""
        if entry.rv <= self.start_rv:  # a watch from a future resourceVersion skips writes up to it
            return
        now_in = self.matches(entry.obj)
        if entry.type == "ADDED":
            if now_in:
                self.queue.append(("ADDED", self.rtype.external(entry.obj)))
        elif entry.type == "DELETED":
            if now_in:
                self.queue.append(("DELETED", self.rtype.external(entry.obj)))
        else:
            was_in = self.matches(entry.prev)
            if now_in:
                self.queue.append(("MODIFIED" if was_in else "ADDED", self.rtype.external(entry.obj)))
            elif was_in and entry.prev is not None:
                gone = _with_rv(entry.prev, entry.rv)
                self.queue.append(("DELETED", self.rtype.external(gone)))


@dataclass
class Fault:
    """A scheduled failure or delay for requests whose verb and path match."""

    verb: str
    path: re.Pattern[str]
    status: int | None
    times: int
    message: str | None = None
    delay_s: float = 0.0
    retry_after_s: int | None = None

    def matches(self, method: str, verb: str, path: str) -> bool:
        wanted = self.verb.lower()
        return wanted in ("*", method.lower(), verb.lower()) and self.path.search(path) is not None


@dataclass
class RequestRecord:
    """One HTTP request the server answered (watch requests are logged when the stream opens)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    verb: str = ""
    content_type: str = ""
    time_s: float = 0.0


def _with_rv(obj: Obj, rv: int) -> Obj:
    out = dict(obj)
    out["metadata"] = {**obj.get("metadata", {}), "resourceVersion": str(rv)}
    return out


def _strip_system(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _parse_rv(text: str | None, what: str = "resourceVersion") -> int | None:
    if text in (None, ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f'{what}: Invalid value: "{text}": must be a non-negative integer') from None
    if value < 0:
        raise bad_request(f'{what}: Invalid value: "{text}": must be a non-negative integer')
    return value


_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class ApiStore:
    """Objects of every served type, the global resourceVersion, write history, watchers, faults, request log."""

    def __init__(self, history_window: int = 1000, bookmark_interval_s: float = 1.0,
                 watch_timeout_s: float = 1800.0) -> None:
        self.history_window = history_window
        self.bookmark_interval_s = bookmark_interval_s
        self.watch_timeout_s = watch_timeout_s
        # How a watch from a compacted resourceVersion is refused: "http" (410 response) or "event" (200, then
        # an in-stream ERROR event with a 410 Status). Real servers do both, depending on version and path.
        self.too_old_watch = "http"
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._objects: dict[str, dict[Key, Obj]] = {}
        self._rv = 0
        self._history: deque[HistoryEntry] = deque()
        self._compacted_rv = 0
        self._watchers: dict[int, Watcher] = {}
        self._next_watcher = 1
        self._faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self._rng = random.Random(0)
        for rtype in resources.builtin_types():
            self._register(rtype)
        for group, version, plural, kind, namespaced in resources.DEFAULT_CRDS:
            self.register_crd(group, version, plural, kind, namespaced=namespaced)

    # --- types ---------------------------------------------------------------------------------------------

    def _register(self, rtype: ResourceType) -> ResourceType:
        with self._lock:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
            self._objects.setdefault(rtype.storage, {})
        return rtype

    def register_crd(self, group: str, version: str, plural: str, kind: str, namespaced: bool = True) -> ResourceType:
        """Serve a custom resource under /apis/<group>/<version>/[namespaces/<ns>/]<plural>."""
        return self._register(resources.custom_type(group, version, plural, kind, namespaced))

    def type_for(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def types(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def resolve(self, resource: str) -> ResourceType:
        """Find a type by ``plural`` or ``plural.group`` (``pods``, ``leases``, ``podgroups.scheduling.x-k8s.io``)."""
        candidates = [t for t in self.types() if resource in (t.plural, t.qualified)]
        exact = [t for t in candidates if t.qualified == resource]
        if exact:
            return exact[0]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise KeyError(f"unknown resource {resource!r}")
        options = ", ".join(sorted(t.qualified for t in candidates))
        raise KeyError(f"resource {resource!r} is ambiguous; use one of {options}")

    # --- state ---------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out."""
        with self._lock:
            return self._rv

    @property
    def compacted_rv(self) -> int:
        """Versions at or below this are no longer in history (410 for watches and continue tokens)."""
        with self._lock:
            return self._compacted_rv

    def _bucket(self, rtype: ResourceType) -> dict[Key, Obj]:
        return self._objects[rtype.storage]

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return ((namespace or "") if rtype.namespaced else "", name)

    def _commit(self, rtype: ResourceType, key: Key, obj: Obj | None, event: str, prev: Obj | None) -> Obj:
        """Store a write: next resourceVersion, history entry, watcher fan-out. Caller holds the lock."""
        self._rv += 1
        stored = _with_rv(obj if obj is not None else prev or {}, self._rv)
        bucket = self._bucket(rtype)
        if event == "DELETED":
            bucket.pop(key, None)
        else:
            bucket[key] = stored
        entry = HistoryEntry(self._rv, rtype.storage, event, key, stored, prev)
        self._history.append(entry)
        while len(self._history) > max(self.history_window, 0):
            self._compacted_rv = self._history.popleft().rv
        for watcher in self._watchers.values():
            if watcher.rtype.storage == rtype.storage and watcher.closed is None:
                watcher.offer(entry)
        self._cond.notify_all()
        return stored

    def _state_at(self, rtype: ResourceType, rv: int) -> dict[Key, Obj]:
        """The objects of ``rtype``'s storage as they were at ``rv`` (needs rv >= compacted_rv)."""
        state = dict(self._bucket(rtype))
        for entry in reversed(self._history):
            if entry.rv <= rv:
                break
            if entry.storage != rtype.storage:
                continue
            if entry.type == "ADDED":
                state.pop(entry.key, None)
            elif entry.prev is not None:
                state[entry.key] = entry.prev
        return state

    # --- request semantics (used by the HTTP layer) ----------------------------------------------------------

    def _prepare_new(self, rtype: ResourceType, namespace: str | None, body: Obj) -> Obj:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a JSON object for {rtype.kind}")
        resources.check_kind(rtype, body)
        obj = rtype.internal(copy.deepcopy(body))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        resources.normalize_times(rtype, obj)
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def api_create(self, rtype: ResourceType, namespace: str | None, body: Obj, dry_run: bool = False) -> Obj:
        """POST: default, validate, refuse an existing name (409 AlreadyExists), store, emit ADDED."""
        obj = self._prepare_new(rtype, namespace, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(self._rng.choice(_GENERATE_CHARS) for _ in range(5))
            resources.check_name(rtype, obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            for system in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
                meta.pop(system, None)
            if rtype.tracks_generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            obj["kind"], obj["apiVersion"] = self._storage_kind(rtype)
            rtype.fill_structs(obj)
            if rtype.default:
                rtype.default(obj)
            resources.run_validation(rtype, obj)
            key = self._key(rtype, namespace, meta["name"])
            if key in self._bucket(rtype):
                raise already_exists(rtype.plural, rtype.group, meta["name"])
            if dry_run:
                return rtype.external(_with_rv(obj, self._rv))
            return rtype.external(self._commit(rtype, key, obj, "ADDED", None))

    def _storage_kind(self, rtype: ResourceType) -> tuple[str, str]:
        if rtype.storage == "events":
            return "Event", "v1"
        return rtype.kind, rtype.api_version

    def api_get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            stored = self._bucket(rtype).get(self._key(rtype, namespace, name))
        if stored is None:
            raise not_found(rtype.plural, rtype.group, name)
        return rtype.external(stored)

    def api_list(self, rtype: ResourceType, namespace: str | None, label_selector: str | None = None,
                 field_selector: str | None = None, limit: int | None = None, continue_token: str | None = None,
                 resource_version: str | None = None, resource_version_match: str | None = None) -> Obj:
        """GET collection: selectors, limit/continue pagination on a consistent snapshot, list resourceVersion."""
        labels, fields = self._selectors(rtype, label_selector, field_selector)
        start_after = ""
        with self._lock:
            if continue_token:
                if resource_version not in (None, "", "0"):
                    raise bad_request("specifying resource version is not allowed when using continue")
                list_rv, start_after = self._decode_continue(continue_token)
                if list_rv == -1:  # the inconsistent continuation handed out with a 410: latest data
                    list_rv, state = self._rv, dict(self._bucket(rtype))
                elif list_rv < self._compacted_rv:
                    raise self._expired_continue(start_after)
                else:
                    state = self._state_at(rtype, list_rv)
            elif resource_version_match == "Exact":
                list_rv = _parse_rv(resource_version) or 0
                if list_rv < self._compacted_rv:
                    raise expired(f"too old resource version: {list_rv} ({self._compacted_rv})")
                if list_rv > self._rv:
                    raise ApiError(504, "Timeout", f"Too large resource version: {list_rv}, current: {self._rv}",
                                   {"causes": [{"reason": "ResourceVersionTooLarge",
                                                "message": "Too large resource version"}], "retryAfterSeconds": 1})
                state = self._state_at(rtype, list_rv)
            else:
                _parse_rv(resource_version)
                list_rv = self._rv
                state = dict(self._bucket(rtype))
        keys = sorted(k for k in state if namespace is None or k[0] == namespace)
        encoded_keys = [f"{k[0]}/{k[1]}" for k in keys]
        selected: list[Obj] = []
        last_key = ""
        next_start = None
        remaining = 0
        for encoded, key in zip(encoded_keys, keys, strict=True):
            if start_after and encoded <= start_after:
                continue
            obj = state[key]
            meta = obj.get("metadata") or {}
            if not (labels_match(labels, meta.get("labels")) and fields_match(fields, rtype.field_values(obj))):
                continue
            if limit and len(selected) >= limit:
                next_start = last_key
                remaining += 1
                continue
            selected.append(obj)
            last_key = encoded
        list_meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if next_start is not None:
            list_meta["continue"] = self._encode_continue(list_rv, next_start)
            if not labels and not fields:
                list_meta["remainingItemCount"] = remaining
        items = []
        for obj in selected:
            external = rtype.external(obj)
            if rtype.builtin:  # typed lists carry kind/apiVersion only at the top
                external = {k: v for k, v in external.items() if k not in ("kind", "apiVersion")}
            items.append(external)
        return {"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": list_meta, "items": items}

    def _expired_continue(self, start_after: str) -> ApiError:
        """410 for a continue token older than history, carrying a token that continues on current data."""
        error = expired("The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter, or use the continue "
                        "token in this response to retrieve the remainder of the results. Continuing with "
                        "the provided token results in an inconsistent list - objects that were created, "
                        "modified, or deleted between the time the first chunk was returned and now may "
                        "show up in the list.")
        error.metadata = {"continue": self._encode_continue(-1, start_after)}
        return error

    @staticmethod
    def _encode_continue(rv: int, start: str) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, str]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            return int(data["rv"]), str(data["start"])
        except (ValueError, KeyError, TypeError):
            raise bad_request(f"continue key is not valid: {token!r}") from None

    def _selectors(self, rtype: ResourceType, label_selector: str | None,
                   field_selector: str | None) -> tuple[tuple[Requirement, ...], tuple[FieldTerm, ...]]:
        try:
            labels = _parse_labels(label_selector)
            fields = parse_field_selector(field_selector)
        except SelectorError as exc:
            raise bad_request(str(exc)) from None
        for term in fields:
            if not rtype.supports_field(term.field):
                raise bad_request(f'field label not supported: {term.field}')
        return labels, fields

    def _check_update_target(self, rtype: ResourceType, namespace: str | None, name: str, body: Obj) -> None:
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if not meta.get("name"):
            body.setdefault("metadata", {})["name"] = name

    def _apply_update(self, rtype: ResourceType, old: Obj, new: Obj, subresource: str | None) -> Obj:
        """Merge an incoming object into ``old`` following the type's update strategy."""
        new_meta = new.setdefault("metadata", {})
        old_meta = old.get("metadata") or {}
        if new_meta.get("uid") and new_meta["uid"] != old_meta.get("uid"):
            raise conflict(rtype.plural, rtype.group, old_meta.get("name", ""),
                           f"Precondition failed: UID in precondition: {new_meta['uid']}, UID in object meta: "
                           f"{old_meta.get('uid')}")
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            for system in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp",
                           "deletionGracePeriodSeconds"):
                if system in old_meta:
                    new_meta[system] = old_meta[system]
                else:
                    new_meta.pop(system, None)
            new_meta.pop("managedFields", None)
            if rtype.has_status:
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
        result["kind"], result["apiVersion"] = self._storage_kind(rtype)
        rtype.fill_structs(result)
        result["metadata"]["resourceVersion"] = old_meta.get("resourceVersion")
        if rtype.tracks_generation and _strip_system(result) != _strip_system(old):
            result["metadata"]["generation"] = int(old_meta.get("generation") or 0) + 1
        resources.run_validation(rtype, result, old)
        return result

    def _write_update(self, rtype: ResourceType, key: Key, old: Obj, result: Obj, dry_run: bool) -> Obj:
        if result == old or dry_run:  # no-op write: same object, same resourceVersion, no event
            return rtype.external(old if result == old else result)
        return rtype.external(self._commit(rtype, key, result, "MODIFIED", old))

    def api_update(self, rtype: ResourceType, namespace: str | None, name: str, body: Obj,
                   subresource: str | None = None, dry_run: bool = False) -> tuple[Obj, bool]:
        """PUT: optimistic concurrency on metadata.resourceVersion (409 when stale). Returns (object, created)."""
        new = self._prepare_new(rtype, namespace, body)
        self._check_update_target(rtype, namespace, name, new)
        with self._lock:
            key = self._key(rtype, namespace, name)
            old = self._bucket(rtype).get(key)
            if old is None:
                if rtype.create_on_update and subresource is None:
                    new["metadata"].pop("resourceVersion", None)
                    return self.api_create(rtype, namespace, rtype.external(new), dry_run=dry_run), True
                raise not_found(rtype.plural, rtype.group, name)
            sent_rv = new["metadata"].get("resourceVersion")
            if not sent_rv:
                if not rtype.unconditional_update:
                    raise invalid(rtype.kind, rtype.group, name, [FieldCause(
                        "metadata.resourceVersion", "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update")])
            elif sent_rv != old["metadata"].get("resourceVersion"):
                raise conflict(rtype.plural, rtype.group, name, STALE_OBJECT)
            result = self._apply_update(rtype, old, new, subresource)
            return self._write_update(rtype, key, old, result, dry_run), False

    def api_patch(self, rtype: ResourceType, namespace: str | None, name: str, content_type: str, body: Any,
                  subresource: str | None = None, dry_run: bool = False) -> Obj:
        """PATCH: json-patch, merge-patch or (built-in types only) strategic-merge-patch."""
        media = (content_type or "").split(";")[0].strip().lower()
        accepted = [MEDIA_JSON_PATCH, MEDIA_MERGE_PATCH] + ([MEDIA_STRATEGIC] if rtype.builtin else [])
        if media not in accepted:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"{', '.join(accepted + [MEDIA_APPLY])}"
                           + (" (server-side apply is not implemented by this test server)" if media == MEDIA_APPLY
                              else ""))
        with self._lock:
            key = self._key(rtype, namespace, name)
            old = self._bucket(rtype).get(key)
            if old is None:
                raise not_found(rtype.plural, rtype.group, name)
            current = copy.deepcopy(rtype.external(old))
            try:
                if media == MEDIA_JSON_PATCH:
                    patched = json_patch(current, body)
                elif media == MEDIA_MERGE_PATCH:
                    if not isinstance(body, dict):
                        raise PatchError("merge patch body must be a JSON object", code=400)
                    patched = merge_patch(current, body)
                else:
                    patched = strategic_merge(current, body)
            except PatchError as exc:
                if exc.code == 400:
                    raise bad_request(str(exc)) from None
                raise ApiError(422, "Invalid", str(exc)) from None
            if not isinstance(patched, dict):
                raise ApiError(422, "Invalid", "the patched object is not a JSON object")
            meta = patched.get("metadata") or {}
            if meta.get("name") != name:
                raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
            if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"].get("resourceVersion"):
                raise conflict(rtype.plural, rtype.group, name, STALE_OBJECT)
            resources.check_kind(rtype, patched)
            new = rtype.internal(patched)
            resources.normalize_times(rtype, new)
            result = self._apply_update(rtype, old, new, subresource)
            return self._write_update(rtype, key, old, result, dry_run)

    def api_delete(self, rtype: ResourceType, namespace: str | None, name: str,
                   options: Obj | None = None, dry_run: bool = False) -> Obj:
        """DELETE: immediate removal (no graceful period, finalizers ignored), DELETED event, preconditions."""
        options = options or {}
        with self._lock:
            key = self._key(rtype, namespace, name)
            old = self._bucket(rtype).get(key)
            if old is None:
                raise not_found(rtype.plural, rtype.group, name)
            meta = old["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise conflict(rtype.plural, rtype.group, name,
                               f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise conflict(rtype.plural, rtype.group, name,
                               f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                               f"ResourceVersion in object meta: {meta.get('resourceVersion')}")
            gone = old if dry_run else self._commit(rtype, key, None, "DELETED", old)
        if rtype.returns_deleted_object:
            return rtype.external(gone)
        details: dict[str, Any] = {"name": name, "kind": rtype.plural, "uid": meta.get("uid")}
        if rtype.group:
            details["group"] = rtype.group
        return success_status(200, details)

    def api_bind(self, namespace: str, url_name: str | None, binding: Obj, dry_run: bool = False) -> Obj:
        """pods/binding and the legacy bindings collection (BindingREST.Create); answers a Success Status, 201."""
        if not isinstance(binding, dict):
            raise bad_request("the body of the request must be a Binding object")
        if binding.get("kind") not in (None, "Binding"):
            raise bad_request(f"the body of the request was of kind {binding.get('kind')!r}, expected 'Binding'")
        meta = binding.get("metadata") or {}
        name = meta.get("name") or ""
        if url_name is not None and name != url_name:
            raise bad_request("name in URL does not match name in Binding object")
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        target = binding.get("target") or {}
        causes = []
        if not name:
            causes.append(FieldCause("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
        if target.get("kind") not in (None, "", "Node"):
            causes.append(FieldCause("target.kind", "FieldValueNotSupported",
                                     f'Unsupported value: "{target.get("kind")}": supported values: "Node"'))
        if not target.get("name"):
            causes.append(FieldCause("target.name", "FieldValueRequired", "Required value"))
        if causes:
            raise invalid("Binding", "", name, causes)
        pods = self.resolve("pods")
        with self._lock:
            key = (namespace, name)
            pod = self._bucket(pods).get(key)
            if pod is None:
                raise not_found("pods", "", name)
            pod_meta, spec = pod["metadata"], pod.get("spec") or {}
            if meta.get("uid") and meta["uid"] != pod_meta.get("uid"):
                raise conflict("pods", "", name, f"Precondition failed: UID in precondition: {meta['uid']}, "
                                                 f"UID in object meta: {pod_meta.get('uid')}")
            if meta.get("resourceVersion") and meta["resourceVersion"] != pod_meta.get("resourceVersion"):
                raise conflict("pods", "", name, f"Precondition failed: ResourceVersion in precondition: "
                                                 f"{meta['resourceVersion']}, ResourceVersion in object meta: "
                                                 f"{pod_meta.get('resourceVersion')}")
            if pod_meta.get("deletionTimestamp"):
                raise conflict("pods/binding", "", name, f"pod {name} is being deleted, cannot be assigned to a host")
            if spec.get("nodeName"):
                raise conflict("pods/binding", "", name, f'pod {name} is already assigned to node "{spec["nodeName"]}"')
            if spec.get("schedulingGates"):
                raise conflict("pods/binding", "", name, f"pod {name} has non-empty .spec.schedulingGates")
            if not dry_run:
                self._commit(pods, key, _bound(pod, target["name"], meta.get("annotations") or {}), "MODIFIED", pod)
        return success_status(201)

    def api_watch(self, rtype: ResourceType, namespace: str | None, label_selector: str | None = None,
                  field_selector: str | None = None, resource_version: str | None = None,
                  bookmarks: bool = False, send_initial_events: bool = False) -> Watcher:
        """Open a watcher. No/"0" resourceVersion: synthetic ADDED for current state first; N: events after N.

        A compacted N gets 410 (an ApiError when ``too_old_watch == "http"``, else a watcher that delivers the
        ERROR event and ends).
        """
        labels, fields = self._selectors(rtype, label_selector, field_selector)
        rv = _parse_rv(resource_version)
        with self._lock:
            watcher = Watcher(rtype, namespace, labels, fields, bookmarks, rv or 0, id=self._next_watcher)
            self._next_watcher += 1
            if rv and rv < self._compacted_rv:
                message = f"too old resource version: {rv} ({self._compacted_rv})"
                if self.too_old_watch == "http":
                    raise expired(message)
                watcher.closed, watcher.close_message = "expire", message
                self._watchers[watcher.id] = watcher
                return watcher
            if not rv or send_initial_events:
                for key in sorted(self._bucket(rtype)):
                    obj = self._bucket(rtype)[key]
                    if watcher.matches(obj):
                        watcher.queue.append(("ADDED", rtype.external(obj)))
                if send_initial_events:
                    watcher.queue.append(("BOOKMARK", self._bookmark(rtype, self._rv, initial_end=True)))
            else:
                for entry in self._history:
                    if entry.rv > rv and entry.storage == rtype.storage:
                        watcher.offer(entry)
            self._watchers[watcher.id] = watcher
            return watcher

    def _bookmark(self, rtype: ResourceType, rv: int, initial_end: bool = False) -> Obj:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}

    def next_watch_batch(self, watcher: Watcher, wait_s: float) -> tuple[list[tuple[str, Obj]], str | None, int, bool]:
        """Wait up to ``wait_s`` for work; returns (events, closed mode, current rv, bookmark requested now)."""
        with self._cond:
            if not (watcher.queue or watcher.closed or watcher.bookmark_now) and wait_s > 0:
                self._cond.wait(timeout=wait_s)
            events = list(watcher.queue)
            watcher.queue.clear()
            bookmark_now, watcher.bookmark_now = watcher.bookmark_now, False
            return events, watcher.closed, self._rv, bookmark_now

    def bookmark_event(self, watcher: Watcher, rv: int) -> Obj:
        return self._bookmark(watcher.rtype, rv)

    def close_watcher(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.pop(watcher.id, None)

    # --- faults and the request log -----------------------------------------------------------------------

    def fail_next(self, verb: str, path_regex: str, status: int, times: int = 1, message: str | None = None,
                  retry_after_s: int | None = None) -> None:
        """Make the next ``times`` requests matching verb and path fail with ``status`` (a real Status body).

        ``verb`` is an HTTP method (GET, POST, ...), a Kubernetes verb (get, list, watch, create, update,
        patch, delete, bind) or ``*``; ``path_regex`` is searched in the URL path.
        """
        with self._lock:
            self._faults.append(Fault(verb, re.compile(path_regex), status, times, message, 0.0, retry_after_s))

    def delay_next(self, verb: str, path_regex: str, delay_s: float, times: int = 1) -> None:
        """Make the next ``times`` matching requests wait ``delay_s`` before being served normally."""
        with self._lock:
            self._faults.append(Fault(verb, re.compile(path_regex), None, times, None, delay_s))

    def take_fault(self, method: str, verb: str, path: str) -> Fault | None:
        """The first armed fault matching this request, with one use consumed."""
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(method, verb, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def fault_error(self, fault: Fault) -> ApiError:
        error = generic(fault.status or 500, fault.message)
        if fault.retry_after_s is not None:
            error.headers["Retry-After"] = str(fault.retry_after_s)
            error.details["retryAfterSeconds"] = fault.retry_after_s
        return error

    def log_request(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def find_requests(self, method: str | None = None, path_regex: str | None = None,
                      verb: str | None = None) -> list[RequestRecord]:
        """Logged requests filtered by method, verb and a regex searched in the path."""
        with self._lock:
            records = list(self.requests)
        return [r for r in records
                if (method is None or r.method == method.upper())
                and (verb is None or r.verb == verb)
                and (path_regex is None or re.search(path_regex, r.path))]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- watch control for tests ---------------------------------------------------------------------------

    def open_watches(self) -> int:
        """Number of watch streams currently open."""
        with self._lock:
            return sum(1 for w in self._watchers.values() if w.closed is None)

    def wait_for_watches(self, count: int, timeout_s: float = 5.0) -> bool:
        """Block until at least ``count`` watch streams are open (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.open_watches() < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.05))
        return True

    def _close_watches(self, mode: str, message: str = "") -> int:
        with self._lock:
            count = 0
            for watcher in self._watchers.values():
                if watcher.closed is None:
                    watcher.closed, watcher.close_message = mode, message
                    count += 1
            self._cond.notify_all()
            return count

    def drop_watches(self, clean: bool = False) -> int:
        """Cut every open watch: mid-stream connection loss, or with ``clean`` a normal end of stream."""
        return self._close_watches("clean" if clean else "drop")

    def expire_watches(self) -> int:
        """Compact history and end every open watch with an in-stream ERROR event (410 Expired).

        Compaction makes the client's automatic resume from its last resourceVersion fail too, so a caller
        must re-list, as against a real server whose watch cache moved on.
        """
        with self._lock:
            compacted = self.compact()
            count = 0
            for watcher in self._watchers.values():
                if watcher.closed is None:
                    watcher.closed = "expire"
                    watcher.close_message = f"too old resource version: {watcher.start_rv} ({compacted})"
                    count += 1
            self._cond.notify_all()
            return count

    def compact(self) -> int:
        """Forget all history: every resourceVersion handed out so far becomes too old to watch from.

        The counter moves on by one (as if other writes had happened), so a list made afterwards returns a
        resourceVersion that can be watched from again.
        """
        with self._lock:
            self._history.clear()
            self._rv += 1
            self._compacted_rv = self._rv
            return self._compacted_rv

    def send_bookmarks(self) -> None:
        """Ask every open watch that allowed bookmarks to send one now."""
        with self._lock:
            for watcher in self._watchers.values():
                watcher.bookmark_now = watcher.bookmarks
            self._cond.notify_all()

    def notify_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- direct access for test setup ------------------------------------------------------------------------

    def create(self, resource: str, obj: Obj) -> Obj:
        """Create ``obj`` (namespace from its metadata) with full create semantics; returns a copy."""
        rtype = self.resolve(resource)
        namespace = (obj.get("metadata") or {}).get("namespace") or ("default" if rtype.namespaced else None)
        return copy.deepcopy(self.api_create(rtype, namespace, obj))

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of the stored object, or None."""
        rtype = self.resolve(resource)
        with self._lock:
            stored = self._bucket(rtype).get(self._key(rtype, namespace or "default", name))
        return copy.deepcopy(rtype.external(stored)) if stored is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Copies of all objects of a type (optionally one namespace), ordered by namespace and name."""
        rtype = self.resolve(resource)
        with self._lock:
            items = sorted(self._bucket(rtype).items())
        return [copy.deepcopy(rtype.external(o)) for k, o in items if namespace is None or k[0] == namespace]

    def mutate(self, resource: str, name: str, namespace: str | None, change: Callable[[Obj], Obj | None]) -> Obj:
        """Rewrite an object as another controller would (no update rules); ``change`` edits a copy in place
        or returns a replacement. Bumps resourceVersion and emits MODIFIED unless nothing changed."""
        rtype = self.resolve(resource)
        with self._lock:
            key = self._key(rtype, namespace or "default", name)
            old = self._bucket(rtype).get(key)
            if old is None:
                raise KeyError(f"{rtype.qualified} {namespace}/{name} not found")
            draft = copy.deepcopy(rtype.external(old))
            replaced = change(draft)
            new = rtype.internal(replaced if replaced is not None else draft)
            new["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
            if new == old:
                return copy.deepcopy(rtype.external(old))
            if rtype.tracks_generation and _strip_system(new) != _strip_system(old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
            return copy.deepcopy(rtype.external(self._commit(rtype, key, new, "MODIFIED", old)))

    def delete(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        """Delete an object; emits DELETED. Returns the last state."""
        rtype = self.resolve(resource)
        with self._lock:
            key = self._key(rtype, namespace or "default", name)
            old = self._bucket(rtype).get(key)
            if old is None:
                raise KeyError(f"{rtype.qualified} {namespace}/{name} not found")
            return copy.deepcopy(rtype.external(self._commit(rtype, key, None, "DELETED", old)))

    def bind(self, namespace: str, name: str, node: str, annotations: dict[str, str] | None = None) -> None:
        """Bind a pod as another scheduler would (same rules as the binding subresource)."""
        self.api_bind(namespace, name, {"metadata": {"name": name, "annotations": annotations or {}},
                                        "target": {"kind": "Node", "name": node}})

    def counts(self) -> dict[str, int]:
        """Number of stored objects per storage."""
        with self._lock:
            return {storage: len(bucket) for storage, bucket in self._objects.items()}

    def iter_history(self) -> Iterable[HistoryEntry]:
        with self._lock:
            return list(self._history)


def _bound(pod: Obj, node: str, annotations: dict[str, str]) -> Obj:
    """The pod after a successful binding: nodeName, merged annotations, PodScheduled=True."""
    new = copy.deepcopy(pod)
    new.setdefault("spec", {})["nodeName"] = node
    if annotations:
        new["metadata"]["annotations"] = {**(new["metadata"].get("annotations") or {}), **annotations}
    status = new.setdefault("status", {})
    conditions = status.setdefault("conditions", [])
    previous = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
    changed = previous is None or previous.get("status") != "True"
    condition = {
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339() if changed else previous.get("lastTransitionTime"),
    }
    if previous is None:
        conditions.append(condition)
    else:
        conditions[conditions.index(previous)] = condition
    return new
