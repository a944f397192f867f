"""Topology: link classes, the bandwidth table against its sources, cross-node links, the graph.

The small cluster used for cross-node links::

                      (root)
              ┌─────────┴─────────┐
           block b1            block b2         block oversubscribed 4:1 above
          ┌───┴───┐               │
       rack r1  rack r2        rack r1          (r1 under b2 is a different domain)
       ┌─┴─┐      │               │
       n1  n2     n3              n4            n1, n2 in clique c0
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from models import presets
from models.topology import (
    NVLINK_GBPS_PER_LINK,
    PCIE_P2P_FACTOR,
    PCIE_X16_GBPS,
    LinkClass,
    build_arrays,
    build_graph,
    node_type_arrays,
    nvlink_generation,
)
from tests.builders import build, make_cluster, make_node, make_topology


def rail_nics(gpus: int, gbps: float = 400.0) -> list[dict]:
    return [{"name": f"ib{g}", "bandwidth_gbps": gbps, "rail": g, "gpus": [g]} for g in range(gpus)]


def small_cluster(rail_level: str | None = None):
    topo = make_topology(4, "H100", nvswitch=18, nics=rail_nics(4))
    spec = make_cluster(
        make_node("n1", topology=topo, clique="c0", block="b1", rack="r1"),
        make_node("n2", topology=topo, clique="c0", block="b1", rack="r1"),
        make_node("n3", topology=topo, block="b1", rack="r2"),
        make_node("n4", topology=topo, block="b2", rack="r1"),
        levels=[{"name": "block", "oversubscription": 4.0}, {"name": "rack"}],
        rail_level=rail_level,
    )
    return build(spec)


# -- the bandwidth table against its sources ---------------------------------------------

# NVIDIA datasheets: total NVLink bandwidth per GPU (GB/s, both directions together) and links per GPU.
NVLINK_DATASHEET = {
    1: (160, 4),  # P100 SXM2
    2: (300, 6),  # V100 SXM2
    3: (600, 12),  # A100 SXM4
    4: (900, 18),  # H100 SXM5
    5: (1800, 18),  # B200 / GB200
}


@pytest.mark.parametrize("gen", sorted(NVLINK_DATASHEET))
def test_nvlink_per_link_rate_follows_the_datasheets(gen):
    total_gbytes, links = NVLINK_DATASHEET[gen]
    per_direction_gbits = total_gbytes * 8 / 2 / links
    assert NVLINK_GBPS_PER_LINK[gen] == pytest.approx(per_direction_gbits)


@pytest.mark.parametrize("gen, gts, encoding", [(1, 2.5, 8 / 10), (2, 5, 8 / 10), (3, 8, 128 / 130),
                                                (4, 16, 128 / 130), (5, 32, 128 / 130)])
def test_pcie_x16_rate_is_line_rate_less_encoding(gen, gts, encoding):
    assert PCIE_X16_GBPS[gen] == pytest.approx(16 * gts * encoding, rel=0.01)


def test_p2p_factors_fall_with_distance():
    order = ["PIX", "PXB", "PHB", "NODE", "SYS"]
    assert [PCIE_P2P_FACTOR[r] for r in order] == sorted(PCIE_P2P_FACTOR.values(), reverse=True)


@pytest.mark.parametrize("model, gen", [("NVIDIA-H100-80GB-HBM3", 4), ("NVIDIA-H200", 4), ("NVIDIA-GB200", 5),
                                        ("NVIDIA-A100-SXM4-80GB", 3), ("Tesla-V100-SXM2-32GB", 2),
                                        ("Tesla-P100-SXM2-16GB", 1)])
def test_nvlink_generation_from_the_model_name(model, gen):
    assert nvlink_generation(model, None) == gen
    assert nvlink_generation(model, 5) == 5


# -- inside a node -----------------------------------------------------------------------


def test_dgx1_v100_link_classes_and_bandwidth():
    a = node_type_arrays(presets.node_type("dgx1-v100").topology)
    assert LinkClass(a.link_class[0, 3]) == LinkClass.NVLINK and a.bandwidth_gbps[0, 3] == 2 * 200.0
    assert LinkClass(a.link_class[0, 1]) == LinkClass.NVLINK and a.bandwidth_gbps[0, 1] == 200.0
    assert LinkClass(a.link_class[0, 5]) == LinkClass.SYS
    assert a.bandwidth_gbps[0, 5] == pytest.approx(PCIE_X16_GBPS[3] * PCIE_P2P_FACTOR["SYS"])
    assert a.islands == ((0, 1, 2, 3, 4, 5, 6, 7),)
    assert a.rail.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_pcie_only_node_classes():
    a = node_type_arrays(presets.node_type("pcie-l40s-8x").topology)
    assert [LinkClass(c).name for c in a.link_class[0]] == ["SELF", "PIX", "NODE", "NODE", "SYS", "SYS", "SYS", "SYS"]
    assert a.islands == tuple((g,) for g in range(8))
    assert not a.nvswitch


def test_nvlink_pairs_make_islands():
    topo = make_topology(4, nvlinks=[(0, 1, 4), (2, 3, 4)], numa=[0, 0, 1, 1])
    a = node_type_arrays(build(make_cluster(make_node("n", topology=topo))).nodes[0].topology)
    assert a.islands == ((0, 1), (2, 3))
    assert LinkClass(a.link_class[1, 2]) == LinkClass.SYS


def test_measured_bandwidth_overrides_the_model():
    measured = [[0, 123.0], [123.0, 0]]
    topo = make_topology(2, nvlinks=[(0, 1, 2)], measured_p2p_gbps=measured)
    a = node_type_arrays(build(make_cluster(make_node("n", topology=topo))).nodes[0].topology)
    assert a.bandwidth_gbps.tolist() == [[0.0, 123.0], [123.0, 0.0]]


# -- between nodes -----------------------------------------------------------------------


def test_common_level_follows_the_domain_paths():
    arrays = build_arrays(small_cluster())
    n = arrays.node_index
    assert arrays.common_level(n["n1"], n["n2"]) == 1  # same rack
    assert arrays.common_level(n["n1"], n["n3"]) == 0  # same block
    assert arrays.common_level(n["n1"], n["n4"]) == -1  # rack r1 under b2 is another domain
    assert arrays.common_level(n["n3"], n["n3"]) == 2  # the host level


def test_cross_node_links():
    arrays = build_arrays(small_cluster())
    n = arrays.node_index
    clique = arrays.link_between(n["n1"], 0, n["n2"], 1)
    assert (clique.link_class, clique.level, clique.bandwidth_gbps) == (LinkClass.CLIQUE, "clique", 18 * 200.0)
    block = arrays.link_between(n["n1"], 0, n["n3"], 0)
    assert (block.link_class, block.level, block.hops, block.bandwidth_gbps) == (LinkClass.NET, "block", 3, 400.0)
    root = arrays.link_between(n["n1"], 0, n["n4"], 0)
    assert (root.level, root.hops, root.bandwidth_gbps) == ("root", 5, 100.0)  # leaves the 4:1 block tier


def test_rails_shortcut_inside_the_rail_level():
    """With rail_level block, GPU i of nodes in one block meet at rail switch i: one hop, full rate."""
    arrays = build_arrays(small_cluster(rail_level="block"))
    n = arrays.node_index
    same = arrays.link_between(n["n1"], 2, n["n3"], 2)
    other = arrays.link_between(n["n1"], 2, n["n3"], 1)
    assert (same.hops, same.same_rail, other.hops, other.same_rail) == (1, True, 3, False)
    across = arrays.link_between(n["n1"], 2, n["n4"], 2)  # outside the rail level: normal path
    assert (across.hops, across.bandwidth_gbps) == (5, 100.0)


def test_nic_rate_is_the_slower_end():
    fast = make_topology(2, nics=[{"name": "a", "bandwidth_gbps": 400, "gpus": [0, 1]}])
    slow = make_topology(2, nics=[{"name": "a", "bandwidth_gbps": 100, "gpus": [0, 1]}])
    arrays = build_arrays(build(make_cluster(make_node("f", topology=fast), make_node("s", topology=slow))))
    assert arrays.link_between(0, 0, 1, 0).bandwidth_gbps == 100.0


# -- the graph ---------------------------------------------------------------------------


def test_graph_has_the_node_insides_and_the_domain_tree():
    cluster = small_cluster()
    g = build_graph(cluster)
    kinds: dict[str, int] = {}
    for _, d in g.nodes(data=True):
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    assert kinds == {"root": 1, "domain": 5, "node": 4, "clique": 1, "numa": 4, "gpu": 16, "nic": 16}
    edge = g.edges[("gpu", "n1", 0), ("gpu", "n1", 3)]
    assert (edge["kind"], edge["links"], edge["bandwidth_gbps"]) == ("nvlink", 18, 3600.0)
    tree = nx.Graph((a, b) for a, b, d in g.edges(data=True) if d["kind"] == "uplink")
    assert nx.is_tree(tree)
    assert nx.shortest_path(tree, ("root",), ("node", "n4")) == [
        ("root",), ("domain", "block", "b2"), ("domain", "rack", "b2", "r1"), ("node", "n4")]


def test_graph_of_some_nodes_keeps_every_node_vertex():
    g = build_graph(small_cluster(), nodes=["n2"])
    gpus = sorted(k for k, d in g.nodes(data=True) if d["kind"] == "gpu")
    assert gpus == [("gpu", "n2", i) for i in range(4)]
    assert sum(1 for _, d in g.nodes(data=True) if d["kind"] == "node") == 4


def test_arrays_are_shared_per_distinct_topology():
    arrays = build_arrays(presets.cluster("superpod-4su"))
    assert len(arrays.types) == 1 and arrays.type_names == ("dgx-h100",)
    assert np.array_equal(arrays.gpu_offset[:3], [0, 8, 16])
    assert arrays.gpu(17) == (2, 1)
    assert arrays.labels[0]["topology.toposched.io/su"] == "su0"


def test_extended_resources_become_columns_sorted_by_name():
    from models.cluster import cluster_from_data

    cluster = cluster_from_data({"nodes": [
        {"name": "a", "topology": {"gpus": {"count": 8}}, "extended_resources": {"rdma/ib": 8, "hugepages-2Mi": 4096}},
        {"name": "b", "topology": {"gpus": {"count": 8}}},
        {"name": "c", "topology": {"gpus": {"count": 8}}, "extended_resources": {"vpc.amazonaws.com/efa": 32}},
    ]})
    a = build_arrays(cluster)
    assert a.ext_names == ("hugepages-2Mi", "rdma/ib", "vpc.amazonaws.com/efa")
    assert a.ext_alloc.dtype == np.int64
    assert a.ext_alloc.tolist() == [[4096, 8, 0], [0, 0, 0], [0, 0, 32]]
    assert a.ext_index("rdma/ib") == 1 and a.ext_index("example.com/fpga") == -1


def test_a_cluster_without_extended_resources_has_no_columns():
    a = build_arrays(small_cluster())
    assert a.ext_names == () and a.ext_alloc.shape == (a.n_nodes, 0)
