"""Bad input and API errors never stop the loop; health, readiness and metrics over HTTP."""

from __future__ import annotations

import time
import urllib.request

from tests.integration import objects as o
from tests.integration.conftest import bound_pods, events_for, fast_config, wait_for


def start(schedulers, **config):
    svc = schedulers.start(config=fast_config(**config)) if config else schedulers.start()
    wait_for(lambda: svc.is_leader, what="the lease")
    return svc


def test_malformed_annotation_gets_an_event_and_the_loop_carries_on(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    start(schedulers)
    apiserver.store.create("pods", o.pod("bad", 1, annotations={"toposched.io/gpu-milli": "lots"}))
    apiserver.store.create("pods", o.pod("good", 1))
    wait_for(lambda: "good" in bound_pods(apiserver), what="the good pod bound")
    events = wait_for(lambda: events_for(apiserver, "bad", "FailedScheduling"), what="event on the bad pod")
    assert "toposched.io/gpu-milli" in events[0]["message"] and '"lots"' in events[0]["message"]
    assert "bad" not in bound_pods(apiserver)

    # fixing the pod (here: re-creating it without the bad annotation) gets it placed
    apiserver.store.delete("pods", "bad")
    apiserver.store.create("pods", o.pod("bad", 1))
    wait_for(lambda: "bad" in bound_pods(apiserver), what="the fixed pod bound")


def test_unsupported_constraint_is_refused_with_an_event(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    start(schedulers)
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "x"}}}]}}
    apiserver.store.create("pods", o.pod("anti", 1, affinity=anti))
    events = wait_for(lambda: events_for(apiserver, "anti", "FailedScheduling"), what="event")
    assert "podAntiAffinity" in events[0]["message"]
    assert not bound_pods(apiserver)


def test_node_with_unreadable_topology_annotation_is_left_out(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("broken", 8, rack="r0", annotations={"toposched.io/topology": "{nope"}))
    apiserver.store.create("nodes", o.node("fine", 8, rack="r0"))
    svc = start(schedulers)
    apiserver.store.create("pods", o.pod("p", 8))
    wait_for(lambda: bound_pods(apiserver) == {"p": "fine"}, what="p on the readable node")
    assert "broken" in svc.scheduler.cache.invalid_nodes
    assert svc.metrics.invalid_objects._value.get() == 1


def test_bind_errors_are_retried_and_reported(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    apiserver.store.fail_next("POST", r"/pods/p403/binding$", 403, message="forbidden for a moment")
    apiserver.store.fail_next("POST", r"/pods/p409/binding$", 409, message="conflict")
    apiserver.store.fail_next("POST", r"/pods/p503/binding$", 503, times=2)
    start(schedulers)
    for name in ("p403", "p409", "p503"):
        apiserver.store.create("pods", o.pod(name, 1))
    wait_for(lambda: len(bound_pods(apiserver)) == 3, what="all bound after retries")
    notes = [e["message"] for e in wait_for(lambda: events_for(apiserver, "p403", "FailedScheduling"),
                                            what="event on p403")]
    assert "403" in notes[0] and "forbidden for a moment" in notes[0]


def test_bind_timeout_that_succeeded_on_the_server_is_not_double_booked(apiserver, schedulers):
    #   one node, 8 GPUs; the first bind answers after the client gave up, but the server did bind
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    apiserver.store.delay_next("POST", r"/pods/slow/binding$", 1.5)
    svc = start(schedulers, request_timeout_s=0.5)
    apiserver.store.create("pods", o.pod("slow", 6))
    wait_for(lambda: "slow" in bound_pods(apiserver), what="the slow bind to land")
    apiserver.store.create("pods", o.pod("next", 4))  # does not fit next to slow's 6 GPUs
    wait_for(lambda: events_for(apiserver, "next", "FailedScheduling"), what="next unschedulable")
    assert "next" not in bound_pods(apiserver)
    svc.scheduler.cache.ledger.check_invariants()
    assert svc.scheduler.cache.ledger.get("default/slow").gpus == (0, 1, 2, 3, 4, 5)


def test_api_server_errors_on_lists_are_retried(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    apiserver.store.fail_next("GET", r"^/api/v1/pods$", 500, times=2)
    svc = schedulers.start(wait_ready=False)
    assert svc.wait_ready(10)
    apiserver.store.create("pods", o.pod("p", 1))
    wait_for(lambda: "p" in bound_pods(apiserver), what="p bound")


def test_events_fall_back_to_core_v1(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    apiserver.store.fail_next("POST", r"^/apis/events.k8s.io/v1/", 404, times=1)
    svc = start(schedulers)
    apiserver.store.create("pods", o.pod("p", 1))
    wait_for(lambda: events_for(apiserver, "p", "Scheduled"), what="Scheduled event")
    assert svc.events.use_core
    assert apiserver.store.find_requests("POST", r"^/api/v1/namespaces/default/events$")


def test_gated_pod_waits_until_its_gate_is_removed(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    svc = start(schedulers)
    apiserver.store.create("pods", o.pod("gated", 1, schedulingGates=[{"name": "example.com/wait"}]))
    wait_for(lambda: "default/gated" in svc.scheduler.cache.gated, what="gated pod seen")
    assert not bound_pods(apiserver)
    apiserver.store.mutate("pods", "gated", "default", lambda p: p["spec"].pop("schedulingGates") and None)
    wait_for(lambda: "gated" in bound_pods(apiserver), what="bound once ungated")


def test_pods_of_other_schedulers_count_but_are_not_placed(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    start(schedulers)
    apiserver.store.create("pods", o.pod("theirs", 8, scheduler="default-scheduler"))
    apiserver.store.bind("default", "theirs", "n0")
    apiserver.store.create("pods", o.pod("waiting", 8, scheduler="default-scheduler"))
    apiserver.store.create("pods", o.pod("ours", 1))
    events = wait_for(lambda: events_for(apiserver, "ours", "FailedScheduling"), what="ours unschedulable")
    assert "0/1 nodes are available" in events[0]["message"]
    assert "waiting" not in bound_pods(apiserver)


def test_health_readiness_and_metrics_endpoints(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    svc = schedulers.start(serve_http=True)
    wait_for(lambda: svc.is_leader, what="the lease")
    apiserver.store.create("pods", o.pod("p", 2))
    wait_for(lambda: "p" in bound_pods(apiserver), what="p bound")
    base = f"http://127.0.0.1:{svc.http.port}"

    def get(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(base + path, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, resp.read().decode()

    assert get("/healthz") == (200, "ok\n")
    assert get("/readyz") == (200, "ok (leader)\n")
    text = wait_for(lambda: (t := get("/metrics")[1]) and 'toposched_gpus{model="NVIDIA-H100-80GB-HBM3",state="allocated"} 2.0' in t and t,
                    what="GPU gauges")
    for name in ('scheduler_schedule_attempts_total{profile="toposched",result="scheduled"} 1.0',
                 "scheduler_scheduling_attempt_duration_seconds_bucket", 'scheduler_pending_pods{queue="active"}',
                 "toposched_leader 1.0", "toposched_gang_placement_duration_seconds",
                 'toposched_solver_results_total{status="GREEDY"} 1.0', "toposched_gpu_fragmentation_ratio"):
        assert name in text, name


def test_stopping_the_leader_lets_its_bindings_land_before_the_lease_is_released(apiserver, schedulers):
    """A rolling update: the old leader's binding is still in flight when it stops; the standby
    must not take over (and place on the same GPUs) before that binding has landed."""
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    a = start(schedulers, preemption=False)  # z must wait, not evict x
    b = schedulers.start("b", config=fast_config(preemption=False))
    apiserver.store.delay_next("POST", r"/pods/x/binding$", 1.0)
    apiserver.store.create("pods", o.pod("x", 8))
    wait_for(lambda: a.scheduler._inflight, what="x's binding in flight")
    apiserver.store.create("pods", o.pod("z", 8, priority=1000))
    schedulers.stop(a)
    wait_for(lambda: b.is_leader, what="b leads")
    time.sleep(0.5)
    assert bound_pods(apiserver) == {"x": "n0"}  # never a second 8-GPU pod on n0


def test_a_failed_unschedulable_condition_write_is_written_on_a_later_attempt(apiserver, schedulers):
    apiserver.store.create("nodes", o.node("n0", 8, rack="r0"))
    apiserver.store.fail_next("PATCH", r"/pods/big/status$", 500)
    start(schedulers)
    apiserver.store.create("pods", o.pod("big", 16))

    def condition():
        conds = (apiserver.store.get("pods", "big", "default").get("status") or {}).get("conditions") or []
        return [c for c in conds if c.get("type") == "PodScheduled" and c.get("status") == "False"]

    assert wait_for(condition, timeout_s=15, what="PodScheduled=False written after the failed write")


def test_a_read_that_times_out_is_not_repeated_behind_the_callers_back(apiserver):
    """urllib3 would re-send a timed-out GET three times, so a 1 s lease read could take 4 s."""
    from scheduler.adapters import kube

    api = kube.KubeApi(apiserver.kube_config())
    store = kube.KubeLeaseStore(api, "default", "slow", timeout_s=0.3)
    apiserver.store.delay_next("GET", r"/leases/slow$", 1.0, times=4)
    started = time.monotonic()
    try:
        store.get()
    except kube.KubeApiError as exc:
        assert exc.reason == "Timeout"
    else:
        raise AssertionError("the read did not time out")
    assert time.monotonic() - started < 0.9
    time.sleep(1.2)  # the server logs a request once it has answered it
    assert len(apiserver.store.find_requests("GET", r"/leases/slow$")) == 1
    api.close()
