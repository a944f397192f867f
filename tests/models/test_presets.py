"""Preset node types and clusters: each validates, builds arrays, and matches its published facts."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources

import numpy as np
import pytest

from models import presets
from models.errors import TraceRowError
from models.readers.openb import NodeRow, read_node_list
from models.topology import LinkClass, build_arrays, build_graph, node_type_arrays
from tests.paths import REPO_ROOT, shared_or_skip

NODE_TYPES = presets.node_type_names()
CLUSTERS = presets.cluster_names()
TOPOLOGIES = "data/gpu-topologies/gpuallocator_test_topologies.json"
OBSERVED = "data/gpu-topologies/nvidia_smi_topo_observed.json"


def test_the_presets_are_there():
    assert {"dgx-a100", "dgx-h100", "dgx1-p100", "dgx1-v100", "gb200-nvl72", "hgx-h200", "pcie-l40s-8x"} <= set(NODE_TYPES)
    assert {"fabric-4096", "nvl72-rack", "openb", "superpod-4su", "superpod-su"} <= set(CLUSTERS)


@pytest.mark.parametrize("name", NODE_TYPES)
def test_node_type_file_starts_with_facts_and_source(name):
    text = resources.files("models.data").joinpath(f"node_types/{name}.yaml").read_text()
    head = text.split("\n", 1)[0]
    assert head.startswith("# "), f"{name}.yaml must start with a comment giving the facts"
    comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"Sources?:", comment), f"{name}.yaml comment names no source"


@pytest.mark.parametrize("name", NODE_TYPES)
def test_node_type_validates_and_builds_arrays(name):
    t = presets.node_type(name)
    a = node_type_arrays(t.topology)
    n = t.topology.gpus.count
    assert t.description and t.cpu_milli > 0 and t.memory_mib > 0 and t.topology.gpus.memory_mib > 0
    assert a.link_class.shape == a.nvlinks.shape == a.bandwidth_gbps.shape == (n, n)
    assert (np.diag(a.link_class) == LinkClass.SELF).all()
    assert (a.link_class == a.link_class.T).all() and (a.nvlinks == a.nvlinks.T).all()
    off = ~np.eye(n, dtype=bool)
    assert (a.bandwidth_gbps[off] > 0).all()
    # every GPU has a NIC next to it (a rail) in these presets
    assert (a.nic_gbps > 0).all() and (a.rail >= 0).all()


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_preset_builds_arrays_and_graph(name):
    cluster = presets.cluster(name)
    arrays = build_arrays(cluster)
    assert arrays.n_nodes == len(cluster.nodes) > 0
    assert arrays.total_gpus == sum(n.topology.gpus.count for n in cluster.nodes)
    graph = build_graph(cluster, nodes=[cluster.nodes[0].name])
    assert graph.has_node(("gpu", cluster.nodes[0].name, 0))
    assert sum(1 for _, d in graph.nodes(data=True) if d["kind"] == "node") == arrays.n_nodes


@pytest.mark.parametrize(
    "name, nodes, gpus, domains, cliques",
    [
        ("superpod-su", 32, 256, [1, 1], 0),
        ("superpod-4su", 128, 1024, [1, 4], 0),
        ("fabric-4096", 4096, 32768, [8, 128], 0),
        ("nvl72-rack", 144, 576, [1, 8], 8),
        ("openb", 1213, 6212, [], 0),
    ],
)
def test_cluster_preset_sizes(name, nodes, gpus, domains, cliques):
    arrays = build_arrays(presets.cluster(name))
    assert (arrays.n_nodes, arrays.total_gpus) == (nodes, gpus)
    assert [len(d) for d in arrays.domain_names] == domains
    assert len(arrays.clique_names) == cliques


def test_superpod_is_rail_optimized():
    """Same SU, same rail: one hop at the NIC rate; another SU: leaf-spine-leaf."""
    arrays = build_arrays(presets.cluster("superpod-4su"))
    assert arrays.level_names == ("pod", "su") and arrays.rail_level == 1
    same_rail = arrays.link_between(0, 3, 5, 3)
    assert (same_rail.level, same_rail.hops, same_rail.bandwidth_gbps, same_rail.same_rail) == ("su", 1, 400.0, True)
    other_su = arrays.link_between(0, 3, 32, 3)
    assert (other_su.level, other_su.hops, other_su.bandwidth_gbps) == ("pod", 3, 400.0)


def test_fabric_core_is_oversubscribed():
    arrays = build_arrays(presets.cluster("fabric-4096"))
    same_rack, same_block, other_block = (arrays.link_between(0, 0, j, 0) for j in (31, 32, 512))
    assert [(x.level, x.hops, x.bandwidth_gbps) for x in (same_rack, same_block, other_block)] == [
        ("rack", 1, 400.0), ("block", 3, 400.0), ("root", 5, 200.0)]


def test_nvl72_racks_are_cliques_of_18_trays():
    arrays = build_arrays(presets.cluster("nvl72-rack"))
    sizes = np.bincount(arrays.clique)
    assert sizes.tolist() == [18] * 8
    # NVLink 5: 18 links x 400 Gbit/s per direction = 7200 Gbit/s (1.8 TB/s both directions)
    assert arrays.clique_gbps == 7200.0
    assert arrays.link_between(0, 0, 17, 3).link_class == LinkClass.CLIQUE
    assert arrays.link_between(0, 0, 18, 0).link_class == LinkClass.NET


# -- node types against published topologies ------------------------------------------------


def _fixture_pairs(name: str) -> tuple[int, dict[tuple[int, int], tuple[int, str]]]:
    data = json.loads(shared_or_skip(TOPOLOGIES).read_text())[name]
    return data["gpus"], {(p["a"], p["b"]): (p["nvlinks"], p["pcie"]) for p in data["pairs"]}


@pytest.mark.parametrize("preset, fixture", [("dgx1-v100", "dgx1_volta_8x_v100"), ("dgx1-p100", "dgx1_pascal_8x_p100")])
def test_dgx1_equals_the_gpuallocator_fixture(preset, fixture):
    """NVLink count and PCIe relation of every GPU pair equal go-gpuallocator's DGX-1 fixture."""
    n, pairs = _fixture_pairs(fixture)
    topo = presets.node_type(preset).topology
    assert topo.pcie_matrix is None and len(topo.pcie) == n, "the per-GPU `pcie` layout must reproduce the fixture"
    nvl, rel = topo.nvlink_matrix(), topo.pcie_relation_matrix()
    got = {(a, b): (nvl[a][b], rel[a][b]) for a in range(n) for b in range(a + 1, n)}
    assert got == pairs
    a = node_type_arrays(topo)
    for (i, j), (links, pcie) in pairs.items():
        assert a.pair_weight[i, j] == 100 * links + {"SYS": 10, "NODE": 20, "PHB": 30, "PXB": 40, "PIX": 50}[pcie]


def _observed(name: str) -> dict:
    return json.loads(shared_or_skip(OBSERVED).read_text())[name]


@pytest.mark.parametrize(
    "preset, entry",
    [("dgx-a100", "dgx_a100_40gb"), ("dgx-a100", "hgx_a100_8gpu_epyc7763"), ("dgx-h100", "hgx_h100_8gpu"),
     ("hgx-h200", "hgx_h100_8gpu"), ("dgx1-v100", "dgx1_class_8x_v100_sxm2_16gb")],
)
def test_node_type_matches_observed_nvidia_smi(preset, entry):
    """NV# cells and the NUMA affinity that nvidia-smi printed on such machines (where seen)."""
    seen = _observed(entry)
    topo = presets.node_type(preset).topology
    nvl = topo.nvlink_matrix()
    for a, row in enumerate(seen["gpu_matrix"]):
        for b, cell in enumerate(row):
            if cell and cell.startswith("NV"):
                assert nvl[a][b] == int(cell[2:]), (a, b, cell)
            elif cell and cell != "X":
                assert nvl[a][b] == 0 and topo.pcie_relation_matrix()[a][b] == cell, (a, b, cell)
    numa = topo.gpu_numa()
    for g, v in enumerate(seen.get("numa_affinity", [])):
        if v is not None:
            assert numa[g] == v, (g, v)


def test_dgx_a100_nics_follow_the_observed_pairs():
    """GPUs 0-1 share mlx5_0/1, 2-3 mlx5_2/3, 4-5 mlx5_6/7 (nvidia-smi PXB cells)."""
    seen = _observed("dgx_a100_40gb")["nic_pxb"]
    nics = {nic.name: nic for nic in presets.node_type("dgx-a100").topology.nics}
    names = {f"NIC{i}": f"mlx5_{i}" for i in range(12)}
    for gpu, near in seen.items():
        g = int(gpu[3:])
        assert any(g in nics[names[n]].gpus for n in near), (gpu, near)


# -- openb ------------------------------------------------------------------------------------


def _source_table() -> dict[str, str]:
    text = (REPO_ROOT / "models/data/openb/SOURCE.md").read_text()
    return dict(re.findall(r"^\| (\S+\.csv) \| \d+ \| \d+ \| ([0-9a-f]{64}) \|$", text, flags=re.M))


def test_openb_files_match_their_source_md():
    table = _source_table()
    assert sorted(table) == ["openb_node_list_gpu_node.csv", "openb_pod_list_default.csv"]
    for name, digest in table.items():
        data = (REPO_ROOT / "models/data/openb" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_openb_copy_equals_the_shared_data():
    shared = shared_or_skip("data/alibaba-openb-gpu-2023/openb_node_list_gpu_node.csv")
    assert presets.openb_node_csv_text() == shared.read_text()


def test_openb_preset_nodes():
    cluster = presets.cluster("openb")
    first = cluster.nodes[0]
    assert (first.name, first.cpu_milli, first.memory_mib, first.topology.gpus.count, first.topology.gpus.model) == (
        "openb-node-0000", 64000, 262144, 2, "P100")
    models = {}
    for n in cluster.nodes:
        models[n.topology.gpus.model] = models.get(n.topology.gpus.model, 0) + n.topology.gpus.count
    assert models == {"G2": 4392, "T4": 842, "P100": 265, "V100M16": 195, "V100M32": 204, "G3": 312, "A10": 2}


def test_read_node_list_rows():
    text = "sn,cpu_milli,memory_mib,gpu,model\nn-0,96000,393216,8,G2\nn-1,8000,32768,0,\n"
    assert read_node_list(text, "nodes.csv") == [NodeRow("n-0", 96000, 393216, 8, "G2"), NodeRow("n-1", 8000, 32768, 0, "")]


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("name,cpu\n", "nodes.csv:1: header is 'name,cpu'; expected sn,cpu_milli,memory_mib,gpu,model",
                     id="bad-header"),
        pytest.param("", "nodes.csv:1: empty file", id="empty"),
        pytest.param("sn,cpu_milli,memory_mib,gpu,model\nn-0,96000,393216,8,G2\nn-1,lots,1,1,T4\n",
                     "nodes.csv:3: cpu_milli: 'lots' is not an integer", id="not-an-int"),
        pytest.param("sn,cpu_milli,memory_mib,gpu,model\nn-0,96000,393216,-1,G2\n",
                     "nodes.csv:2: gpu: -1 is negative", id="negative"),
        pytest.param("sn,cpu_milli,memory_mib,gpu,model\nn-0,96000,393216\n",
                     "nodes.csv:2: 3 fields; expected 5", id="short-row"),
        pytest.param("sn,cpu_milli,memory_mib,gpu,model\nn-0,1,1,1,T4\nn-0,1,1,1,T4\n",
                     "nodes.csv:3: sn: node 'n-0' already listed on line 2", id="duplicate"),
        pytest.param("sn,cpu_milli,memory_mib,gpu,model\nn-0,1,1,2,\n",
                     "nodes.csv:2: model: empty, but the node has 2 GPUs", id="gpus-without-model"),
        pytest.param("sn,cpu_milli,memory_mib,gpu,model\nn-0,1,1,2,T4\n\n",
                     "nodes.csv:3: empty row", id="blank-line"),
    ],
)
def test_read_node_list_errors_name_file_and_line(text, expected):
    with pytest.raises(TraceRowError) as info:
        read_node_list(text, "nodes.csv")
    assert str(info.value).startswith(expected), str(info.value)


def test_openb_cluster_data_from_text():
    from models.cluster import cluster_from_data

    data = presets.openb_cluster_data("sn,cpu_milli,memory_mib,gpu,model\nx-1,1000,2048,4,T4\n", "mini.csv")
    cluster = cluster_from_data(data, "mini.csv")
    arrays = build_arrays(cluster)
    assert arrays.node_names == ("x-1",) and arrays.total_gpus == 4
    assert arrays.type_of(0).islands == ((0,), (1,), (2,), (3,))


def test_a_node_type_name_loads_as_a_one_node_cluster():
    """`toposched cluster show dgx1-v100` shows the node type on its own."""
    from models.cluster import load_cluster
    from models.topology import build_arrays

    cluster = load_cluster("dgx1-v100")
    assert [n.name for n in cluster.nodes] == ["dgx1-v100"]
    arrays = build_arrays(cluster)
    assert int(arrays.types[0].nvlinks[0, 3]) == 2  # hybrid cube-mesh: GPU 0 has two links to GPU 3
