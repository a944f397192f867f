"""The Kubernetes adapter on the official client: binding quirk, paging, bookmarks, leases, events."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

from scheduler.adapters import kube
from scheduler.ports import KubeApiError, LeaseRecord, ObjectRef
from tests.clock import ManualClock
from tests.integration import objects as o
from tests.integration.conftest import wait_for


@pytest.fixture
def api(apiserver):
    a = kube.KubeApi(apiserver.kube_config(), request_timeout_s=5)
    yield a
    a.close()


def test_generated_binding_method_raises_after_binding_but_ours_does_not(apiserver, api):
    """K8S.md 3.2: the server answers a Status, the generated client wants a V1Binding."""
    apiserver.store.create("nodes", o.node("n0"))
    for name in ("p1", "p2"):
        apiserver.store.create("pods", o.pod(name, 1))
    core = client.CoreV1Api(api.client)
    body = client.V1Binding(metadata=client.V1ObjectMeta(name="p1", namespace="default"),
                            target=client.V1ObjectReference(kind="Node", name="n0"))
    with pytest.raises(Exception):  # noqa: B017 - the client's own validation error, whatever its class
        core.create_namespaced_pod_binding("p1", "default", body)
    assert apiserver.store.get("pods", "p1")["spec"]["nodeName"] == "n0"  # ... although it worked

    uid = apiserver.store.get("pods", "p2")["metadata"]["uid"]
    kube.KubeBinder(api).bind(ObjectRef.pod("default", "p2", uid), "n0", {"toposched.io/gpus": "0"})
    pod = apiserver.store.get("pods", "p2")
    assert pod["spec"]["nodeName"] == "n0" and pod["metadata"]["annotations"]["toposched.io/gpus"] == "0"


def test_binding_errors_map_to_kube_api_error(apiserver, api):
    apiserver.store.create("nodes", o.node("n0"))
    apiserver.store.create("pods", o.pod("p", 1))
    binder = kube.KubeBinder(api)
    with pytest.raises(KubeApiError) as exc:
        binder.bind(ObjectRef.pod("default", "p", "wrong-uid"), "n0", {})
    assert exc.value.is_conflict and "Precondition failed" in exc.value.message
    with pytest.raises(KubeApiError) as exc:
        binder.bind(ObjectRef.pod("default", "missing"), "n0", {})
    assert exc.value.is_not_found and not exc.value.is_retriable
    apiserver.store.fail_next("POST", "binding", 503)
    with pytest.raises(KubeApiError) as exc:
        binder.bind(ObjectRef.pod("default", "p"), "n0", {})
    assert exc.value.status == 503 and exc.value.is_retriable


def test_unreachable_server_is_a_retriable_error():
    cfg = client.Configuration(host="http://127.0.0.1:9")  # discard port: nothing listens
    cfg.retries = 0
    a = kube.KubeApi(cfg, request_timeout_s=1)
    with pytest.raises(KubeApiError) as exc:
        a.request("GET", "/api/v1/nodes")
    assert exc.value.status == 0 and exc.value.is_retriable
    a.close()


def test_list_pages_through_continue_tokens(apiserver, api):
    for i in range(7):
        apiserver.store.create("nodes", o.node(f"n{i}"))
    items, rv = kube.list_all(api, kube.NODES, page_size=3)
    assert [n["metadata"]["name"] for n in items] == [f"n{i}" for i in range(7)]
    assert int(rv) == apiserver.store.resource_version
    assert len(apiserver.store.find_requests("GET", r"^/api/v1/nodes$")) == 3


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    def replace(self, resource, items):
        with self.lock:
            self.lists.append([i["metadata"]["name"] for i in items])

    def apply(self, resource, type_, obj):
        with self.lock:
            self.events.append((type_, obj["metadata"]["name"]))


def test_reflector_follows_bookmarks_and_relists_on_410(apiserver, api):
    apiserver.store.create("nodes", o.node("n0"))
    sink = Sink()
    r = kube.Reflector(api, kube.NODES, sink, watch_timeout_s=30).start()
    try:
        assert r.synced.wait(5)
        wait_for(lambda: r._resp is not None, what="watch open")
        apiserver.store.create("nodes", o.node("n1"))
        wait_for(lambda: ("ADDED", "n1") in sink.events, what="n1 ADDED")
        # bookmarks move the resume point past writes the watch did not match (another kind)
        apiserver.store.create("pods", o.pod("p", 0))
        apiserver.store.send_bookmarks()
        wait_for(lambda: int(r.resource_version) == apiserver.store.resource_version, what="bookmark")
        apiserver.store.expire_watches()
        apiserver.store.create("nodes", o.node("n2"))
        wait_for(lambda: any("n2" in names for names in sink.lists), what="re-list with n2")
        assert sink.lists[0] == ["n0"]
    finally:
        r.stop()


def test_optional_resource_that_is_not_served_is_empty_not_an_error(apiserver, api):
    sink = Sink()
    res = kube.Resource("widgets.example.com", "/apis/example.com/v1/widgets", optional=True)
    r = kube.Reflector(api, res, sink).start()
    try:
        assert r.synced.wait(5)
        assert sink.lists == [[]]
    finally:
        r.stop()


def test_lease_store_create_get_update_with_conflicts(apiserver, api):
    store = kube.KubeLeaseStore(api, "default", "toposched")
    assert store.get() is None
    rec = store.create(LeaseRecord("a", 15, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z", 0))
    assert store.get() == rec and rec.resource_version
    newer = store.update(LeaseRecord("a", 15, rec.acquire_time, "2026-01-01T00:00:02.000000Z", 0,
                                     rec.resource_version))
    assert newer.renew_time == "2026-01-01T00:00:02.000000Z"
    with pytest.raises(KubeApiError) as exc:
        store.update(rec)  # stale resourceVersion
    assert exc.value.is_conflict
    with pytest.raises(KubeApiError) as exc:
        store.create(rec.__class__("b"))
    assert exc.value.is_conflict


def test_event_sink_writes_events_k8s_io_v1(apiserver, api):
    apiserver.store.create("pods", o.pod("p", 1))
    uid = apiserver.store.get("pods", "p")["metadata"]["uid"]
    sink = kube.KubeEventSink(api, "toposched", "toposched-host")
    sink.emit(ObjectRef.pod("default", "p", uid), "Warning", "FailedScheduling", "Scheduling", "x" * 2000)
    (event,) = apiserver.store.list("events")
    assert event["reason"] == "FailedScheduling" and event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == uid
    assert len(event["message"].encode()) <= 1024 and event["message"].endswith(" ...")


# -- client-side rate limit -----------------------------------------------------------------


class SleepingClock(ManualClock):
    """A manual clock whose sleep moves it (and records how long each sleep was)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


def test_token_bucket_spends_the_burst_then_keeps_the_rate():
    clock = SleepingClock()
    bucket = kube.TokenBucket(10, 3, clock=clock, sleep=clock.sleep)
    waits = [bucket.wait() for _ in range(6)]
    assert waits[:3] == [0, 0, 0]
    assert waits[3:] == pytest.approx([0.1, 0.1, 0.1])
    clock.advance(10)  # idle: saves up to the burst again, not more
    assert [bucket.wait() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_token_bucket_queues_concurrent_callers_at_the_rate():
    """Reservations made at one instant are spaced 1/qps apart, whichever thread asks."""
    clock = ManualClock()
    bucket = kube.TokenBucket(20, 2, clock=clock)
    delays: list[float] = []
    lock = threading.Lock()

    def ask() -> None:
        for _ in range(5):
            d = bucket.reserve()
            with lock:
                delays.append(d)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(delays) == pytest.approx([0, 0] + [k / 20 for k in range(1, 19)])


@pytest.mark.parametrize("qps, burst", [(0, 10), (-1, 10), (5, 0)])
def test_token_bucket_refuses_a_meaningless_rate(qps, burst):
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        kube.TokenBucket(qps, burst)
    assert kube.rate_limiter(0, 10) is None


def test_requests_wait_for_the_limit_but_the_lease_does_not(apiserver):
    """Over real HTTP: the fifth request of a burst of four waits 1/qps; the unlimited twin never waits."""
    clock = SleepingClock()
    throttled: list[float] = []
    api = kube.KubeApi(apiserver.kube_config(), request_timeout_s=5, on_throttle=throttled.append,
                       limiter=kube.TokenBucket(4, 4, clock=clock, sleep=clock.sleep))
    try:
        apiserver.store.create("nodes", o.node("n0"))
        for _ in range(6):
            assert api.request("GET", "/api/v1/nodes/n0")["metadata"]["name"] == "n0"
        assert throttled == pytest.approx([0.25, 0.25])
        lease = kube.KubeLeaseStore(api.unlimited(), "kube-system", "toposched")
        lease.create(LeaseRecord(holder="me", lease_duration_s=15))
        assert lease.get().holder == "me"
        assert len(clock.sleeps) == 2  # the lease calls took no token
    finally:
        api.close()


def test_closing_the_bucket_wakes_waiters_and_stops_limiting():
    """Shutdown must not queue behind the rate limit: close() releases a sleeper at once."""
    bucket = kube.TokenBucket(0.01, 1)  # one token, then one every 100 s
    assert bucket.wait() == 0
    done = threading.Event()
    threading.Thread(target=lambda: (bucket.wait(), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # waiting for a token 100 s away
    bucket.close()
    assert done.wait(2)
    assert bucket.wait() == 0
