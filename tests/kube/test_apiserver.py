"""The test apiserver driven by the official ``kubernetes`` client over HTTP on 127.0.0.1.

Each test states one API rule the scheduler relies on; K8S.md sections 2 and 3 are the reference.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch

from .apiserver import ApiServer, running_apiserver
from .store import ApiStore

NS = "ml"
SCHED = "toposched"
MICRO_TIME = dt.datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)  # non-zero microseconds: see timestamp test


# --- helpers ------------------------------------------------------------------------------------------------


def make_pod(name: str, *, ns: str = NS, scheduler: str = SCHED, node: str | None = None, phase: str | None = None,
             labels: dict[str, str] | None = None, gates: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedulerName": scheduler,
                            "containers": [{"name": "main", "image": "trainer:1",
                                            "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    if node:
        spec["nodeName"] = node
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    pod: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}
    if phase:
        pod["status"] = {"phase": phase}
    return pod


def make_node(name: str, gpus: int = 8, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.fixture
def core(apiserver: ApiServer) -> Iterator[client.CoreV1Api]:
    api_client = apiserver.api_client()
    yield client.CoreV1Api(api_client)
    api_client.close()


def status_of(exc: client.ApiException) -> dict[str, Any]:
    """The Status body of an ApiException."""
    return json.loads(exc.body)


def binding(pod: str, node: str, uid: str | None = None, annotations: dict[str, str] | None = None) -> client.V1Binding:
    return client.V1Binding(
        metadata=client.V1ObjectMeta(name=pod, namespace=NS, uid=uid, annotations=annotations),
        target=client.V1ObjectReference(kind="Node", api_version="v1", name=node))


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, queue.Queue[Any]]:
    """Run ``fn`` in a daemon thread; its result or exception lands in the returned queue."""
    out: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            out.put(fn())
        except BaseException as exc:  # the test inspects it
            out.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def take(stream: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch stream (closing the stream afterwards)."""
    events = []
    for event in stream:
        events.append(event)
        if len(events) == count:
            break
    return events


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


# --- object metadata and resourceVersion --------------------------------------------------------------------


def test_create_sets_server_fields_and_pod_defaults(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Create fills uid, creationTimestamp, resourceVersion, generation (pods) and the pod defaults."""
    pod = core.create_namespaced_pod(NS, make_pod("w-0", scheduler=""))
    assert pod.metadata.uid and pod.metadata.creation_timestamp is not None
    assert pod.metadata.resource_version == str(apiserver.store.resource_version)
    assert pod.metadata.generation == 1
    assert pod.spec.scheduler_name == "default-scheduler"
    assert pod.status.phase == "Pending"
    assert sorted((t.key, t.effect, t.toleration_seconds) for t in pod.spec.tolerations) == [
        ("node.kubernetes.io/not-ready", "NoExecute", 300), ("node.kubernetes.io/unreachable", "NoExecute", 300)]
    node = core.create_node(make_node("gpu-a1"))
    assert node.metadata.generation is None, "nodes do not track generation"


def test_resource_version_is_one_global_counter(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Writes to any type take the next global resourceVersion; a no-op patch takes none."""
    leases = client.CoordinationV1Api(core.api_client)
    rvs = [int(core.create_node(make_node("n1")).metadata.resource_version),
           int(core.create_namespaced_pod(NS, make_pod("p1")).metadata.resource_version),
           int(leases.create_namespaced_lease(NS, {"metadata": {"name": "l1"}}).metadata.resource_version),
           int(core.patch_node("n1", {"metadata": {"labels": {"rack": "r1"}}}).metadata.resource_version)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4
    unchanged = core.patch_node("n1", {"metadata": {"labels": {"rack": "r1"}}})
    assert int(unchanged.metadata.resource_version) == rvs[-1]
    core.delete_namespaced_pod("p1", NS)
    assert apiserver.store.resource_version == rvs[-1] + 1


def test_errors_are_status_objects(core: client.CoreV1Api) -> None:
    """404, 409 AlreadyExists and 422 Invalid come back as v1 Status bodies with reason and details."""
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod("nope", NS)
    body = status_of(missing.value)
    assert (missing.value.status, body["kind"], body["status"], body["reason"]) == (404, "Status", "Failure", "NotFound")
    assert body["message"] == 'pods "nope" not found'
    core.create_namespaced_pod(NS, make_pod("p1"))
    with pytest.raises(client.ApiException) as dup:
        core.create_namespaced_pod(NS, make_pod("p1"))
    assert (dup.value.status, status_of(dup.value)["reason"]) == (409, "AlreadyExists")
    with pytest.raises(client.ApiException) as bad:
        core.create_namespaced_pod(NS, {"metadata": {"name": "empty"}, "spec": {"containers": []}})
    invalid = status_of(bad.value)
    assert (bad.value.status, invalid["reason"]) == (422, "Invalid")
    assert invalid["details"]["causes"][0]["field"] == "spec.containers"


# --- lists ---------------------------------------------------------------------------------------------------


@pytest.fixture
def pods(apiserver: ApiServer) -> ApiStore:
    """Five pods: two pending ours, one bound ours, one bound default-scheduler, one finished."""
    store = apiserver.store
    store.create("pods", make_pod("pending-a", labels={"team": "a"}))
    store.create("pods", make_pod("pending-b", ns="other", labels={"team": "b"}))
    store.create("pods", make_pod("bound", node="n1", phase="Running", labels={"team": "a"}))
    store.create("pods", make_pod("web", scheduler="default-scheduler", node="n2", phase="Running"))
    store.create("pods", make_pod("done", node="n1", phase="Succeeded"))
    return store


@pytest.mark.parametrize(
    ("field_selector", "names"),
    [
        (f"spec.schedulerName={SCHED},spec.nodeName=", ["pending-a", "pending-b"]),
        ("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed", ["bound", "web"]),
        ("spec.nodeName=n1", ["bound", "done"]),
        ("status.phase=Pending", ["pending-a", "pending-b"]),
        ("metadata.namespace=other", ["pending-b"]),
        ("metadata.name=web", ["web"]),
    ],
    ids=["unassigned-ours", "assigned-nonterminal", "on-node", "phase", "namespace", "name"],
)
def test_pod_field_selectors(pods: ApiStore, core: client.CoreV1Api, field_selector: str, names: list[str]) -> None:
    """The pod field selectors of K8S.md 2.1, including empty values and ``!=``."""
    listed = core.list_pod_for_all_namespaces(field_selector=field_selector)
    assert sorted(p.metadata.name for p in listed.items) == names


def test_label_selector_and_namespace_scope(pods: ApiStore, core: client.CoreV1Api) -> None:
    """labelSelector on a namespaced list; the list carries the current resourceVersion."""
    listed = core.list_namespaced_pod(NS, label_selector="team in (a,b)")
    assert [p.metadata.name for p in listed.items] == ["bound", "pending-a"]
    assert listed.metadata.resource_version == str(pods.resource_version)


def test_bool_field_selectors_read_an_unset_field_as_false(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """``spec.unschedulable`` and ``spec.hostNetwork`` are Go bools: unset is "false", not empty."""
    store = apiserver.store
    store.create("nodes", make_node("plain"))
    cordoned = make_node("cordoned")
    cordoned["spec"] = {"unschedulable": True}
    store.create("nodes", cordoned)
    store.create("pods", make_pod("p"))
    assert [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=false").items] == ["plain"]
    assert [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable!=false").items] == ["cordoned"]
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.hostNetwork=false").items] \
        == ["p"]


def test_unsupported_field_selector_is_400(pods: ApiStore, core: client.CoreV1Api) -> None:
    """A field the type does not index is refused like the apiserver does."""
    with pytest.raises(client.ApiException) as info:
        core.list_pod_for_all_namespaces(field_selector="spec.priority=5")
    assert info.value.status == 400
    assert status_of(info.value)["message"] == "field label not supported: spec.priority"


def test_pagination_is_a_consistent_snapshot(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """limit/continue pages come from the first page's resourceVersion; later writes do not leak in."""
    for i in range(7):
        apiserver.store.create("pods", make_pod(f"p{i}"))
    first = core.list_namespaced_pod(NS, limit=3)
    assert [p.metadata.name for p in first.items] == ["p0", "p1", "p2"]
    assert first.metadata.remaining_item_count == 4
    apiserver.store.create("pods", make_pod("p9"))
    apiserver.store.delete("pods", "p5", NS)
    names, token = [p.metadata.name for p in first.items], first.metadata._continue
    while token:
        page = core.list_namespaced_pod(NS, limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
    assert names == [f"p{i}" for i in range(7)]


def test_expired_continue_token_is_410(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """A continue token older than the history window answers 410 Expired with a fresh continue token."""
    for i in range(4):
        apiserver.store.create("pods", make_pod(f"p{i}"))
    first = core.list_namespaced_pod(NS, limit=2)
    apiserver.store.create("pods", make_pod("p4"))
    apiserver.store.compact()
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_pod(NS, limit=2, _continue=first.metadata._continue)
    body = status_of(info.value)
    assert (info.value.status, body["reason"]) == (410, "Expired")
    rest = core.list_namespaced_pod(NS, _continue=body["metadata"]["continue"])
    assert [p.metadata.name for p in rest.items] == ["p2", "p3", "p4"], "inconsistent continuation sees new data"


# --- watch ---------------------------------------------------------------------------------------------------


def test_list_then_watch_resumes_from_resource_version(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Informer pattern: list, watch from the list RV, then resume from the last seen RV without gaps."""
    store = apiserver.store
    store.create("pods", make_pod("a"))
    listed = core.list_namespaced_pod(NS)
    store.create("pods", make_pod("b"))
    store.mutate("pods", "a", NS, lambda p: p["metadata"]["labels"].update(x="1"))
    w = watch.Watch()
    events = take(w.stream(core.list_namespaced_pod, NS, resource_version=listed.metadata.resource_version,
                           _request_timeout=5), 2)
    assert summary(events) == [("ADDED", "b"), ("MODIFIED", "a")]
    assert isinstance(events[0]["object"], client.V1Pod)
    store.delete("pods", "b", NS)
    resumed = take(w.stream(core.list_namespaced_pod, NS, resource_version=w.resource_version,
                            _request_timeout=5), 1)
    assert summary(resumed) == [("DELETED", "b")]
    assert resumed[0]["object"].metadata.resource_version == str(store.resource_version)


def test_watch_without_resource_version_starts_with_current_state(apiserver: ApiServer,
                                                                  core: client.CoreV1Api) -> None:
    """No resourceVersion: synthetic ADDED events for what exists, then live events."""
    apiserver.store.create("nodes", make_node("n1"))
    apiserver.store.create("nodes", make_node("n2"))
    thread, out = in_thread(lambda: take(watch.Watch().stream(core.list_node, _request_timeout=5), 3))
    assert apiserver.store.wait_for_watches(1)
    apiserver.store.create("nodes", make_node("n3"))
    thread.join(5)
    assert summary(out.get(timeout=1)) == [("ADDED", "n1"), ("ADDED", "n2"), ("ADDED", "n3")]


def test_watch_selector_transitions(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """A bound pod leaves ``spec.nodeName=`` (DELETED there) and enters ``spec.nodeName!=`` (ADDED)."""
    store = apiserver.store
    store.create("pods", make_pod("w-0"))
    rv = str(store.resource_version)
    store.bind(NS, "w-0", "n1")
    queued = take(watch.Watch().stream(core.list_pod_for_all_namespaces, field_selector="spec.nodeName=",
                                       resource_version=rv, _request_timeout=5), 1)
    assigned = take(watch.Watch().stream(core.list_pod_for_all_namespaces, field_selector="spec.nodeName!=",
                                         resource_version=rv, _request_timeout=5), 1)
    assert summary(queued) == [("DELETED", "w-0")] and summary(assigned) == [("ADDED", "w-0")]
    assert assigned[0]["object"].spec.node_name == "n1"


def test_watch_from_compacted_rv_is_http_410(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """A resourceVersion older than the history window: HTTP 410, raised by the client as ApiException."""
    store = apiserver.store
    store.history_window = 3
    store.create("pods", make_pod("a"))
    stale = str(store.resource_version)
    for i in range(4):
        store.create("pods", make_pod(f"b{i}"))
    with pytest.raises(client.ApiException) as info:
        take(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=stale, _request_timeout=5), 1)
    assert info.value.status == 410
    assert status_of(info.value)["reason"] == "Expired"


def test_watch_from_compacted_rv_in_stream_error(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """The other form: 200, then an ERROR event carrying a 410 Status (no retry when timeout_seconds is set)."""
    store = apiserver.store
    store.too_old_watch = "event"
    store.create("pods", make_pod("a"))
    stale = str(store.resource_version)
    store.create("pods", make_pod("b"))
    store.compact()
    with pytest.raises(client.ApiException) as info:
        take(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=stale, timeout_seconds=5,
                                  _request_timeout=5), 1)
    assert info.value.status == 410
    assert "too old resource version" in info.value.reason
    assert [r.status for r in store.find_requests(verb="watch")] == [200]


def test_expire_watches_forces_in_stream_410_then_client_retry_fails(apiserver: ApiServer,
                                                                       core: client.CoreV1Api) -> None:
    """expire_watches(): live streams get ERROR 410; the client's single retry from its RV gets HTTP 410."""
    store = apiserver.store
    store.create("pods", make_pod("a"))
    rv = str(store.resource_version)
    thread, out = in_thread(lambda: take(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=rv,
                                                              _request_timeout=5), 1))
    assert store.wait_for_watches(1)
    assert store.expire_watches() == 1
    thread.join(5)
    error = out.get(timeout=1)
    assert isinstance(error, client.ApiException) and error.status == 410
    assert [r.status for r in store.find_requests(verb="watch")] == [200, 410]


def test_bookmarks_are_yielded_as_dicts(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """allowWatchBookmarks: BOOKMARK events carry the current RV; the client yields them with a dict object."""
    store = apiserver.store
    store.create("pods", make_pod("a"))
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_pod, NS, resource_version=str(store.resource_version),
                      allow_watch_bookmarks=True, _request_timeout=5)
    store.create("nodes", make_node("n1"))  # another type: the bookmark RV still moves past it
    (event,) = take(stream, 1)
    assert event["type"] == "BOOKMARK"
    assert isinstance(event["object"], dict)
    assert event["object"]["metadata"]["resourceVersion"] == str(store.resource_version)
    assert w.resource_version == str(store.resource_version)


def test_watch_without_bookmarks_gets_none(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """No allowWatchBookmarks, no BOOKMARK (neither periodic nor forced) before the stream ends."""
    store = apiserver.store
    thread, out = in_thread(lambda: list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version="0",
                                                              timeout_seconds=30, _request_timeout=5)))
    assert store.wait_for_watches(1)
    store.send_bookmarks()
    thread.join(store.bookmark_interval_s * 2)  # long enough for a periodic bookmark to have been due
    store.drop_watches(clean=True)
    thread.join(5)
    assert out.get(timeout=1) == []


def test_drop_watches_cuts_the_connection(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """drop_watches(): the client sees a broken chunked stream, like a lost connection."""
    store = apiserver.store
    thread, out = in_thread(lambda: take(watch.Watch().stream(core.list_node, resource_version="0",
                                                              _request_timeout=5), 1))
    assert store.wait_for_watches(1)
    assert store.drop_watches() == 1
    thread.join(5)
    assert isinstance(out.get(timeout=1), urllib3.exceptions.ProtocolError)
    assert store.open_watches() == 0


def test_clean_watch_end_stops_a_timeout_watch(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """drop_watches(clean=True) ends streams normally; with timeout_seconds the client generator just ends."""
    store = apiserver.store
    thread, out = in_thread(lambda: list(watch.Watch().stream(core.list_node, timeout_seconds=30,
                                                              _request_timeout=5)))
    assert store.wait_for_watches(1)
    store.drop_watches(clean=True)
    thread.join(5)
    assert out.get(timeout=1) == []


def test_a_watch_with_timeout_seconds_zero_stays_open(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """timeoutSeconds=0 means no timeout (the server's default applies), not "end at once"."""
    store = apiserver.store
    thread, out = in_thread(lambda: list(watch.Watch().stream(core.list_node, timeout_seconds=0,
                                                              _request_timeout=5)))
    assert store.wait_for_watches(1)
    thread.join(0.5)
    assert thread.is_alive() and store.open_watches() == 1
    store.drop_watches(clean=True)
    thread.join(5)
    assert out.get(timeout=1) == []


def test_concurrent_writers_each_watch_sees_every_write_in_order(apiserver: ApiServer,
                                                                 core: client.CoreV1Api) -> None:
    """Four writer threads, two watchers: each watcher gets every ADDED once, in resourceVersion order."""
    store = apiserver.store
    start_rv = str(store.resource_version)
    watchers = [in_thread(lambda: take(watch.Watch().stream(core.list_pod_for_all_namespaces,
                                                            resource_version=start_rv, _request_timeout=10), 60))
                for _ in range(2)]
    assert store.wait_for_watches(2)

    def write(worker: int) -> None:
        with apiserver.api_client() as api_client:
            api = client.CoreV1Api(api_client)
            for i in range(15):
                api.create_namespaced_pod(NS, make_pod(f"w{worker}-{i}"))

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(10)
    for thread, out in watchers:
        thread.join(10)
        events = out.get(timeout=1)
        rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
        assert rvs == sorted(rvs) and len(set(rvs)) == 60
        assert {e["type"] for e in events} == {"ADDED"}
        assert len({e["raw_object"]["metadata"]["name"] for e in events}) == 60


# --- binding -------------------------------------------------------------------------------------------------


def test_binding_quirk_raises_after_the_pod_is_bound(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """K8S.md 3.2: the server answers 201 with a Success Status; the client fails to read it as V1Binding
    (ValueError about ``target``) although the binding already happened. This server reproduces it."""
    pod = core.create_namespaced_pod(NS, make_pod("w-0"))
    with pytest.raises(ValueError, match="target"):
        core.create_namespaced_pod_binding("w-0", NS, binding("w-0", "gpu-a1", pod.metadata.uid))
    bound = core.read_namespaced_pod("w-0", NS)
    assert bound.spec.node_name == "gpu-a1"
    (request,) = apiserver.store.find_requests("POST", r"/binding$")
    assert request.status == 201


def test_binding_with_preload_content_false_succeeds(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """The workaround: raw response, body is the Success Status; annotations merge; PodScheduled=True."""
    pod = core.create_namespaced_pod(NS, make_pod("w-0", labels={"x": "y"}))
    resp = core.create_namespaced_pod_binding(
        "w-0", NS, binding("w-0", "gpu-a1", pod.metadata.uid, {"toposched.io/gpus": "0,1,2,3"}),
        _preload_content=False)
    assert resp.status == 201
    assert json.loads(resp.data) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                     "code": 201}
    bound = core.read_namespaced_pod("w-0", NS)
    assert bound.metadata.annotations == {"toposched.io/gpus": "0,1,2,3"}
    scheduled = [c for c in bound.status.conditions if c.type == "PodScheduled"]
    assert [(c.status, c.last_transition_time is not None) for c in scheduled] == [("True", True)]


def test_legacy_bindings_collection(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """POST namespaces/{ns}/bindings binds the pod named in the body, with the same 201 Status."""
    core.create_namespaced_pod(NS, make_pod("w-0"))
    resp = core.create_namespaced_binding(NS, binding("w-0", "gpu-a2"), _preload_content=False)
    assert resp.status == 201
    assert apiserver.store.get("pods", "w-0", NS)["spec"]["nodeName"] == "gpu-a2"


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("bound", 409, 'Operation cannot be fulfilled on pods/binding "w-0": pod w-0 is already assigned to node "n0"'),
        ("missing", 404, 'pods "w-0" not found'),
        ("uid", 409, "Precondition failed: UID in precondition: 00000000-dead-beef"),
        ("gated", 409, "pod w-0 has non-empty .spec.schedulingGates"),
        ("stale", 409, "Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta:"),
    ],
    ids=["rebind", "missing", "uid-mismatch", "gated", "stale-resource-version"],
)
def test_binding_refusals(apiserver: ApiServer, core: client.CoreV1Api, setup: str, code: int, message: str) -> None:
    """Rebinding, a vanished pod, a re-created pod (uid) and a gated pod are refused; the pod is unchanged."""
    store = apiserver.store
    if setup != "missing":
        store.create("pods", make_pod("w-0", node="n0" if setup == "bound" else None,
                                      gates=["kueue.x-k8s.io/topology"] if setup == "gated" else None))
    uid = "00000000-dead-beef" if setup == "uid" else None
    body = binding("w-0", "gpu-a1", uid)
    if setup == "stale":
        store.mutate("pods", "w-0", NS, lambda p: p["metadata"].setdefault("labels", {}).update(changed="yes"))
        body.metadata.resource_version = "1"
    before = store.resource_version
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_pod_binding("w-0", NS, body, _preload_content=False)
    assert info.value.status == code
    assert message in status_of(info.value)["message"]
    assert store.resource_version == before


# --- status patches and update rules ------------------------------------------------------------------------


def test_strategic_merge_status_patch_of_pod_scheduled(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """A dict body goes out as strategic merge; conditions merge by type; spec in a status patch is ignored."""
    store = apiserver.store
    store.create("pods", make_pod("w-0"))
    store.mutate("pods", "w-0", NS, lambda p: p["status"].update(
        conditions=[{"type": "ContainersReady", "status": "False"}]))
    when = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/4 nodes are available", "lastTransitionTime": when}
    core.patch_namespaced_pod_status("w-0", NS, {"status": {"conditions": [condition]}, "spec": {"nodeName": "x"}})
    core.patch_namespaced_pod_status("w-0", NS, {"status": {"conditions": [{**condition, "message": "0/5 nodes"}]}})
    pod = core.read_namespaced_pod("w-0", NS)
    assert [(c.type, c.status, c.message) for c in pod.status.conditions] == [
        ("ContainersReady", "False", None), ("PodScheduled", "False", "0/5 nodes")]
    assert pod.status.conditions[1].last_transition_time == when
    assert pod.spec.node_name is None
    patches = store.find_requests("PATCH", r"/status$")
    assert {r.content_type for r in patches} == {"application/strategic-merge-patch+json"}


def test_merge_patch_replaces_condition_list(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """With merge-patch the conditions list is replaced wholesale (why SMP matters)."""
    store = apiserver.store
    store.create("nodes", make_node("n1"))
    core.patch_node_status("n1", {"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}})
    assert [c.type for c in core.read_node("n1").status.conditions] == ["Ready", "DiskPressure"]
    core.patch_node_status("n1", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                           _content_type="application/merge-patch+json")
    assert [(c.type, c.status) for c in core.read_node("n1").status.conditions] == [("Ready", "False")]


def test_json_patch_list_body(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """A list body goes out as json-patch; a failing ``test`` op is refused and nothing changes."""
    apiserver.store.create("nodes", make_node("n1"))
    core.patch_node("n1", [{"op": "add", "path": "/spec/unschedulable", "value": True}])
    assert core.read_node("n1").spec.unschedulable is True
    with pytest.raises(client.ApiException) as info:
        core.patch_node("n1", [{"op": "test", "path": "/spec/unschedulable", "value": False},
                               {"op": "remove", "path": "/spec/unschedulable"}])
    assert info.value.status == 422
    assert core.list_node(field_selector="spec.unschedulable=true").items[0].metadata.name == "n1"


def test_pod_update_cannot_set_node_name(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Binding goes through pods/binding: a pod patch that sets spec.nodeName is 422 Invalid."""
    apiserver.store.create("pods", make_pod("w-0"))
    with pytest.raises(client.ApiException) as info:
        core.patch_namespaced_pod("w-0", NS, {"spec": {"nodeName": "n1"}})
    assert info.value.status == 422
    assert "pod updates may not change fields" in status_of(info.value)["message"]


def test_patch_with_stale_resource_version_conflicts(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """A resourceVersion inside a patch is a precondition: stale -> 409 Conflict."""
    node = core.create_node(make_node("n1"))
    core.patch_node("n1", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(client.ApiException) as info:
        core.patch_node("n1", {"metadata": {"labels": {"a": "2"}, "resourceVersion": node.metadata.resource_version}})
    assert (info.value.status, status_of(info.value)["reason"]) == (409, "Conflict")


# --- leases --------------------------------------------------------------------------------------------------


def test_lease_compare_and_swap(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Leader election primitives: create once (409 AlreadyExists after), replace with the read RV, 409 if stale."""
    leases = client.CoordinationV1Api(core.api_client)
    now = dt.datetime(2026, 7, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)
    spec = client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15, acquire_time=now, renew_time=now,
                              lease_transitions=0)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="toposched", namespace="kube-system"), spec=spec)
    created = leases.create_namespaced_lease("kube-system", lease)
    with pytest.raises(client.ApiException) as exists:
        leases.create_namespaced_lease("kube-system", lease)
    assert (exists.value.status, status_of(exists.value)["reason"]) == (409, "AlreadyExists")
    created.spec.renew_time = now + dt.timedelta(seconds=2)
    renewed = leases.replace_namespaced_lease("toposched", "kube-system", created)
    created.spec.holder_identity = "b"  # a rival still holding the old resourceVersion
    with pytest.raises(client.ApiException) as stale:
        leases.replace_namespaced_lease("toposched", "kube-system", created)
    assert (stale.value.status, status_of(stale.value)["reason"]) == (409, "Conflict")
    current = leases.read_namespaced_lease("toposched", "kube-system")
    assert current.spec.holder_identity == "a"
    assert current.metadata.resource_version == renewed.metadata.resource_version
    assert current.spec.renew_time == now + dt.timedelta(seconds=2)
    assert [item.metadata.name for item in leases.list_namespaced_lease("kube-system").items] == ["toposched"]


def test_lease_update_needs_a_resource_version_and_may_create(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """The lease strategy: no unconditional update (422), but create-on-update (201)."""
    leases = client.CoordinationV1Api(core.api_client)
    spec = client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15)
    fresh = leases.replace_namespaced_lease(
        "fresh", "kube-system", client.V1Lease(metadata=client.V1ObjectMeta(name="fresh"), spec=spec))
    assert fresh.spec.holder_identity == "a" and fresh.metadata.resource_version
    rival = client.V1Lease(metadata=client.V1ObjectMeta(name="fresh"),
                           spec=client.V1LeaseSpec(holder_identity="b", lease_duration_seconds=15))
    with pytest.raises(client.ApiException) as blind:
        leases.replace_namespaced_lease("fresh", "kube-system", rival)
    assert blind.value.status == 422
    assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in \
        status_of(blind.value)["message"]
    assert leases.read_namespaced_lease("fresh", "kube-system").spec.holder_identity == "a"


def test_timestamps_parse_like_go(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """metav1.Time needs a zone (a naive datetime is 400); MicroTime needs exactly six fractional digits, so a
    whole-second aware datetime (isoformat drops ``.000000``) is 400 for a Lease. Stored times are UTC ``Z``."""
    leases = client.CoordinationV1Api(core.api_client)
    whole_second = dt.datetime(2026, 7, 1, 12, 0, 0, tzinfo=dt.UTC)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="l1"),
                           spec=client.V1LeaseSpec(holder_identity="a", renew_time=whole_second))
    with pytest.raises(client.ApiException) as micro:
        leases.create_namespaced_lease(NS, lease)
    assert micro.value.status == 400
    assert 'cannot be handled as a Lease: parsing time "2026-07-01T12:00:00+00:00"' in status_of(micro.value)["message"]
    lease.spec.renew_time = dt.datetime(2026, 7, 1, 14, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    leases.create_namespaced_lease(NS, lease)
    assert apiserver.store.get("leases", "l1", NS)["spec"]["renewTime"] == "2026-07-01T12:00:00.000005Z"
    apiserver.store.create("pods", make_pod("w-0"))
    naive = {"type": "PodScheduled", "status": "False", "lastTransitionTime": dt.datetime(2026, 7, 1, 12, 0, 0)}
    with pytest.raises(client.ApiException) as time_error:
        core.patch_namespaced_pod_status("w-0", NS, {"status": {"conditions": [naive]}})
    assert time_error.value.status == 400
    naive["lastTransitionTime"] = dt.datetime(2026, 7, 1, 12, 0, 0, 999999, tzinfo=dt.UTC)
    core.patch_namespaced_pod_status("w-0", NS, {"status": {"conditions": [naive]}})
    stored = apiserver.store.get("pods", "w-0", NS)["status"]["conditions"][0]
    assert stored["lastTransitionTime"] == "2026-07-01T12:00:00Z", "metav1.Time keeps whole seconds"


# --- events --------------------------------------------------------------------------------------------------


def test_events_v1_create_and_core_view(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """An events.k8s.io/v1 Event is stored once and listed by both APIs (note -> message, regarding ->
    involvedObject), as kube-apiserver does."""
    events = client.EventsV1Api(core.api_client)
    event = client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="w-0.1234abcd", namespace=NS),
        event_time=MICRO_TIME, reporting_controller=SCHED, reporting_instance=f"{SCHED}-host",
        action="Binding", reason="Scheduled", type="Normal", note="Successfully assigned ml/w-0 to gpu-a1",
        regarding=client.V1ObjectReference(kind="Pod", namespace=NS, name="w-0", uid="u1"))
    events.create_namespaced_event(NS, event)
    (v1,) = events.list_namespaced_event(NS).items
    assert (v1.reason, v1.note, v1.regarding.name, v1.reporting_controller) == (
        "Scheduled", "Successfully assigned ml/w-0 to gpu-a1", "w-0", SCHED)
    (legacy,) = core.list_namespaced_event(NS, field_selector="involvedObject.name=w-0,reason=Scheduled").items
    assert (legacy.message, legacy.involved_object.kind, legacy.reporting_component) == (
        "Successfully assigned ml/w-0 to gpu-a1", "Pod", SCHED)


def test_events_v1_validation_is_422(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """events.k8s.io/v1 requires eventTime, reportingController, reportingInstance, action, reason."""
    events = client.EventsV1Api(core.api_client)
    with pytest.raises(client.ApiException) as info:
        events.create_namespaced_event(NS, client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="e1"), event_time=MICRO_TIME, reason="Scheduled",
            type="Normal"))
    body = status_of(info.value)
    assert (info.value.status, body["reason"]) == (422, "Invalid")
    assert sorted(c["field"] for c in body["details"]["causes"]) == ["action", "reportingController",
                                                                     "reportingInstance"]
    # The typed client refuses an Event without eventTime itself; send the raw JSON to see the server's answer.
    request = urllib.request.Request(f"{apiserver.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                                     data=json.dumps({"metadata": {"name": "e2"}, "type": "Normal"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=5)
    causes = json.loads(raw.value.read())["details"]["causes"]
    assert raw.value.code == 422 and {"eventTime", "reason"} <= {c["field"] for c in causes}
    assert core.list_namespaced_event(NS).items == []


def test_core_v1_event_create(core: client.CoreV1Api) -> None:
    """The core/v1 fallback event is accepted with the legacy fields."""
    core.create_namespaced_event(NS, client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="w-0.1"), involved_object=client.V1ObjectReference(
            kind="Pod", namespace=NS, name="w-0"), reason="FailedScheduling", message="0/4 nodes", type="Warning",
        source=client.V1EventSource(component=SCHED), count=1))
    (event,) = core.list_namespaced_event(NS, field_selector="type=Warning").items
    assert (event.reason, event.source.component) == ("FailedScheduling", SCHED)


# --- custom resources ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "version", "plural", "kind"),
    [("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup"),
     ("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup"),
     ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")],
    ids=["coscheduling", "volcano", "pytorchjob"],
)
def test_custom_objects_crud_and_watch(apiserver: ApiServer, core: client.CoreV1Api, group: str, version: str,
                                       plural: str, kind: str) -> None:
    """CustomObjectsApi create/get/list/watch/patch; strategic merge is 415 and PUT needs a resourceVersion."""
    custom = client.CustomObjectsApi(core.api_client)
    body = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": "job-a"}, "spec": {"minMember": 4}}
    created = custom.create_namespaced_custom_object(group, version, NS, plural, body)
    assert created["metadata"]["generation"] == 1
    listed = custom.list_namespaced_custom_object(group, version, NS, plural)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["job-a"]
    assert listed["items"][0]["kind"] == kind, "custom resource list items keep kind"
    patched = custom.patch_namespaced_custom_object(group, version, NS, plural, "job-a", {"spec": {"minMember": 8}})
    assert (patched["spec"]["minMember"], patched["metadata"]["generation"]) == (8, 2)
    events = take(watch.Watch().stream(custom.list_namespaced_custom_object, group, version, NS, plural,
                                       resource_version=created["metadata"]["resourceVersion"],
                                       _request_timeout=5), 1)
    assert events[0]["type"] == "MODIFIED" and events[0]["object"]["spec"]["minMember"] == 8
    with pytest.raises(client.ApiException) as smp:
        custom.patch_namespaced_custom_object(group, version, NS, plural, "job-a", {"spec": {}},
                                              _content_type="application/strategic-merge-patch+json")
    assert smp.value.status == 415
    unversioned = {**body, "metadata": {"name": "job-a"}}
    with pytest.raises(client.ApiException) as put:
        custom.replace_namespaced_custom_object(group, version, NS, plural, "job-a", unversioned)
    assert put.value.status == 422


# --- faults, request log, deletes, kubeconfig ------------------------------------------------------------------


def test_fail_next_injects_status_errors(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """fail_next(verb, path, status, times): the next matching requests fail with a real Status, then recover."""
    store = apiserver.store
    store.create("pods", make_pod("w-0"))
    store.fail_next("bind", r"/pods/w-0/binding$", 500, times=2, message="etcdserver: request timed out")
    store.fail_next("GET", r"^/api/v1/nodes$", 429)
    for _ in range(2):
        with pytest.raises(client.ApiException) as info:
            core.create_namespaced_pod_binding("w-0", NS, binding("w-0", "n1"), _preload_content=False)
        assert (info.value.status, status_of(info.value)["message"]) == (500, "etcdserver: request timed out")
    assert store.get("pods", "w-0", NS)["spec"].get("nodeName") is None
    assert core.create_namespaced_pod_binding("w-0", NS, binding("w-0", "n1"), _preload_content=False).status == 201
    with pytest.raises(client.ApiException) as throttled:
        core.list_node()
    assert (throttled.value.status, status_of(throttled.value)["reason"]) == (429, "TooManyRequests")
    assert core.list_node().items == []
    assert [r.status for r in store.find_requests(path_regex="binding")] == [500, 500, 201]


def test_retry_after_is_retried_by_urllib3(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Client behaviour worth knowing: a 429/503 carrying Retry-After is retried inside urllib3 (default
    Retry(3)), so the caller never sees it; the request log shows both attempts."""
    store = apiserver.store
    store.fail_next("list", r"^/api/v1/nodes$", 503, retry_after_s=0)
    assert core.list_node().items == []
    assert [r.status for r in store.find_requests("GET", r"^/api/v1/nodes$")] == [503, 200]


def test_request_log_records_queries(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """The log keeps method, path, decoded query and status for assertions."""
    core.list_pod_for_all_namespaces(field_selector="spec.nodeName=", limit=10)
    (record,) = apiserver.store.find_requests("GET", r"^/api/v1/pods$")
    assert (record.verb, record.status, record.query) == ("list", 200, {"fieldSelector": "spec.nodeName=",
                                                                        "limit": "10"})


def test_delete_returns_pod_or_status_and_emits_deleted(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """Pods DELETE returns the pod, nodes DELETE a Success Status; both emit DELETED; preconditions hold."""
    store = apiserver.store
    pod = core.create_namespaced_pod(NS, make_pod("w-0"))
    core.create_node(make_node("n1"))
    rv = pod.metadata.resource_version
    with pytest.raises(client.ApiException) as info:
        core.delete_namespaced_pod("w-0", NS, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid="other")))
    assert info.value.status == 409
    deleted = core.delete_namespaced_pod("w-0", NS)
    assert isinstance(deleted, client.V1Pod) and deleted.metadata.name == "w-0"
    status = core.delete_node("n1")
    assert status["status"] == "Success" and status["details"]["name"] == "n1"
    events = take(watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=rv,
                                       _request_timeout=5), 1)
    assert summary(events) == [("DELETED", "w-0")]
    assert store.get("pods", "w-0", NS) is None


def test_kubeconfig_file_and_token(tmp_path: Any) -> None:
    """write_kubeconfig() works with kubernetes.config; a token-protected server answers 401 without it."""
    with running_apiserver(token="s3cret") as server:
        path = server.write_kubeconfig(tmp_path / "kubeconfig")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
        with client.ApiClient(configuration) as api_client:
            assert client.CoreV1Api(api_client).list_node().items == []
        with client.ApiClient(client.Configuration(host=server.url)) as anonymous:
            with pytest.raises(client.ApiException) as info:
                client.CoreV1Api(anonymous).list_node()
        assert info.value.status == 401


def test_raw_watch_stream_format(apiserver: ApiServer) -> None:
    """On the wire: ``watch=1`` works, the body is chunked, one JSON event per line with type and object."""
    apiserver.store.create("nodes", make_node("n1"))
    with urllib.request.urlopen(f"{apiserver.url}/api/v1/nodes?watch=1&resourceVersion=0", timeout=5) as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        event = json.loads(resp.readline())
    assert (event["type"], event["object"]["kind"], event["object"]["metadata"]["name"]) == ("ADDED", "Node", "n1")


def test_generate_name_and_dry_run(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """generateName appends five characters; dryRun=All validates and answers without storing."""
    created = core.create_namespaced_pod(NS, {"metadata": {"generateName": "w-"}, "spec": make_pod("x")["spec"]})
    assert created.metadata.name.startswith("w-") and len(created.metadata.name) == 7
    before = apiserver.store.resource_version
    core.create_namespaced_pod(NS, make_pod("dry"), dry_run="All")
    assert apiserver.store.get("pods", "dry", NS) is None and apiserver.store.resource_version == before


def test_discovery_endpoints(apiserver: ApiServer, core: client.CoreV1Api) -> None:
    """/version, /api/v1 and /apis answer discovery documents (enough for kubectl-style clients)."""
    assert client.VersionApi(core.api_client).get_code().git_version.startswith("v1.36")
    with urllib.request.urlopen(f"{apiserver.url}/api/v1", timeout=5) as resp:
        names = {r["name"] for r in json.load(resp)["resources"]}
    assert {"pods", "pods/status", "pods/binding", "nodes", "events"} <= names
    with urllib.request.urlopen(f"{apiserver.url}/apis", timeout=5) as resp:
        groups = {g["name"] for g in json.load(resp)["groups"]}
    assert {"coordination.k8s.io", "events.k8s.io", "scheduling.x-k8s.io", "kubeflow.org"} <= groups
