"""Property: for random valid cluster specs, ``TopologyArrays`` agrees with ``build_graph``.

Generated specs have 1-3 node types (1-6 GPUs; no NVLink, NVLink pairs or NVSwitch; no
PCIe layout, a per-GPU ``pcie`` tree or a ``pcie_matrix``; NICs with rails), 0-3 levels,
explicit nodes and pattern-based groups, and cliques. Checked for every GPU pair of every
node and every node pair:

- the link class and NVLink count from the graph's GPU-GPU edge equal the arrays';
- with a ``pcie`` tree, walking the graph's PCIe vertices gives the same relation;
- NVLink islands are the components of the graph's NVLink edges;
- the lowest common ancestor of two nodes in the graph's domain tree is the level
  ``TopologyArrays.common_level`` reports, and ``link_between`` names it (or the clique).
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.cluster import cluster_from_data
from models.spec import PCIE_RELATIONS
from models.topology import PCIE_CLASS, LinkClass, build_arrays, build_graph

LEVEL_NAMES = ["zone", "block", "rack"]


@st.composite
def topologies(draw) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    topo: dict[str, Any] = {"gpus": {"count": n, "model": draw(st.sampled_from(["A100", "H100", "V100", "L40S", ""]))}}
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    mode = draw(st.sampled_from(["none", "pairs", "nvswitch"]))
    if mode == "nvswitch":
        topo["nvswitch"] = {"links_per_gpu": draw(st.integers(1, 18))}
    if mode == "pairs" and pairs:
        chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
        topo["nvlinks"] = [{"gpus": list(p), "links": draw(st.integers(1, 4))} for p in chosen]
    pcie = draw(st.sampled_from(["none", "tree", "matrix"]))
    if pcie == "tree":
        entries = []
        for g in range(n):
            numa = draw(st.integers(0, 1))
            hb = draw(st.sampled_from([None, 0, 1]))
            sw = draw(st.sampled_from([None, 0, 1]))
            up = draw(st.sampled_from([None, 0])) if sw is not None else None
            # names spell the path, so a device always has the same parents
            entry: dict[str, Any] = {"gpu": g, "numa": numa}
            if hb is not None:
                entry["host_bridge"] = f"hb{numa}.{hb}"
            if up is not None:
                entry["upstream"] = f"up{numa}.{hb}.{up}"
            if sw is not None:
                entry["switch"] = f"sw{numa}.{hb}.{up}.{sw}"
            entries.append(entry)
        topo["pcie"] = entries
    else:
        if draw(st.booleans()):
            topo["numa"] = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        if pcie == "matrix":
            m = [["X"] * n for _ in range(n)]
            for a, b in pairs:
                m[a][b] = m[b][a] = draw(st.sampled_from(PCIE_RELATIONS))
            topo["pcie_matrix"] = m
    nics = []
    for k in range(draw(st.integers(0, 3))):
        gpus = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
        nics.append({"name": f"nic{k}", "bandwidth_gbps": draw(st.sampled_from([100, 200, 400])), "gpus": gpus,
                     "rail": draw(st.sampled_from([None, 0, 1, 2]))})
    if nics:
        topo["nics"] = nics
    return topo


@st.composite
def cluster_specs(draw) -> dict[str, Any]:
    levels = LEVEL_NAMES[: draw(st.integers(0, 3))]
    types = {f"t{k}": {"topology": draw(topologies())} for k in range(draw(st.integers(1, 3)))}
    value = st.sampled_from(["a", "b"])
    nodes = []
    for i in range(draw(st.integers(0, 6))):
        node: dict[str, Any] = {"name": f"n{i}", "levels": {lv: draw(value) for lv in levels}}
        if draw(st.booleans()):
            node["type"] = draw(st.sampled_from(sorted(types)))
        else:
            node["topology"] = draw(topologies())
        clique = draw(st.sampled_from([None, "c0", "c1"]))
        if clique:
            node["clique"] = clique
        nodes.append(node)
    groups = []
    for k in range(draw(st.integers(0 if nodes else 1, 2))):
        group_levels: dict[str, Any] = {}
        for lv in levels:
            if draw(st.booleans()):
                group_levels[lv] = draw(value)
            else:
                group_levels[lv] = {"every": draw(st.integers(1, 3)), "format": "{level}-{n}"}
        group: dict[str, Any] = {"name": f"g{k}-{{i}}", "count": draw(st.integers(1, 4)),
                                 "type": draw(st.sampled_from(sorted(types))), "levels": group_levels}
        if draw(st.booleans()):
            group["clique_every"] = draw(st.integers(1, 3))
            group["clique_format"] = f"g{k}c{{n}}"
        groups.append(group)
    spec: dict[str, Any] = {
        "levels": [{"name": lv, "oversubscription": draw(st.sampled_from([1.0, 2.0]))} for lv in levels],
        "node_types": types, "nodes": nodes, "groups": groups,
    }
    if levels and draw(st.booleans()):
        spec["rail_level"] = draw(st.sampled_from(levels))
    return spec


def _pcie_chain(pcie: nx.Graph, gpu: tuple) -> list[tuple]:
    """The PCIe vertices above a GPU, nearest first, ending at its NUMA vertex."""
    if gpu not in pcie:
        return []
    (numa,) = [v for v in nx.node_connected_component(pcie, gpu) if v[0] == "numa"]
    return nx.shortest_path(pcie, gpu, numa)[1:]


def _relation_from_graph(pcie: nx.Graph, a: tuple, b: tuple) -> str:
    ca, cb = _pcie_chain(pcie, a), _pcie_chain(pcie, b)
    common = next((v for v in ca if v in cb), None)
    if common is None:
        return "SYS"
    if common[0] == "switch":
        return "PIX" if ca[0] == common and cb[0] == common else "PXB"
    return {"hostbridge": "PHB", "numa": "NODE"}[common[0]]


def _domain_tree(g: nx.Graph) -> nx.DiGraph:
    depth = {"root": 0, "domain": 1, "node": 99}
    tree = nx.DiGraph()
    for u, v, d in g.edges(data=True):
        if d["kind"] == "uplink":
            du = depth[g.nodes[u]["kind"]] + (len(u) if u[0] == "domain" else 0)
            dv = depth[g.nodes[v]["kind"]] + (len(v) if v[0] == "domain" else 0)
            tree.add_edge(u, v) if du < dv else tree.add_edge(v, u)
    return tree


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_specs())
def test_arrays_agree_with_the_graph(spec):
    cluster = cluster_from_data(spec, "generated.yaml")
    arrays = build_arrays(cluster)
    g = build_graph(cluster)

    pcie = nx.Graph((u, v) for u, v, d in g.edges(data=True) if d["kind"] == "pcie")
    assert nx.is_forest(pcie), "the PCIe devices of a node form a tree under each NUMA node"
    for i, nd in enumerate(cluster.nodes):
        t = arrays.type_of(i)
        n = nd.topology.gpus.count
        assert arrays.gpu_count[i] == n
        nv = nx.Graph()
        nv.add_nodes_from(range(n))
        for a in range(n):
            assert g.nodes[("gpu", nd.name, a)]["numa"] == t.numa[a]
            for b in range(a + 1, n):
                edge = g.edges[("gpu", nd.name, a), ("gpu", nd.name, b)]
                if edge["kind"] == "nvlink":
                    want = LinkClass.NVLINK
                    assert t.nvlinks[a, b] == edge["links"] > 0
                    nv.add_edge(a, b)
                else:
                    want = PCIE_CLASS[edge["pcie"]]
                    assert t.nvlinks[a, b] == 0
                assert LinkClass(int(t.link_class[a, b])) == want
                assert arrays.link_between(i, a, i, b).link_class == want
                assert float(t.bandwidth_gbps[a, b]) == edge["bandwidth_gbps"]
                if nd.topology.pcie and nd.topology.pcie_matrix is None:
                    assert _relation_from_graph(pcie, ("gpu", nd.name, a), ("gpu", nd.name, b)) == edge["pcie"]
        assert t.islands == tuple(sorted(tuple(sorted(c)) for c in nx.connected_components(nv)))

    tree = _domain_tree(g)
    n_levels = len(arrays.level_names)
    for i, a in enumerate(cluster.nodes):
        for j, b in enumerate(cluster.nodes):
            lca = nx.lowest_common_ancestor(tree, ("node", a.name), ("node", b.name))
            if lca[0] == "node":
                want = n_levels
            elif lca[0] == "root":
                want = -1
            else:
                want = arrays.level_index(g.nodes[lca]["level"])
            assert arrays.common_level(i, j) == want
            if i == j or not (a.topology.gpus.count and b.topology.gpus.count):
                continue
            link = arrays.link_between(i, 0, j, 0)
            in_clique = bool(a.clique) and a.clique == b.clique
            assert in_clique == (g.has_edge(("node", a.name), ("clique", a.clique)) and
                                 g.has_edge(("node", b.name), ("clique", a.clique)))
            if in_clique:
                assert link.link_class == LinkClass.CLIQUE
            else:
                assert link.link_class == LinkClass.NET
                assert link.level == (arrays.level_names[want] if want >= 0 else "root")
