"""Publishing against the test apiserver: annotation and missing GFD labels written, others untouched,
and the scheduler's reader gets the same topology back from the patched Node."""

from __future__ import annotations

from typing import Any

import pytest

from models.errors import KubeApiError
from models.readers.annotation import ANNOTATION_KEY, decode_annotation, encode_topology
from models.readers.k8s_node import node_from_k8s
from scheduler.agent.discover import discover
from scheduler.agent.publish import OWNED_LABELS_ANNOTATION, core_api, publish
from scheduler.cli import main
from tests.agent.records import RECORDS, record, replay

PRODUCT, COUNT, MEMORY = "nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"


def make_node(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
              gpus: int = 8) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "224", "memory": "2Ti", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.fixture
def api(apiserver):
    return core_api(configuration=apiserver.kube_config())


def test_publish_writes_annotation_and_only_missing_labels(apiserver, api, sysfs):
    apiserver.store.create("nodes", make_node("gpu-1", labels={PRODUCT: "H100-by-GFD", "rack": "r7"}))
    found = discover(replay("dgx-h100"), None, sys_root=sysfs)
    result = publish(api, "gpu-1", {ANNOTATION_KEY: encode_topology(found.topology, source=found.source)},
                     found.gfd_labels())
    node = apiserver.store.get("nodes", "gpu-1")
    labels = node["metadata"]["labels"]
    assert labels[PRODUCT] == "H100-by-GFD"  # GFD's value is left alone
    assert labels["rack"] == "r7"
    assert (labels[COUNT], labels[MEMORY]) == ("8", "81559")
    assert result.labels_written == {COUNT: "8", MEMORY: "81559"}
    assert result.labels_kept == {PRODUCT: "H100-by-GFD"}
    assert node["metadata"]["annotations"][OWNED_LABELS_ANNOTATION] == f"{COUNT}=8,{MEMORY}=81559"
    assert decode_annotation(node["metadata"]["annotations"][ANNOTATION_KEY], "gpu-1").topology == found.topology


def test_labels_this_agent_wrote_follow_the_node_and_others_never_do(apiserver, api):
    apiserver.store.create("nodes", make_node("gpu-2", labels={MEMORY: "80000"}))
    publish(api, "gpu-2", {}, {COUNT: "8", MEMORY: "81559"})
    result = publish(api, "gpu-2", {}, {COUNT: "7", MEMORY: "81559"})  # a GPU fell off the bus
    labels = apiserver.store.get("nodes", "gpu-2")["metadata"]["labels"]
    assert labels == {COUNT: "7", MEMORY: "80000"}
    assert result.labels_written == {COUNT: "7"}
    publish(api, "gpu-2", {}, {})  # no GPUs any more: our label goes, GFD's stays
    node = apiserver.store.get("nodes", "gpu-2")
    assert node["metadata"]["labels"] == {MEMORY: "80000"}
    assert OWNED_LABELS_ANNOTATION not in node["metadata"].get("annotations", {})


def test_a_label_someone_changed_after_the_agent_wrote_it_is_theirs(apiserver, api):
    apiserver.store.create("nodes", make_node("gpu-5"))
    publish(api, "gpu-5", {}, {PRODUCT: "NVIDIA-A100-SXM4-40GB", COUNT: "8"})  # the agent came first
    apiserver.store.mutate("nodes", "gpu-5", None, lambda n: n["metadata"]["labels"].update(
        {PRODUCT: "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", COUNT: "56"}))  # then GPU Feature Discovery
    for _ in range(2):
        result = publish(api, "gpu-5", {}, {PRODUCT: "NVIDIA-A100-SXM4-40GB", COUNT: "8"})
    labels = apiserver.store.get("nodes", "gpu-5")["metadata"]["labels"]
    assert (labels[PRODUCT], labels[COUNT]) == ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "56")
    assert result.labels_written == {} and set(result.labels_kept) == {PRODUCT, COUNT}


def test_a_node_that_does_not_answer_fails_the_round_within_the_timeout():
    import socket
    import time

    from kubernetes import client

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    cfg = client.Configuration(host=f"http://127.0.0.1:{silent.getsockname()[1]}")
    started = time.monotonic()
    with pytest.raises(KubeApiError, match="read node gpu-6"):
        publish(core_api(configuration=cfg), "gpu-6", {}, {}, timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    silent.close()


def test_publishing_the_same_again_patches_nothing(apiserver, api):
    apiserver.store.create("nodes", make_node("gpu-3"))
    assert publish(api, "gpu-3", {"a": "1"}, {COUNT: "8"}).changed
    apiserver.store.clear_requests()
    assert not publish(api, "gpu-3", {"a": "1"}, {COUNT: "8"}).changed
    assert apiserver.store.find_requests(method="PATCH") == []


def test_unknown_node_names_the_fix(apiserver, api):
    with pytest.raises(KubeApiError, match="404 Not Found: read node gpu-x: node 'gpu-x' does not exist: set NODE_NAME"):
        publish(api, "gpu-x", {}, {})


def test_forbidden_patch_points_at_the_rbac(apiserver, api):
    apiserver.store.create("nodes", make_node("gpu-4"))
    apiserver.store.fail_next("patch", r"/api/v1/nodes/gpu-4", 403)
    with pytest.raises(KubeApiError, match="403 .*patch node gpu-4: .*deploy/agent/rbac.yaml"):
        publish(api, "gpu-4", {"a": "1"}, {})


# -- the whole agent: discover --publish, then the scheduler reads the node -----------------------


def test_cli_publishes_a_topology_the_scheduler_reads(apiserver, tmp_path, sysfs, capsys):
    apiserver.store.create("nodes", make_node("dgx-1", labels={"nvidia.com/gpu.product": "Tesla-V100-SXM2-32GB"}))
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    status = main(["discover", "--publish", "--node-name", "dgx-1", "--kubeconfig", str(kubeconfig),
                   "--replay", str(RECORDS / "dgx1-v100.json"), "--no-nvidia-smi", "--sys-root", str(sysfs)])
    assert status == 0
    err = capsys.readouterr().err
    assert "published on node dgx-1: toposched.io/topology; labels written: nvidia.com/gpu.count=8" in err
    node = apiserver.store.get("nodes", "dgx-1")
    spec = node_from_k8s(node, [])
    expected = discover(replay(record("dgx1-v100")), None, sys_root=sysfs).topology
    assert spec.topology == expected
    assert spec.topology.nvlink_matrix()[0] == [0, 1, 1, 2, 2, 0, 0, 0]
    assert decode_annotation(node["metadata"]["annotations"][ANNOTATION_KEY], "dgx-1").source == "nvml"


def test_cli_loop_publishes_once_then_finds_it_up_to_date(apiserver, tmp_path, sysfs, capsys):
    apiserver.store.create("nodes", make_node("gpu-5"))
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    status = main(["discover", "--publish", "--node-name", "gpu-5", "--kubeconfig", str(kubeconfig),
                   "--replay", str(RECORDS / "dgx-h100.json"), "--no-nvidia-smi", "--sys-root", str(sysfs),
                   "--interval", "0.01", "--rounds", "2"])
    assert status == 0
    err = capsys.readouterr().err
    assert "published on node gpu-5" in err
    assert "round 2: topology unchanged" in err and "node gpu-5: already up to date" in err


def test_cli_publish_to_a_missing_node_fails_with_exit_2(apiserver, tmp_path, sysfs, capsys):
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    status = main(["discover", "--publish", "--node-name", "nope", "--kubeconfig", str(kubeconfig),
                   "--replay", str(RECORDS / "dgx-h100.json"), "--no-nvidia-smi", "--sys-root", str(sysfs)])
    assert status == 2
    assert "toposched: error: Kubernetes API 404 Not Found: read node nope" in capsys.readouterr().err
