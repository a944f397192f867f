"""Cluster spec: round trips through YAML and JSON, and one clear message per kind of bad input.

The worked example (also in docs/cluster-spec.md)::

          rack r1                      rack r2
     ┌──────────────┐         ┌───────────────────────┐
     big-0 (custom 4 GPUs,     gpu-000  gpu-001  gpu-002   (group of dgx-h100,
     2 NVLink pairs)                                         rack from a pattern)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from models.cluster import cluster_from_data, load_cluster
from models.errors import SpecError
from models.spec import ClusterSpec, parse_document, validate_model
from tests.builders import build, make_cluster, make_group, make_node, make_topology

WORKED_EXAMPLE = """
name: two-racks
description: a custom node and a group of DGX H100
levels:
  - {name: rack, oversubscription: 2}
node_types:
  pairs4:
    description: 4 GPUs as two NVLink pairs
    cpu_milli: 64000
    memory_mib: 524288
    topology:
      gpus: {count: 4, model: NVIDIA-A100-SXM4-80GB, memory_mib: 81920}
      nvlinks:
        - {gpus: [0, 1], links: 4}
        - {gpus: [2, 3], links: 4}
      pcie_matrix:
        - [X, PIX, SYS, SYS]
        - [PIX, X, SYS, SYS]
        - [SYS, SYS, X, PIX]
        - [SYS, SYS, PIX, X]
      numa: [0, 0, 1, 1]
nodes:
  - name: big-0
    type: pairs4
    levels: {rack: r1}
    labels: {team: vision}
    state:
      taints: [{key: gpu, value: reserved, effect: NoSchedule}]
groups:
  - name: gpu-{g:03d}
    count: 3
    type: dgx-h100
    levels:
      rack: {every: 8, format: "r{n}", start: 2}
"""


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str, name: str = "cluster.yaml") -> str:
    path = write(tmp_path, text, name)
    with pytest.raises(SpecError) as info:
        load_cluster(path)
    return str(info.value).replace(str(path), name)


# -- round trips ------------------------------------------------------------------------


def test_worked_example_expands_to_the_drawn_nodes():
    """Group names and pattern levels are generated; the explicit node keeps its own."""
    cluster = cluster_from_data(yaml.safe_load(WORKED_EXAMPLE), "example.yaml")
    assert [(n.name, n.type_name, n.levels) for n in cluster.nodes] == [
        ("big-0", "pairs4", ("r1",)),
        ("gpu-000", "dgx-h100", ("r2",)),
        ("gpu-001", "dgx-h100", ("r2",)),
        ("gpu-002", "dgx-h100", ("r2",)),
    ]
    assert cluster.nodes[0].cpu_milli == 64000
    assert cluster.nodes[0].labels == {"team": "vision"}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("exclude_defaults", [False, True], ids=["full", "compact"])
def test_dump_then_load_gives_an_equal_spec(tmp_path, fmt, exclude_defaults):
    """model_dump -> YAML/JSON text -> load -> the same ClusterSpec and the same nodes."""
    spec = validate_model(ClusterSpec, yaml.safe_load(WORKED_EXAMPLE), "example.yaml")
    data = spec.model_dump(mode="json", exclude_defaults=exclude_defaults)
    text = yaml.safe_dump(data, sort_keys=False) if fmt == "yaml" else json.dumps(data, indent=1)
    path = write(tmp_path, text, f"dumped.{fmt}")
    again = load_cluster(path)
    assert again.spec == spec
    original = cluster_from_data(yaml.safe_load(WORKED_EXAMPLE), str(path))
    assert again.nodes == original.nodes


@pytest.mark.parametrize("preset", ["superpod-4su", "nvl72-rack"])
def test_preset_specs_round_trip(tmp_path, preset):
    """A preset's spec survives a dump and reload unchanged."""
    spec = load_cluster(preset).spec
    path = write(tmp_path, json.dumps(spec.model_dump(mode="json")), "preset.json")
    assert load_cluster(path).spec == spec


def test_json_and_yaml_of_one_spec_load_the_same(tmp_path):
    spec = make_cluster(make_node("n1", rack="r1"), make_node("n2", gpus=4, rack="r2"))
    a = load_cluster(write(tmp_path, json.dumps(spec), "c.json"))
    b = load_cluster(write(tmp_path, yaml.safe_dump(spec), "c.yaml"))
    assert a.spec == b.spec and a.nodes == b.nodes


# -- bad input: each gives its own message, naming file, path and problem -----------------

GOOD_NODE = "{name: a, type: dgx-h100}"

ERROR_CASES = [
    pytest.param(
        "nodes:\n  - {name: a, type: dgx-h100\n  - {name: b}\n",
        "cluster.yaml: malformed YAML at line 3 column 5: expected ',' or '}', but got '{'; fix the syntax",
        id="malformed-yaml",
    ),
    pytest.param(
        "- just\n- a list\n",
        "cluster.yaml: the document must be a mapping, not list",
        id="not-a-mapping",
    ),
    pytest.param(
        "nodes:\n  - {name: a, type: dgx-h100, colour: red}\n",
        "cluster.yaml: nodes[0].colour: unknown key 'colour'; remove it or check its spelling",
        id="unknown-key",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology: {gpus: {count: 2}, nvlink: [{gpus: [0, 1]}]}\n",
        "cluster.yaml: nodes[0].topology.nvlink: unknown key 'nvlink'",
        id="unknown-nested-key",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology: {gpus: {count: 8}, nvlinks: [{gpus: [0, 9], links: 2}]}\n",
        "cluster.yaml: nodes[0].topology.nvlinks[0].gpus: GPU 9 out of range (node has GPUs 0-7) (got [0, 9])",
        id="nvlink-gpu-out-of-range",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology: {gpus: {count: 4}, nics: [{name: ib0, gpus: [1, 4]}]}\n",
        "cluster.yaml: nodes[0].topology.nics[0].gpus: GPU 4 out of range (node has GPUs 0-3) (got [1, 4])",
        id="nic-gpu-out-of-range",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology:\n      gpus: {count: 2}\n      pcie: [{gpu: 0}, {gpu: 2}]\n",
        "cluster.yaml: nodes[0].topology.pcie[1].gpu: GPU 2 out of range (node has GPUs 0-1) (got 2)",
        id="pcie-gpu-out-of-range",
    ),
    pytest.param(
        "node_types:\n  t: {topology: {gpus: {count: 2}, nvlinks: [{gpus: [1, 1]}]}}\nnodes: [{name: a, type: t}]\n",
        "cluster.yaml: node_types.t.topology.nvlinks[0].gpus: a GPU cannot link to itself (1)",
        id="nvlink-to-itself",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology: {gpus: {count: 8}, nvlinks: [{gpus: [0, 'b:3']}]}\n"
        "  - {name: b, type: dgx-h100}\n",
        "cluster.yaml: nodes[0].topology.nvlinks[0].gpus: 'b:3' names a GPU of another node",
        id="nvlink-to-another-node",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology: {gpus: {count: 8}, nics: [{name: ib0, gpus: ['b:0']}]}\n",
        "cluster.yaml: nodes[0].topology.nics[0].gpus: 'b:0' names a GPU of another node",
        id="nic-on-another-node",
    ),
    pytest.param(
        f"nodes:\n  - {GOOD_NODE}\ngroups:\n  - {{name: 'a', count: 1, type: dgx-h100}}\n",
        "cluster.yaml: groups[0]: duplicate node name 'a' (first at nodes[0]); node names must be unique",
        id="duplicate-node-name",
    ),
    pytest.param(
        "levels: [{name: rack}]\nnodes:\n  - {name: a, type: dgx-h100, levels: {rack: r1}}\n"
        "  - {name: b, type: dgx-h100}\n",
        "cluster.yaml: nodes[1].levels: level 'rack' is missing on this node; every node needs a value "
        "for each of the cluster's levels ['rack']",
        id="level-missing",
    ),
    pytest.param(
        "levels: [{name: rack}]\nnodes:\n  - {name: a, type: dgx-h100, levels: {rack: r1, row: x}}\n",
        "cluster.yaml: nodes[0].levels.row: unknown level 'row'",
        id="unknown-level",
    ),
    pytest.param(
        "nodes:\n  - {name: a, type: dgx-h101}\n",
        "cluster.yaml: nodes[0].type: unknown node type 'dgx-h101'; use one of dgx-a100, dgx-h100,",
        id="unknown-node-type",
    ),
    pytest.param(
        "groups:\n  - {name: 'gpu-{n}', count: 2, type: dgx-h100}\n",
        "cluster.yaml: groups[0].name: bad format string 'gpu-{n}' ('n'); use {i} or {g}",
        id="group-name-unknown-field",
    ),
    pytest.param(
        "groups:\n  - {name: 'gpu-{i', count: 2, type: dgx-h100}\n",
        "cluster.yaml: groups[0].name: bad format string 'gpu-{i' (expected '}' before end of string)",
        id="group-name-unbalanced",
    ),
    pytest.param(
        "groups:\n  - {name: gpu, count: 3, type: dgx-h100}\n",
        "cluster.yaml: groups[0].name: 'gpu' gives all 3 nodes the same name; put {i} or {g} in it",
        id="group-name-constant",
    ),
    pytest.param(
        "groups:\n  - {name: 'GPU_{i}', count: 2, type: dgx-h100}\n",
        "cluster.yaml: groups[0].name: node name is not a valid Kubernetes name (got 'GPU_0')",
        id="group-name-not-kubernetes",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology:\n      gpus: {count: 2}\n"
        "      pcie: [{gpu: 0, switch: s0, upstream: u0}, {gpu: 1, switch: s0, upstream: u1}]\n",
        "cluster.yaml: nodes[0].topology.pcie[1].switch: 's0' sits under (upstream='u0', host_bridge=None, "
        "numa=0) for GPU 0 but under (upstream='u1', host_bridge=None, numa=0) for GPU 1",
        id="pcie-switch-two-parents",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology:\n      gpus: {count: 2}\n"
        "      pcie_matrix: [[X, PIX], [SYS, X]]\n",
        "cluster.yaml: nodes[0].topology.pcie_matrix[0][1]: not symmetric (got 'PIX')",
        id="pcie-matrix-asymmetric",
    ),
    pytest.param(
        "nodes:\n  - name: a\n    topology:\n      gpus: {count: 2}\n"
        "      pcie_matrix: [[X, NV2], [NV2, X]]\n",
        "cluster.yaml: nodes[0].topology.pcie_matrix[0][1]: 'NV2' is not one of PIX/PXB/PHB/NODE/SYS",
        id="pcie-matrix-bad-cell",
    ),
    pytest.param(
        "levels: [{name: rack}]\nrail_level: leaf\nnodes: []\n",
        "cluster.yaml: rail_level: 'leaf' is not one of the levels ['rack']",
        id="rail-level-unknown",
    ),
    pytest.param(
        "name: empty\n",
        "cluster.yaml: nodes: the cluster has no nodes; add `nodes:` or `groups:`",
        id="no-nodes",
    ),
    pytest.param(
        "nodes:\n  - {name: a, topology: {gpus: {count: many}}}\n",
        "cluster.yaml: nodes[0].topology.gpus.count: Input should be a valid integer",
        id="wrong-type",
    ),
]


@pytest.mark.parametrize("text, expected", ERROR_CASES)
def test_bad_spec_gives_its_message(tmp_path, text, expected):
    message = load_error(tmp_path, text)
    assert message.startswith(expected), message


GROUP = "  - {{name: 'g{{i}}', count: 2, type: dgx-h100, levels: {{rack: r1}}{extra}}}\n"


@pytest.mark.parametrize("text, expected", [
    ("nodes:\n  - {name: a, type: dgx-h100, cpu_milli: 99999999999999999999999}\n",
     "cluster.yaml: nodes[0].cpu_milli: Input should be less than or equal to 9007199254740992"),
    ("nodes:\n  - name: a\n    topology: {gpus: {count: 2}, numa: [40000, 0]}\n",
     "cluster.yaml: nodes[0].topology.numa[0]: Input should be less than or equal to 1023"),
    ("nodes:\n  - {name: a, type: dgx-h100}\n  - {name: a, type: dgx-h100, type: dgx-a100}\n",
     "cluster.yaml: malformed YAML at line 3 column 31: duplicate key 'type'"),
    ("nodes:\n  - name: a\n    topology:\n      gpus: {count: 2}\n"
     "      nvlinks: [{gpus: [0, 1], links: 4}, {gpus: [1, 0], links: 2}]\n",
     "cluster.yaml: nodes[0].topology.nvlinks[1].gpus: GPUs 1 and 0 are already linked by nvlinks[0]"),
    ("nodes:\n  - {name: \"a\\n\", type: dgx-h100}\n",
     "cluster.yaml: nodes[0].name: node name is not a valid Kubernetes name"),
    ("groups:\n" + GROUP.format(extra=", clique_every: 1, clique_format: '{x}'"),
     "cluster.yaml: groups[0].clique_format: bad format string '{x}'"),
    ("groups:\n  - {name: 'g{i.foo}', count: 2, type: dgx-h100}\n",
     "cluster.yaml: groups[0].name: bad format string 'g{i.foo}'"),
    ("levels: [{name: rack}]\ngroups:\n" + GROUP.format(extra=", clique_every: 2")
     + GROUP.replace("'g{{i}}'", "'h{{i}}'").format(extra=", clique_every: 2"),
     "cluster.yaml: groups[1].clique_format: clique 'clique-0' is made by groups[0] too"),
    ("nodes:\n" + "  " * 1 + "- " + "[" * 3000 + "]" * 3000 + "\n", "cluster.yaml: nested too deeply to read"),
    ("levels: [{name: block, label: example.com/switch}, {name: rack, label: example.com/switch}]\n"
     "nodes: [{name: a, type: dgx-h100, levels: {block: b1, rack: r1}}]\n",
     "cluster.yaml: levels[1].label: 'example.com/switch' of level 'rack' is already the label of level 'block' "
     "(levels[0]); give each level its own node label"),
    ("levels: [{name: pod, label: topology.toposched.io/rack}, {name: rack}]\n"
     "nodes: [{name: a, type: dgx-h100, levels: {pod: p1, rack: r1}}]\n",
     "cluster.yaml: levels[1]: level 'rack' gives no label, and its default 'topology.toposched.io/rack' is "
     "already the label of level 'pod' (levels[0])"),
], ids=["huge-cpu", "huge-numa", "duplicate-key", "duplicate-nvlink-pair", "name-with-newline",
        "clique-format", "name-format-attribute", "clique-across-groups", "deep-nesting", "level-label-twice",
        "level-default-label-taken"])
def test_input_that_used_to_crash_or_be_taken_silently_is_named(tmp_path, text, expected):
    message = load_error(tmp_path, text)
    assert message.startswith(expected), message


def test_a_duplicate_json_key_and_an_unreadable_path_are_named(tmp_path):
    message = load_error(tmp_path, '{"nodes": [{"name": "a", "name": "b", "type": "dgx-h100"}]}', "cluster.json")
    assert message.startswith("cluster.json: malformed JSON: duplicate key 'name'"), message
    with pytest.raises(SpecError, match="cannot read file"):
        load_cluster(str(tmp_path / ("a" * 300 + ".yaml")))


def test_a_huge_value_is_cut_short_in_the_message():
    assert len(str(SpecError("too big", source="x", value="v" * 100_000))) < 400


def test_malformed_json_names_line_and_column(tmp_path):
    message = load_error(tmp_path, '{"nodes": [\n  {"name": "a",}\n]}', "cluster.json")
    assert message.startswith("cluster.json: malformed JSON at line 2 column 16: Expecting property name"), message


def test_unknown_preset_lists_the_presets():
    with pytest.raises(SpecError) as info:
        load_cluster("superpod-5su")
    message = str(info.value)
    assert message.startswith("'superpod-5su' is neither a spec file nor a preset; use a path, a cluster preset (")
    for name in ("fabric-4096", "nvl72-rack", "openb", "superpod-4su", "superpod-su"):
        assert name in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SpecError) as info:
        load_cluster(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: file not found; check the path"


def test_a_node_cannot_have_an_nvlink_key():
    """The closest spelling of 'a link to another node' on a node itself is an unknown key."""
    node = {**make_node("a"), "nvlinks": [{"gpus": ["b:0", 1]}]}
    spec = make_cluster(node)
    with pytest.raises(SpecError, match=r"nodes\[0\]\.nvlinks: unknown key 'nvlinks'"):
        build(spec)


def test_cliques_link_gpus_of_different_nodes():
    """What the rejection message points to: two nodes in one clique talk over NVLink."""
    from models.topology import LinkClass, build_arrays

    spec = make_cluster(make_node("a", clique="c0"), make_node("b", clique="c0"), make_node("c"))
    arrays = build_arrays(build(spec))
    assert arrays.link_between(0, 1, 1, 3).link_class == LinkClass.CLIQUE
    assert arrays.link_between(0, 1, 2, 3).link_class == LinkClass.NET


def test_pcie_numa_must_agree_with_numa_list():
    topo = make_topology(2, numa=[0, 1], pcie=[{"gpu": 0, "numa": 1}, {"gpu": 1}])
    with pytest.raises(SpecError, match=r"pcie\[0\]\.numa: 1 disagrees with numa\[0\] = 0"):
        build(make_cluster(make_node("a", topology=topo)))


def test_upstream_needs_a_switch():
    topo = make_topology(2, pcie=[{"gpu": 0, "upstream": "u"}, {"gpu": 1}])
    with pytest.raises(SpecError, match=r"pcie\[0\]\.upstream: needs `switch`"):
        build(make_cluster(make_node("a", topology=topo)))


def test_group_levels_from_patterns():
    """Pattern ``every: 2`` starts a new domain each 2 nodes, ``{n}`` counting from ``start``."""
    spec = make_cluster(groups=[make_group("h-{i}", 5, rack={"every": 2, "format": "r{n}", "start": 1},
                                           row="row-a")],
                        levels=["row", "rack"])
    cluster = build(spec)
    assert [n.levels for n in cluster.nodes] == [
        ("row-a", "r1"), ("row-a", "r1"), ("row-a", "r2"), ("row-a", "r2"), ("row-a", "r3")]


def test_parse_document_reads_json_by_suffix():
    assert parse_document('{"a": 1}', "x.json") == {"a": 1}
    with pytest.raises(SpecError, match="malformed JSON"):
        parse_document("a: 1", "x.json")


# -- extended resources ---------------------------------------------------------------


EXTENDED_SPEC = """
node_types:
  ib-box:
    topology: {gpus: {count: 8}}
    extended_resources: {rdma/ib: 8, hugepages-2Mi: 1073741824}
nodes:
  - {name: a, type: ib-box}
  - {name: b, type: ib-box, extended_resources: {rdma/ib: 4, vpc.amazonaws.com/efa: 32}}
  - {name: c, topology: {gpus: {count: 8}}}
groups:
  - {name: "g-{i}", count: 2, type: ib-box, extended_resources: {rdma/ib: 0}}
"""


def test_extended_resources_merge_type_then_node(tmp_path):
    cluster = load_cluster(write(tmp_path, EXTENDED_SPEC))
    got = {n.name: n.extended_resources for n in cluster.nodes}
    assert got == {
        "a": {"hugepages-2Mi": 1 << 30, "rdma/ib": 8},
        "b": {"hugepages-2Mi": 1 << 30, "rdma/ib": 4, "vpc.amazonaws.com/efa": 32},
        "c": {},
        "g-0": {"hugepages-2Mi": 1 << 30, "rdma/ib": 0},
        "g-1": {"hugepages-2Mi": 1 << 30, "rdma/ib": 0},
    }


@pytest.mark.parametrize("text, expected", [
    pytest.param("nodes:\n  - {name: a, topology: {gpus: {count: 1}}, extended_resources: {rdma/ib: -1}}\n",
                 "cluster.yaml: nodes[0].extended_resources.rdma/ib: Input should be greater than or equal to 0",
                 id="negative"),
    pytest.param("nodes:\n  - {name: a, topology: {gpus: {count: 1}}, extended_resources: {nvidia.com/gpu: 8}}\n",
                 "cluster.yaml: nodes[0].extended_resources: 'nvidia.com/gpu' is not an extended resource",
                 id="gpu-is-not-extended"),
    pytest.param("nodes:\n  - {name: a, topology: {gpus: {count: 1}}, extended_resources: {pods: 8}}\n",
                 "cluster.yaml: nodes[0].extended_resources: 'pods' is not an extended resource", id="pods"),
    pytest.param("nodes:\n  - {name: a, topology: {gpus: {count: 1}}, extended_resources: {'rdma ib': 1}}\n",
                 "cluster.yaml: nodes[0].extended_resources: 'rdma ib' is not a Kubernetes resource name",
                 id="bad-name"),
    pytest.param("nodes:\n  - {name: a, topology: {gpus: {count: 1}}, extended_resources: {rdma/ib: 1.5}}\n",
                 "cluster.yaml: nodes[0].extended_resources.rdma/ib: Input should be a valid integer", id="fraction"),
])
def test_bad_extended_resources_give_their_message(tmp_path, text, expected):
    message = load_error(tmp_path, text)
    assert message.startswith(expected), message
