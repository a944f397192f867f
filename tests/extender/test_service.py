"""The whole extender against the local API server: reflectors fill the cache, HTTP verbs decide, bind writes.

Cluster: rack r1: n1, n2 (8 GPUs each).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from models.spec import LevelSpec
from scheduler.extender.service import ExtenderOptions, ExtenderService
from scheduler.serve_config import ServeConfig
from tests.polling import wait_for

from .conftest import RACK_LABEL, gang_pod, gpu_pod, k8s_node


@pytest.fixture
def extender(apiserver):
    """An extender service watching the test API server; binds through it."""
    for name in ("n1", "n2"):
        apiserver.store.create("nodes", k8s_node(name, rack="r1"))
    config = ServeConfig(levels=[LevelSpec(name="rack", label=RACK_LABEL)], watch_timeout_s=5,
                         request_timeout_s=5.0, metrics_port=0, metrics_address="127.0.0.1", gang_timeout_s=30)
    cfg = apiserver.kube_config()
    svc = ExtenderService(config, cfg, ExtenderOptions(port=0, url_prefix="/toposched", status_port=0))
    svc.start()
    assert svc.wait_ready(10), svc.ready()[1]
    yield svc
    svc.stop()


def post(svc: ExtenderService, verb: str, body: dict[str, Any]) -> Any:
    conn = http.client.HTTPConnection(*svc.server.address, timeout=10)
    conn.request("POST", f"/toposched/{verb}", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200, data
    return json.loads(data)


def create_pod(apiserver, pod: dict[str, Any]) -> dict[str, Any]:
    pod = {**pod, "metadata": {k: v for k, v in pod["metadata"].items() if k != "uid"}}
    return apiserver.store.create("pods", pod)


def bind_args(pod: dict[str, Any], node: str) -> dict[str, str]:
    m = pod["metadata"]
    return {"PodName": m["name"], "PodNamespace": m["namespace"], "PodUID": m["uid"], "Node": node}


def test_bind_writes_the_annotation_and_the_binding(apiserver, extender):
    pod = create_pod(apiserver, gpu_pod("train", 4))
    res = post(extender, "filter", {"Pod": pod, "NodeNames": ["n1", "n2"]})
    assert res["NodeNames"] == ["n1", "n2"]
    assert post(extender, "bind", bind_args(pod, "n2")) == {"Error": ""}
    stored = apiserver.store.get("pods", "train", "ml")
    assert stored["spec"]["nodeName"] == "n2"
    notes = stored["metadata"]["annotations"]
    assert len(notes["toposched.io/gpus"].split(",")) == 4
    record = json.loads(notes["toposched.io/assignment"])
    assert record["node"] == "n2" and len(record["gpus"]) == 4
    bindings = apiserver.store.find_requests("POST", r"/pods/train/binding")
    assert len(bindings) == 1
    # the watch confirms it; an 8-GPU pod now fits only on n1
    wait_for(lambda: extender.state.cache.bound.get("ml/train"), what="the watch to show the bound pod")
    big = create_pod(apiserver, gpu_pod("big", 8))
    res = post(extender, "filter", {"Pod": big, "NodeNames": ["n1", "n2"]})
    assert res["NodeNames"] == ["n1"]
    assert set(res["FailedNodes"]) == {"n2"}


def test_pods_bound_by_kube_scheduler_are_learnt_from_the_watch(apiserver, extender):
    """No bind verb: kube-scheduler binds, the watch tells the cache, occupancy follows."""
    pod = create_pod(apiserver, gpu_pod("outside", 8))
    apiserver.store.bind("ml", "outside", "n1")
    wait_for(lambda: extender.state.cache.bound.get("ml/outside"), what="the watch")
    other = create_pod(apiserver, gpu_pod("next", 1))
    assert post(extender, "filter", {"Pod": other, "NodeNames": ["n1", "n2"]})["NodeNames"] == ["n2"]
    assert pod["metadata"]["name"] == "outside"


def test_gang_members_reach_their_slots_and_bind(apiserver, extender):
    members = [create_pod(apiserver, gang_pod(f"w-{i}", "pair", 2, scheduler="toposched"))
               for i in range(2)]
    wait_for(lambda: len(extender.state.pending_group_pods("ml/pair")) == 2, what="pending members")
    chosen = []
    for pod in members:
        res = post(extender, "filter", {"Pod": pod, "NodeNames": ["n1", "n2"]})
        assert len(res["NodeNames"]) == 1
        chosen.append(res["NodeNames"][0])
    assert sorted(chosen) == ["n1", "n2"]
    for pod, node in zip(members, chosen, strict=True):
        assert post(extender, "bind", bind_args(pod, node)) == {"Error": ""}
    stored = {p["metadata"]["name"]: p for p in apiserver.store.list("pods", "ml")}
    assert {stored[f"w-{i}"]["spec"]["nodeName"] for i in range(2)} == {"n1", "n2"}
    assert all(stored[f"w-{i}"]["metadata"]["annotations"]["toposched.io/gpus"] == "0,1,2,3,4,5,6,7"
               for i in range(2))


def test_metrics_count_requests(apiserver, extender):
    post(extender, "filter", {"Pod": {"metadata": {"name": "x"}}, "NodeNames": []})
    conn = http.client.HTTPConnection("127.0.0.1", extender.status.port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert 'toposched_extender_request_duration_seconds_count{code="200",verb="filter"} 1.0' in text
    conn.request("GET", "/readyz")
    assert conn.getresponse().status == 200
