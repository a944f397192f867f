"""Kubernetes Node dicts -> NodeSpec: quantities, labels, annotation, state, level inference."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from models.errors import SpecError
from models.readers.annotation import ANNOTATION_KEY, encode_topology
from models.readers.k8s_node import levels_from_labels, node_from_k8s, node_resources, parse_quantity
from models.spec import GpuSpec, LevelSpec, NodeTopologySpec, NvSwitchSpec, TaintSpec

GKE = {"cloud.google.com/gce-topology-block": "b1", "cloud.google.com/gce-topology-subblock": "sb3",
       "cloud.google.com/gce-topology-host": "h42"}
EKS = {f"topology.k8s.aws/network-node-layer-{i}": f"nn-{i}" for i in (1, 2, 3)}
TOPOGRAPH = {"network.topology.nvidia.com/core": "c0", "network.topology.nvidia.com/spine": "s1",
             "network.topology.nvidia.com/leaf": "l7", "network.topology.nvidia.com/accelerator": "nvl-3"}
GFD = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}


def k8s_node(name: str = "gpu-1", *, labels: dict[str, str] | None = None, allocatable: dict[str, Any] | None = None,
             ready: str | None = "True", taints: list[dict[str, Any]] | None = None, unschedulable: bool | None = None,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node as the API serves it (camelCase JSON), with only the fields we read."""
    alloc = {"cpu": "95500m", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8"}
    node: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})},
        "spec": {},
        "status": {"allocatable": alloc if allocatable is None else allocatable,
                   "capacity": {"cpu": "96", "memory": "2Ti", "nvidia.com/gpu": "8"}},
    }
    if ready is not None:
        node["status"]["conditions"] = [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready, "reason": "KubeletReady"},
        ]
    if taints is not None:
        node["spec"]["taints"] = taints
    if unschedulable is not None:
        node["spec"]["unschedulable"] = unschedulable
    return node


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("96", Decimal(96)), ("95500m", Decimal("95.5")), ("0.5", Decimal("0.5")), (".5", Decimal("0.5")),
        ("1k", Decimal(1000)), ("1M", Decimal(10**6)), ("2G", Decimal(2 * 10**9)), ("1T", Decimal(10**12)),
        ("1P", Decimal(10**15)), ("1E", Decimal(10**18)), ("1Ki", Decimal(1024)), ("512Gi", Decimal(512 * 2**30)),
        ("1048576Ki", Decimal(2**30)), ("2Ti", Decimal(2 * 2**40)), ("1Pi", Decimal(2**50)), ("1Ei", Decimal(2**60)),
        ("1.5Gi", Decimal(3 * 2**29)), ("1e3", Decimal(1000)), ("1E3", Decimal(1000)), ("5e-3", Decimal("0.005")),
        ("100n", Decimal("0.0000001")), ("250u", Decimal("0.00025")), ("+4", Decimal(4)), ("-1k", Decimal(-1000)),
        ("137438953472", Decimal(137438953472)), (8, Decimal(8)),
    ],
    ids=lambda v: str(v) if isinstance(v, str | int) and not isinstance(v, Decimal) else None,
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1 Gi", "1KiB", "Gi", "1e", "1.2.3", "ten", "1ki", "0x10", None, True],
                         ids=["empty", "space", "KiB", "no-number", "bare-e", "two-dots", "word", "lower-ki", "hex",
                              "none", "bool"])
def test_parse_quantity_rejects(text):
    with pytest.raises(SpecError, match=r"^n1: status.allocatable.cpu: not a Kubernetes quantity"):
        parse_quantity(text, source="n1", path="status.allocatable.cpu")


@pytest.mark.parametrize(
    ("memory", "mib"),
    [("2Ti", 2 * 1024 * 1024), ("1048576Ki", 1024), ("512Gi", 512 * 1024), ("1073741824", 1024),
     ("1000Mi", 1000), ("1G", 953)],
    ids=["2Ti", "Ki", "Gi", "bytes", "Mi", "decimal-G-rounds-down"],
)
def test_memory_becomes_whole_mib(memory, mib):
    alloc = {"cpu": "4", "memory": memory}
    assert node_resources(k8s_node(allocatable=alloc)).memory_mib == mib


def test_gke_node_reads_resources_gpu_labels_and_levels():
    levels = [LevelSpec(name="block", label="cloud.google.com/gce-topology-block"),
              LevelSpec(name="subblock", label="cloud.google.com/gce-topology-subblock")]
    node = node_from_k8s(k8s_node(labels={**GKE, **GFD, "nvidia.com/gpu.clique": "uuid-1.7"}), levels)
    assert node.name == "gpu-1"
    assert (node.cpu_milli, node.memory_mib, node.max_pods) == (95500, 2 * 1024 * 1024, 110)
    assert node.topology is not None
    assert node.topology.gpus == GpuSpec(count=8, model="NVIDIA-H100-80GB-HBM3", memory_mib=81559)
    assert node.topology.nvswitch is None and node.topology.nvlinks == ()  # no annotation: no NVLink
    assert node.levels == {"block": "b1", "subblock": "sb3"}
    assert node.clique == "uuid-1.7"
    assert node.labels["cloud.google.com/gce-topology-host"] == "h42"
    assert node.state.ready and not node.state.unschedulable and node.state.taints == ()


def test_levels_without_a_label_fall_back_to_well_known_keys():
    levels = [LevelSpec(name="zone"), LevelSpec(name="layer1"), LevelSpec(name="layer3"), LevelSpec(name="rack")]
    labels = {**EKS, "topology.kubernetes.io/zone": "us-east-1a", "topology.toposched.io/rack": "r9"}
    node = node_from_k8s(k8s_node(labels=labels), levels)
    assert node.levels == {"zone": "us-east-1a", "layer1": "nn-1", "layer3": "nn-3", "rack": "r9"}


def test_explicit_level_label_does_not_fall_back():
    levels = [LevelSpec(name="leaf", label="example.com/leaf-switch")]
    node = node_from_k8s(k8s_node(labels=TOPOGRAPH), levels)
    assert node.levels == {}


def test_topograph_node_takes_levels_and_the_accelerator_as_clique():
    levels = [LevelSpec(name="spine"), LevelSpec(name="leaf")]
    node = node_from_k8s(k8s_node(labels=TOPOGRAPH), levels)
    assert node.levels == {"spine": "s1", "leaf": "l7"}
    assert node.clique == "nvl-3"


def test_gfd_clique_wins_over_topograph_accelerator():
    node = node_from_k8s(k8s_node(labels={**TOPOGRAPH, "nvidia.com/gpu.clique": "c.1"}), [])
    assert node.clique == "c.1"


def test_annotation_gives_the_intra_node_topology_and_labels_fill_the_model():
    topo = NodeTopologySpec(gpus=GpuSpec(count=8), nvswitch=NvSwitchSpec(links_per_gpu=18), numa=(0,) * 4 + (1,) * 4)
    ann = {ANNOTATION_KEY: encode_topology(topo, source="nvml", generated_at="2026-11-27T00:00:00Z")}
    node = node_from_k8s(k8s_node(labels=GFD, annotations=ann), [])
    assert node.topology is not None
    assert node.topology.nvswitch == NvSwitchSpec(links_per_gpu=18)
    assert node.topology.numa == (0, 0, 0, 0, 1, 1, 1, 1)
    assert node.topology.gpus == GpuSpec(count=8, model="NVIDIA-H100-80GB-HBM3", memory_mib=81559)


@pytest.mark.parametrize(
    ("ready", "taints", "unschedulable", "want_ready", "want_taints", "want_cordon"),
    [
        ("True", None, None, True, (), False),
        ("False", [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule", "timeAdded": "2026-01-01T00:00:00Z"},
                   {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}],
         None, False,
         (TaintSpec(key="node.kubernetes.io/not-ready", effect="NoSchedule"),
          TaintSpec(key="node.kubernetes.io/not-ready", effect="NoExecute")), False),
        ("Unknown", [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}], None, False,
         (TaintSpec(key="node.kubernetes.io/unreachable", effect="NoExecute"),), False),
        (None, None, None, False, (), False),
        ("True", [{"key": "nvidia.com/gpu", "value": "present", "effect": "PreferNoSchedule"}], True, True,
         (TaintSpec(key="nvidia.com/gpu", value="present", effect="PreferNoSchedule"),), True),
    ],
    ids=["ready", "not-ready", "unknown", "no-ready-condition", "cordoned-tainted"],
)
def test_state_from_ready_condition_cordon_and_taints(ready, taints, unschedulable, want_ready, want_taints,
                                                      want_cordon):
    node = node_from_k8s(k8s_node(ready=ready, taints=taints, unschedulable=unschedulable), [])
    assert node.state.ready is want_ready
    assert node.state.taints == want_taints
    assert node.state.unschedulable is want_cordon


def test_capacity_is_used_when_allocatable_is_absent():
    res = node_resources(k8s_node(allocatable={}))
    assert (res.cpu_milli, res.memory_mib, res.gpus, res.max_pods) == (96000, 2 * 1024 * 1024, 8, None)


def test_cpu_only_node_has_no_gpus():
    node = node_from_k8s(k8s_node(allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"}), [])
    assert node.topology is not None and node.topology.gpus.count == 0


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (k8s_node(allocatable={"cpu": "lots", "memory": "1Gi"}),
         "node gpu-1: status.allocatable.cpu: not a Kubernetes quantity (got 'lots')"),
        (k8s_node(allocatable={"cpu": "4", "memory": "12 GB"}),
         "node gpu-1: status.allocatable.memory: not a Kubernetes quantity (got '12 GB')"),
        (k8s_node(allocatable={"cpu": "4", "nvidia.com/gpu": "1500m"}),
         "node gpu-1: status.allocatable.nvidia.com/gpu: must be a whole number (got '1500m')"),
        (k8s_node(allocatable={"cpu": "-4"}), "node gpu-1: status.allocatable.cpu: must not be negative (got '-4')"),
        (k8s_node(allocatable={"cpu": "4", "pods": "0"}), "node gpu-1: status.allocatable.pods: must be at least 1"),
        (k8s_node(labels={"nvidia.com/gpu.memory": "80GB"}),
         "node gpu-1: metadata.labels[nvidia.com/gpu.memory]: must be the per-GPU memory in MiB (an integer) (got '80GB')"),
        (k8s_node(annotations={ANNOTATION_KEY: "{not json"}),
         "node gpu-1: toposched.io/topology: malformed JSON at line 1 column 2"),
        (k8s_node(annotations={ANNOTATION_KEY: '{"version": "toposched.io/v0", "source": "x", "gpus": {"count": 8}}'}),
         "node gpu-1: toposched.io/topology.version: unknown version 'toposched.io/v0'"),
        (k8s_node(taints=[{"key": "k", "effect": "NoWay"}]),
         "node gpu-1: spec.taints[0].effect: Input should be 'NoSchedule', 'PreferNoSchedule' or 'NoExecute' (got 'NoWay')"),
        (k8s_node(taints=[{"effect": "NoSchedule"}]), "node gpu-1: spec.taints[0].key: required key 'key' is missing"),
        (k8s_node(unschedulable="yes"), "node gpu-1: spec.unschedulable: must be true or false (got 'yes')"),
        ({"metadata": {}}, "metadata.name: a Node without a name"),
    ],
    ids=["bad-cpu", "bad-memory", "fractional-gpu", "negative-cpu", "zero-pods", "bad-gpu-memory-label",
         "annotation-bad-json", "annotation-unknown-version", "bad-taint-effect", "taint-without-key", "bad-unschedulable",
         "no-name"],
)
def test_bad_node_names_node_and_field(node, message):
    with pytest.raises(SpecError) as exc:
        node_from_k8s(node, [])
    assert str(exc.value).startswith(message)


def test_source_prefixes_the_node_in_messages():
    with pytest.raises(SpecError, match=r"^nodes.json: node gpu-1: status.allocatable.cpu: "):
        node_from_k8s(k8s_node(allocatable={"cpu": "x"}), [], source="nodes.json")


# --------------------------------------------------------------------------- level inference


def _levels(*label_sets: dict[str, str]) -> list[tuple[str, str | None]]:
    nodes = [k8s_node(f"n{i}", labels=labels) for i, labels in enumerate(label_sets)]
    return [(lv.name, lv.label) for lv in levels_from_labels(nodes)]


def test_infer_gke_levels_widest_first_after_zone():
    zone = {"topology.kubernetes.io/zone": "us-central1-a"}
    assert _levels({**zone, **GKE}, {**zone, **GKE, "cloud.google.com/gce-topology-block": "b2"}) == [
        ("zone", "topology.kubernetes.io/zone"),
        ("block", "cloud.google.com/gce-topology-block"),
        ("subblock", "cloud.google.com/gce-topology-subblock"),
        ("gce-host", "cloud.google.com/gce-topology-host"),
    ]


def test_infer_eks_layers_keeps_only_those_on_every_node():
    four = {**EKS, "topology.k8s.aws/network-node-layer-4": "nn-4"}
    assert _levels(four, EKS) == [(f"layer{i}", f"topology.k8s.aws/network-node-layer-{i}") for i in (1, 2, 3)]


def test_infer_topograph_wins_over_cloud_labels_and_leaves_accelerator_to_the_clique():
    assert _levels({**TOPOGRAPH, **EKS}, {**TOPOGRAPH, **EKS}) == [
        ("core", "network.topology.nvidia.com/core"),
        ("spine", "network.topology.nvidia.com/spine"),
        ("leaf", "network.topology.nvidia.com/leaf"),
    ]


def test_infer_nothing_when_a_node_lacks_the_family():
    assert _levels(GKE, {}) == []
    assert levels_from_labels([]) == []


def test_inferred_levels_read_back_on_the_nodes():
    nodes = [k8s_node("a", labels=EKS), k8s_node("b", labels={**EKS, "topology.k8s.aws/network-node-layer-3": "x"})]
    levels = levels_from_labels(nodes)
    assert [node_from_k8s(n, levels).levels["layer3"] for n in nodes] == ["nn-3", "x"]


# --------------------------------------------------------------------------- extended resources


def test_every_other_allocatable_entry_is_an_extended_resource():
    alloc = {"cpu": "95500m", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "1Ti",
             "rdma/rdma_shared_device_a": "1k", "vpc.amazonaws.com/efa": "32", "hugepages-2Mi": "1Gi",
             "hugepages-1Gi": "0"}
    res = node_resources(k8s_node(allocatable=alloc))
    assert res.extended == {"hugepages-1Gi": 0, "hugepages-2Mi": 1 << 30, "rdma/rdma_shared_device_a": 1000,
                            "vpc.amazonaws.com/efa": 32}
    node = node_from_k8s(k8s_node(allocatable=alloc), [])
    assert node.extended_resources == res.extended
    assert (node.cpu_milli, node.max_pods) == (95500, 110)


def test_a_node_without_extended_resources_has_none():
    assert node_from_k8s(k8s_node(), []).extended_resources == {}


@pytest.mark.parametrize(
    ("alloc", "message"),
    [
        ({"cpu": "4", "rdma/ib": "500m"}, "node gpu-1: status.allocatable.rdma/ib: must be a whole number (got '500m')"),
        ({"cpu": "4", "hugepages-2Mi": "1.5"}, "node gpu-1: status.allocatable.hugepages-2Mi: must be a whole number"),
        ({"cpu": "4", "rdma/ib": "-1"}, "node gpu-1: status.allocatable.rdma/ib: must not be negative"),
        ({"cpu": "4", "bad name": "1"}, "node gpu-1: status.allocatable.bad name: 'bad name' is not a Kubernetes"),
    ],
    ids=["fractional", "fractional-hugepages", "negative", "bad-name"],
)
def test_bad_extended_resource_names_node_and_field(alloc, message):
    with pytest.raises(SpecError) as exc:
        node_from_k8s(k8s_node(allocatable=alloc), [])
    assert str(exc.value).startswith(message)
