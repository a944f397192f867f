"""The ``toposched.io/topology`` node annotation: encode, decode, and bad values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.errors import SpecError
from models.readers.annotation import (
    ANNOTATION_KEY,
    MAX_ANNOTATION_BYTES,
    VERSION,
    decode_annotation,
    decode_topology,
    encode_topology,
)
from models.spec import GpuSpec, NicSpec, NodeTopologySpec, NvLinkSpec, NvSwitchSpec, PcieSpec

# GPU0 =NV2= GPU1   (NUMA 0, one NIC for both)
# GPU2 =NV2= GPU3   (NUMA 1, one NIC for both)
PAIRS = NodeTopologySpec(
    gpus=GpuSpec(count=4, model="Tesla-V100-SXM2-16GB", memory_mib=16160),
    nvlinks=(NvLinkSpec(gpus=(0, 1), links=2), NvLinkSpec(gpus=(2, 3), links=2)),
    pcie_matrix=(("X", "NODE", "SYS", "SYS"), ("NODE", "X", "SYS", "SYS"),
                 ("SYS", "SYS", "X", "NODE"), ("SYS", "SYS", "NODE", "X")),
    numa=(0, 0, 1, 1),
    nics=(NicSpec(name="mlx5_0", bandwidth_gbps=100, gpus=(0, 1), numa=0),
          NicSpec(name="mlx5_1", bandwidth_gbps=100, gpus=(2, 3), numa=1, rail=1)),
    measured_p2p_gbps=((0, 380.5, 20, 20), (380.5, 0, 20, 20), (20, 20, 0, 380.5), (20, 20, 380.5, 0)),
)
SWITCHED = NodeTopologySpec(
    gpus=GpuSpec(count=8, model="NVIDIA-H100-80GB-HBM3", memory_mib=81559),
    nvswitch=NvSwitchSpec(links_per_gpu=18),
    nvlink_generation=4,
    pcie_gen=5,
    pcie=tuple(PcieSpec(gpu=g, switch=f"pex{g}", host_bridge=f"rc{g // 2}", numa=g // 4) for g in range(8)),
)
WHEN = datetime(2026, 11, 27, 14, 17, 22, tzinfo=UTC)


# PCIe entries without their own numa, the node's numa list given
NUMA_LIST = NodeTopologySpec(gpus=GpuSpec(count=2), pcie=(PcieSpec(gpu=0, switch="a"), PcieSpec(gpu=1, switch="b")),
                             numa=(1, 1))


@pytest.mark.parametrize("spec", [PAIRS, SWITCHED, NodeTopologySpec(gpus=GpuSpec(count=0)), NUMA_LIST],
                         ids=["nvlink-pairs", "nvswitch", "cpu-only", "pcie-numa-from-the-list"])
def test_round_trip_gives_the_same_topology(spec):
    text = encode_topology(spec, source="nvidia-smi", generated_at=WHEN)
    assert decode_topology(text, "node gpu-1") == spec
    ann = decode_annotation(text, "node gpu-1")
    assert (ann.source, ann.generated_at) == ("nvidia-smi", "2026-11-27T14:17:22Z")


def test_encoded_value_is_compact_json_with_the_envelope_first():
    text = encode_topology(PAIRS, source="nvml", generated_at="2026-11-27T14:17:22Z")
    assert " " not in text.replace("Tesla-V100-SXM2-16GB", "")
    doc = json.loads(text)
    assert list(doc)[:3] == ["version", "source", "generated_at"]
    assert doc["version"] == VERSION == "toposched.io/v1"
    assert doc["nvlinks"] == [{"gpus": [0, 1], "links": 2}, {"gpus": [2, 3], "links": 2}]
    assert doc["numa"] == [0, 0, 1, 1]
    assert "nvswitch" not in doc  # None fields are left out


def test_sixty_four_gpus_with_measured_bandwidth_fit_the_limit():
    n = 64
    spec = NodeTopologySpec(gpus=GpuSpec(count=n), nvswitch=NvSwitchSpec(links_per_gpu=18),
                            measured_p2p_gbps=tuple(tuple(0.0 if a == b else 3599.123456 for b in range(n))
                                                    for a in range(n)))
    text = encode_topology(spec, source="nvml", generated_at=WHEN)
    assert len(text.encode()) < MAX_ANNOTATION_BYTES
    assert decode_topology(text, "node big") == spec


def test_oversized_annotation_is_refused():
    spec = NodeTopologySpec(gpus=GpuSpec(count=1),
                            nics=tuple(NicSpec(name=f"nic{i}-" + "x" * 1000, gpus=(0,)) for i in range(300)))
    with pytest.raises(SpecError, match=r"^toposched.io/topology: the annotation would be \d+ bytes, over the 262144-byte limit"):
        encode_topology(spec, source="nvml", generated_at=WHEN)


def _envelope(**body) -> str:
    return json.dumps({"version": VERSION, "source": "nvml", "gpus": {"count": 2}, **body})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"version": "toposched.io/v1", "gpus": {', "node gpu-7: toposched.io/topology: malformed JSON at line 1 column 41"),
        ("[1, 2]", "node gpu-7: toposched.io/topology: must be a JSON object, not list"),
        (json.dumps({"version": "toposched.io/v2", "source": "nvml", "gpus": {"count": 1}}),
         "node gpu-7: toposched.io/topology.version: unknown version 'toposched.io/v2'; this toposched reads toposched.io/v1"),
        (json.dumps({"source": "nvml", "gpus": {"count": 1}}),
         "node gpu-7: toposched.io/topology.version: no `version`; this toposched reads toposched.io/v1"),
        (json.dumps({"version": VERSION, "gpus": {"count": 1}}),
         "node gpu-7: toposched.io/topology.source: `source` must be a non-empty string"),
        (_envelope(nvlinks=[{"gpus": [0, 5], "links": 2}]),
         "node gpu-7: toposched.io/topology.nvlinks[0].gpus: GPU 5 out of range (node has GPUs 0-1)"),
        (_envelope(colour="green"), "node gpu-7: toposched.io/topology.colour: unknown key 'colour'"),
        (_envelope(numa="zero"), "node gpu-7: toposched.io/topology.numa: Input should be a valid tuple (got 'zero')"),
        (_envelope().replace('"count": 2', '"count": NaN'), "node gpu-7: toposched.io/topology: NaN is not a JSON number"),
        (_envelope(measured_p2p_gbps=[[0, -400], [-400, 0]]),
         "node gpu-7: toposched.io/topology.measured_p2p_gbps[0][1]: -400.0 is not a bandwidth"),
    ],
    ids=["bad-json", "not-object", "unknown-version", "no-version", "no-source", "gpu-out-of-range", "unknown-key",
         "bad-type", "nan", "negative-bandwidth"],
)
def test_bad_annotation_names_node_and_annotation(text, message):
    with pytest.raises(SpecError) as exc:
        decode_topology(text, "node gpu-7")
    assert str(exc.value).startswith(message)
    assert ANNOTATION_KEY in str(exc.value)


def test_documented_example_decodes():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "node-annotation.md").read_text()
    example = doc.split("<!-- example: decoded by tests/models/readers/test_node_annotation.py -->\n```json\n", 1)[1]
    text = example.split("\n```", 1)[0]
    topo = decode_topology(text, "docs/node-annotation.md")
    assert topo.gpus.count == 4 and topo.nvswitch == NvSwitchSpec(links_per_gpu=12)
    assert [n.gpus for n in topo.nics] == [(0, 1), (2, 3)]
    assert encode_topology(topo, source="nvidia-smi", generated_at="2026-11-27T14:17:22Z") == text
