"""A real kube-scheduler, configured from deploy/extender/, places GPU pods through toposched.

Needs a cluster (``TOPOSCHED_E2E_KUBECONFIG``) and a ``kube-scheduler`` binary
(``TOPOSCHED_E2E_KUBE_SCHEDULER``, else ``kube-scheduler`` on PATH); skipped otherwise.
Runs on this machine: toposched's extender in-process, kube-scheduler as a subprocess
with deploy/extender/kube-scheduler-config.yaml, changed only where a local run must differ
(kubeconfig, no leader election, the extender's local URL, a unique profile name). The test
creates three fake 8-GPU Nodes (no kubelet) labelled for this run, a 4-GPU pod and a 2-member
gang pinned to them with a nodeSelector, and removes everything afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

KUBECONFIG = os.environ.get("TOPOSCHED_E2E_KUBECONFIG")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not KUBECONFIG, reason="TOPOSCHED_E2E_KUBECONFIG is not set")]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "extender"
RUN = uuid.uuid4().hex[:6]
SCHEDULER = f"toposched-e2e-{RUN}"
LABEL = "toposched.io/e2e-run"
NAMESPACE = "default"


def _kube_scheduler() -> str:
    path = os.environ.get("TOPOSCHED_E2E_KUBE_SCHEDULER") or shutil.which("kube-scheduler")
    if not path:
        pytest.skip("no kube-scheduler binary (set TOPOSCHED_E2E_KUBE_SCHEDULER or put it on PATH)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    from scheduler.adapters.kube import KubeApi, load_configuration

    client = KubeApi(load_configuration(KUBECONFIG), request_timeout_s=10.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def fake_nodes(api) -> Iterator[list[str]]:
    names = [f"toposched-e2e-{RUN}-{i}" for i in range(3)]
    for name in names:
        api.request("POST", "/api/v1/nodes", body={
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {LABEL: RUN, "kubernetes.io/hostname": name}}})
        status = {"capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                  "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                  "message": "toposched e2e fake node"}]}
        api.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": status},
                    content_type="application/merge-patch+json")
    yield names
    for name in names:
        try:
            api.request("DELETE", f"/api/v1/nodes/{name}")
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


@pytest.fixture(scope="module")
def extender_and_scheduler(api, fake_nodes, tmp_path_factory) -> Iterator[Any]:
    from scheduler.adapters.kube import load_configuration
    from scheduler.extender.service import ExtenderOptions, ExtenderService
    from scheduler.serve_config import ServeConfig

    binary = _kube_scheduler()
    config = ServeConfig(scheduler_name=SCHEDULER, metrics_port=0, metrics_address="127.0.0.1")
    svc = ExtenderService(config, load_configuration(KUBECONFIG),
                          ExtenderOptions(host="127.0.0.1", port=0, url_prefix="/toposched", status_port=0))
    svc.start()
    assert svc.wait_ready(60), svc.ready()[1]

    ks_config = yaml.safe_load((DEPLOY / "kube-scheduler-config.yaml").read_text())
    ks_config["clientConnection"] = {"kubeconfig": KUBECONFIG}
    ks_config["leaderElection"] = {"leaderElect": False}
    ks_config["profiles"][0]["schedulerName"] = SCHEDULER
    ks_config["extenders"][0]["urlPrefix"] = svc.server.url
    path = tmp_path_factory.mktemp("kube-scheduler") / "config.yaml"
    path.write_text(yaml.safe_dump(ks_config))
    log = path.parent / "kube-scheduler.log"
    with log.open("w") as out:
        proc = subprocess.Popen([binary, f"--config={path}", "--bind-address=127.0.0.1",
                                 f"--secure-port={_free_port()}", f"--authentication-kubeconfig={KUBECONFIG}",
                                 f"--authorization-kubeconfig={KUBECONFIG}", "--v=2"], stdout=out, stderr=out)
    try:
        yield svc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        svc.stop()


def _pod(name: str, gpus: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    res = {"cpu": "100m", "nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL: RUN},
                         "annotations": annotations or {}},
            "spec": {"schedulerName": SCHEDULER, "nodeSelector": {LABEL: RUN},
                     "containers": [{"name": "c", "image": "registry.invalid/cuda:1",
                                     "resources": {"requests": res, "limits": res}}]}}


@pytest.fixture
def created(api) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        try:  # no kubelet on the fake nodes: delete at once
            api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                        body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


def _wait_bound(api, names: list[str], timeout_s: float = 90.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        pods = {n: api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{n}") for n in names}
        if all(p["spec"].get("nodeName") for p in pods.values()):
            return pods
        if time.monotonic() > deadline:
            pytest.fail(f"not bound after {timeout_s}s: {[n for n, p in pods.items() if not p['spec'].get('nodeName')]}")
        time.sleep(0.5)


def test_gpu_pod_is_placed_and_bound_by_toposched(api, fake_nodes, extender_and_scheduler, created):
    api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=_pod(f"e2e-{RUN}-single", 4))
    created.append(f"e2e-{RUN}-single")
    pod = _wait_bound(api, created)[created[0]]
    assert pod["spec"]["nodeName"] in fake_nodes
    notes = pod["metadata"]["annotations"]
    assert len(notes["toposched.io/gpus"].split(",")) == 4  # written by toposched's bind verb


def test_gang_members_land_on_the_nodes_toposched_reserved(api, fake_nodes, extender_and_scheduler, created):
    gang = {"toposched.io/gang": f"e2e-{RUN}", "toposched.io/gang-size": "2"}
    for i in range(2):
        name = f"e2e-{RUN}-w{i}"
        api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=_pod(name, 8, gang))
        created.append(name)
    pods = _wait_bound(api, created)
    nodes = {p["spec"]["nodeName"] for p in pods.values()}
    assert len(nodes) == 2 and nodes <= set(fake_nodes)
    assert all(p["metadata"]["annotations"]["toposched.io/gpus"] == "0,1,2,3,4,5,6,7" for p in pods.values())
