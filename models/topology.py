"""Topology: a networkx graph of the cluster, and compact arrays derived from it.

The graph (``build_graph``) has a vertex for every GPU, PCIe switch, host bridge, NUMA
socket, NIC, node, network domain and NVLink clique, and edges with ``kind`` and
``bandwidth_gbps``. It is for building, validating and drawing.

The engine never walks the graph. ``TopologyArrays`` holds what the hot path needs, as
numpy arrays: per node its GPU count, model, CPU, memory and extended resources, its
domain id at each level and its clique; per distinct node type a GPU x GPU matrix of link class, NVLink
count, bandwidth and pair weight. ``link_between`` answers "how do these two GPUs talk"
from the arrays, for any two GPUs in the cluster, without an all-pairs table.

Bandwidth numbers (per direction, Gbit/s) are documented in docs/topology.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NewType

import networkx as nx
import numpy as np

from models.cluster import Cluster
from models.spec import NodeTopologySpec, ResolvedNode

NodeName = NewType("NodeName", str)


class LinkClass(IntEnum):
    """How two GPUs talk, best first. Inside a node as ``nvidia-smi topo -m`` names it."""

    SELF = 0
    NVLINK = 1  # NV#: direct NVLink bond or NVSwitch
    PIX = 2  # same PCIe switch
    PXB = 3  # several PCIe switches, no host bridge
    PHB = 4  # through a PCIe host bridge
    NODE = 5  # same NUMA node, across host bridges
    SYS = 6  # across sockets (UPI / xGMI)
    CLIQUE = 7  # different nodes of one multi-node NVLink domain (NVL72)
    NET = 8  # different nodes, over the network


PCIE_CLASS = {"PIX": LinkClass.PIX, "PXB": LinkClass.PXB, "PHB": LinkClass.PHB,
              "NODE": LinkClass.NODE, "SYS": LinkClass.SYS}

# go-gpuallocator best-effort pair weights (restated facts, see docs/topology.md).
PCIE_WEIGHT = {"SYS": 10, "NODE": 20, "PHB": 30, "PXB": 40, "PIX": 50}
NVLINK_WEIGHT_PER_LINK = 100

# Per-direction bandwidth of one NVLink by generation, Gbit/s (NVIDIA datasheets).
NVLINK_GBPS_PER_LINK = {1: 160.0, 2: 200.0, 3: 200.0, 4: 200.0, 5: 400.0, 6: 800.0}
# Per-direction PCIe x16 bandwidth by generation, Gbit/s (PCI-SIG line rates less encoding).
PCIE_X16_GBPS = {1: 32.0, 2: 64.0, 3: 126.0, 4: 252.0, 5: 504.0, 6: 1008.0}
# Share of the x16 rate a GPU pair gets for P2P across each PCIe relation (a model,
# not a measurement: see docs/topology.md).
PCIE_P2P_FACTOR = {"PIX": 1.0, "PXB": 0.9, "PHB": 0.75, "NODE": 0.6, "SYS": 0.4}
DEFAULT_NIC_GBPS = 100.0


def nvlink_generation(model: str, explicit: int | None) -> int:
    """NVLink generation of a GPU model (explicit value wins)."""
    if explicit is not None:
        return explicit
    m = model.upper()
    for key, gen in (("GB300", 5), ("B300", 5), ("GB200", 5), ("B200", 5), ("B100", 5), ("H100", 4),
                     ("H200", 4), ("H800", 4), ("H20", 4), ("GH200", 4), ("A100", 3), ("A800", 3),
                     ("V100", 2), ("P100", 1)):
        if key in m:
            return gen
    return 3


@dataclass(frozen=True)
class NodeTypeArrays:
    """Per distinct intra-node topology: GPU x GPU matrices and per-GPU facts."""

    n_gpus: int
    link_class: np.ndarray  # int8 [G, G]
    nvlinks: np.ndarray  # int16 [G, G]
    bandwidth_gbps: np.ndarray  # float32 [G, G]
    pair_weight: np.ndarray  # int32 [G, G]: gpuallocator best-effort weight
    numa: np.ndarray  # int16 [G]
    nic_gbps: np.ndarray  # float32 [G]: best NIC local to each GPU (0 = none)
    rail: np.ndarray  # int16 [G]: rail of the GPU's NIC (-1 = none)
    islands: tuple[tuple[int, ...], ...]  # NVLink-connected components
    nvswitch: bool


def node_type_arrays(topo: NodeTopologySpec) -> NodeTypeArrays:
    """Derive the matrices of one intra-node topology."""
    n = topo.gpus.count
    nvl = np.array(topo.nvlink_matrix(), dtype=np.int16).reshape(n, n)
    pcie = topo.pcie_relation_matrix()
    gen = nvlink_generation(topo.gpus.model, topo.nvlink_generation)
    per_link = NVLINK_GBPS_PER_LINK[gen]
    x16 = PCIE_X16_GBPS[topo.pcie_gen]
    cls = np.zeros((n, n), dtype=np.int8)
    bw = np.zeros((n, n), dtype=np.float32)
    weight = np.zeros((n, n), dtype=np.int32)
    for a in range(n):
        for b in range(n):
            if a == b:
                cls[a, b] = LinkClass.SELF
                continue
            rel = pcie[a][b]
            weight[a, b] = PCIE_WEIGHT[rel] + NVLINK_WEIGHT_PER_LINK * int(nvl[a, b])
            if nvl[a, b] > 0:
                cls[a, b] = LinkClass.NVLINK
                bw[a, b] = per_link * float(nvl[a, b])
            else:
                cls[a, b] = PCIE_CLASS[rel]
                bw[a, b] = x16 * PCIE_P2P_FACTOR[rel]
    if topo.measured_p2p_gbps is not None:
        measured = np.array(topo.measured_p2p_gbps, dtype=np.float32)
        bw = np.where(measured > 0, measured, bw).astype(np.float32)
        np.fill_diagonal(bw, 0.0)
    numa = np.array(topo.gpu_numa(), dtype=np.int16)
    nic_gbps = np.zeros(n, dtype=np.float32)
    rail = np.full(n, -1, dtype=np.int16)
    for nic in topo.nics:
        for g in nic.gpus:
            if nic.bandwidth_gbps > nic_gbps[g]:
                nic_gbps[g] = nic.bandwidth_gbps
                rail[g] = nic.rail if nic.rail is not None else -1
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((a, b) for a in range(n) for b in range(a + 1, n) if nvl[a, b] > 0)
    islands = tuple(sorted(tuple(sorted(c)) for c in nx.connected_components(g)))
    return NodeTypeArrays(n, cls, nvl, bw, weight, numa, nic_gbps, rail, islands, topo.nvswitch is not None)


@dataclass(frozen=True)
class Link:
    """How two GPUs talk: class, the level they meet at, bandwidth and switch hops."""

    link_class: LinkClass
    level: str  # "gpu", "host", a level name, "clique" or "root"
    bandwidth_gbps: float
    hops: int
    same_rail: bool = False

    @property
    def label(self) -> str:
        if self.link_class == LinkClass.NVLINK:
            return f"NV@{self.level}"
        return self.link_class.name


@dataclass(frozen=True)
class TopologyArrays:
    """Compact, read-only arrays for the hot path; built once per topology version."""

    node_names: tuple[str, ...]
    node_index: dict[str, int]
    level_names: tuple[str, ...]
    gpu_count: np.ndarray  # int16 [N]
    gpu_offset: np.ndarray  # int64 [N]: global GPU id = offset + local index
    gpu_node: np.ndarray  # int32 [total GPUs]
    cpu_milli: np.ndarray  # int64 [N]
    memory_mib: np.ndarray  # int64 [N]
    max_pods: np.ndarray  # int32 [N]
    model_id: np.ndarray  # int16 [N]
    models: tuple[str, ...]
    gpu_memory_mib: np.ndarray  # int64 [N]
    domain: np.ndarray  # int32 [L, N]: domain id of each node at each level
    domain_names: tuple[tuple[str, ...], ...]  # per level: domain id -> value
    domain_parent: tuple[np.ndarray, ...]  # per level l: domain id -> id at level l-1 (-1 at l=0)
    clique: np.ndarray  # int32 [N] (-1 = none)
    clique_names: tuple[str, ...]
    node_type: np.ndarray  # int32 [N]
    types: tuple[NodeTypeArrays, ...]
    type_names: tuple[str, ...]
    level_gbps_factor: np.ndarray  # float32 [L]: 1 / oversubscription leaving level l's domains
    rail_level: int  # index of the rail-optimized level, -1 if none
    clique_gbps: float
    labels: tuple[dict[str, str], ...]
    taints: tuple[tuple[tuple[str, str, str], ...], ...]
    ready: np.ndarray  # bool [N]
    unschedulable: np.ndarray  # bool [N]
    version: int = 0
    _extra: dict = field(default_factory=dict, compare=False, repr=False)
    ext_names: tuple[str, ...] = ()  # extended resources any node offers, sorted
    ext_alloc: np.ndarray = None  # type: ignore[assignment]  # int64 [N, K]: allocatable of each (0 = none)

    def __post_init__(self) -> None:
        if self.ext_alloc is None:
            object.__setattr__(self, "ext_alloc", np.zeros((len(self.node_names), len(self.ext_names)), dtype=np.int64))
        if self.ext_alloc.shape != (len(self.node_names), len(self.ext_names)):
            raise ValueError(f"ext_alloc has shape {self.ext_alloc.shape}, expected "
                             f"{(len(self.node_names), len(self.ext_names))}")

    def ext_index(self, name: str) -> int:
        """Column of an extended resource in ``ext_alloc``; -1 when no node offers it."""
        try:
            return self.ext_names.index(name)
        except ValueError:
            return -1

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def max_gpus(self) -> int:
        return int(self.gpu_count.max()) if len(self.gpu_count) else 0

    @property
    def total_gpus(self) -> int:
        return int(self.gpu_count.sum())

    def type_of(self, node: int) -> NodeTypeArrays:
        return self.types[int(self.node_type[node])]

    def level_index(self, name: str) -> int:
        try:
            return self.level_names.index(name)
        except ValueError:
            raise KeyError(name) from None

    def node_domain(self, node: int, level: int) -> str:
        return self.domain_names[level][int(self.domain[level, node])]

    def gpu(self, global_id: int) -> tuple[int, int]:
        """(node index, local GPU index) of a global GPU id."""
        node = int(self.gpu_node[global_id])
        return node, int(global_id - self.gpu_offset[node])

    def common_level(self, node_a: int, node_b: int) -> int:
        """Index of the narrowest level whose domain both nodes share; -1 if none.

        Equal nodes give ``len(level_names)`` (the host level).
        """
        if node_a == node_b:
            return len(self.level_names)
        for lv in range(len(self.level_names) - 1, -1, -1):
            if self.domain[lv, node_a] == self.domain[lv, node_b]:
                return lv
        return -1

    def link_between(self, node_a: int, gpu_a: int, node_b: int, gpu_b: int) -> Link:
        """How GPU ``gpu_a`` of ``node_a`` talks to GPU ``gpu_b`` of ``node_b``."""
        if node_a == node_b:
            t = self.type_of(node_a)
            if gpu_a == gpu_b:
                return Link(LinkClass.SELF, "gpu", float("inf"), 0)
            cls = LinkClass(int(t.link_class[gpu_a, gpu_b]))
            hops = 1 if cls in (LinkClass.NVLINK, LinkClass.PIX) else 2
            return Link(cls, "host", float(t.bandwidth_gbps[gpu_a, gpu_b]), hops)
        ta, tb = self.type_of(node_a), self.type_of(node_b)
        ca, cb = int(self.clique[node_a]), int(self.clique[node_b])
        if ca >= 0 and ca == cb:
            return Link(LinkClass.CLIQUE, "clique", self.clique_gbps, 1)
        nic = min(_nic(ta, gpu_a), _nic(tb, gpu_b))
        ra, rb = int(ta.rail[gpu_a]), int(tb.rail[gpu_b])
        same_rail = ra >= 0 and ra == rb
        lv = self.common_level(node_a, node_b)
        n_levels = len(self.level_names)
        crossed = range(lv + 1, n_levels)  # levels whose domains the traffic leaves
        factor = min((float(self.level_gbps_factor[i]) for i in crossed), default=1.0)
        hops = 1 + 2 * (n_levels - 1 - lv) if lv >= 0 else 1 + 2 * n_levels
        if self.rail_level >= 0 and lv >= self.rail_level and same_rail:
            # rail-optimized: GPU i of every node in the rail domain hangs off rail switch i
            hops, factor = 1, 1.0
        level = self.level_names[lv] if lv >= 0 else "root"
        return Link(LinkClass.NET, level, nic * factor, hops, same_rail)


def _nic(t: NodeTypeArrays, gpu: int) -> float:
    v = float(t.nic_gbps[gpu])
    if v > 0:
        return v
    best = float(t.nic_gbps.max()) if len(t.nic_gbps) else 0.0
    return best if best > 0 else DEFAULT_NIC_GBPS


def _type_key(node: ResolvedNode) -> str:
    return node.topology.model_dump_json()


def build_arrays(cluster: Cluster, version: int = 0) -> TopologyArrays:
    """Derive ``TopologyArrays`` from a validated cluster (no graph walk needed)."""
    nodes = cluster.nodes
    n = len(nodes)
    levels = cluster.spec.levels
    type_idx: dict[str, int] = {}
    types: list[NodeTypeArrays] = []
    type_names: list[str] = []
    node_type = np.zeros(n, dtype=np.int32)
    models: dict[str, int] = {}
    model_id = np.zeros(n, dtype=np.int16)
    for i, node in enumerate(nodes):
        key = _type_key(node)
        if key not in type_idx:
            type_idx[key] = len(types)
            types.append(node_type_arrays(node.topology))
            type_names.append(node.type_name)
        node_type[i] = type_idx[key]
        model_id[i] = models.setdefault(node.topology.gpus.model, len(models))
    gpu_count = np.array([nd.topology.gpus.count for nd in nodes], dtype=np.int16)
    gpu_offset = np.zeros(n, dtype=np.int64)
    if n:
        gpu_offset[1:] = np.cumsum(gpu_count[:-1], dtype=np.int64)
    gpu_node = np.repeat(np.arange(n, dtype=np.int32), gpu_count.astype(np.int64))
    domain = np.zeros((len(levels), n), dtype=np.int32)
    domain_names: list[tuple[str, ...]] = []
    domain_parent: list[np.ndarray] = []
    for lv in range(len(levels)):
        # a domain is identified by its path from the top, so r1 under b1 and r1 under b2 differ
        ids: dict[tuple[str, ...], int] = {}
        names: list[str] = []
        parents: list[int] = []
        for i, nd in enumerate(nodes):
            path = nd.levels[: lv + 1]
            if path not in ids:
                ids[path] = len(names)
                names.append(nd.levels[lv])
                parents.append(int(domain[lv - 1, i]) if lv > 0 else -1)
            domain[lv, i] = ids[path]
        domain_names.append(tuple(names))
        domain_parent.append(np.array(parents, dtype=np.int32))
    cliques: dict[str, int] = {}
    clique = np.array([cliques.setdefault(nd.clique, len(cliques)) if nd.clique else -1 for nd in nodes],
                      dtype=np.int32)
    factor = np.array([1.0 / lv.oversubscription for lv in levels], dtype=np.float32)
    rail_level = cluster.level_names().index(cluster.spec.rail_level) if cluster.spec.rail_level else -1
    clique_gbps = cluster.spec.clique_bandwidth_gbps
    if clique_gbps is None:
        clique_types = [types[int(node_type[i])] for i in range(n) if clique[i] >= 0]
        best = 0.0
        for i in range(n):
            if clique[i] >= 0:
                topo = nodes[i].topology
                gen = nvlink_generation(topo.gpus.model, topo.nvlink_generation)
                links = topo.nvswitch.links_per_gpu if topo.nvswitch else 1
                best = max(best, NVLINK_GBPS_PER_LINK[gen] * links)
        clique_gbps = best if clique_types else 0.0
    ext_names = tuple(sorted({k for nd in nodes for k in nd.extended_resources}))
    ext_alloc = np.zeros((n, len(ext_names)), dtype=np.int64)
    for i, nd in enumerate(nodes):
        for k, name in enumerate(ext_names):
            ext_alloc[i, k] = nd.extended_resources.get(name, 0)
    return TopologyArrays(
        node_names=tuple(nd.name for nd in nodes),
        node_index={nd.name: i for i, nd in enumerate(nodes)},
        level_names=tuple(cluster.level_names()),
        gpu_count=gpu_count,
        gpu_offset=gpu_offset,
        gpu_node=gpu_node,
        cpu_milli=np.array([nd.cpu_milli for nd in nodes], dtype=np.int64),
        memory_mib=np.array([nd.memory_mib for nd in nodes], dtype=np.int64),
        max_pods=np.array([nd.max_pods for nd in nodes], dtype=np.int32),
        model_id=model_id,
        models=tuple(models),
        gpu_memory_mib=np.array([nd.topology.gpus.memory_mib for nd in nodes], dtype=np.int64),
        domain=domain,
        domain_names=tuple(domain_names),
        domain_parent=tuple(domain_parent),
        clique=clique,
        clique_names=tuple(cliques),
        node_type=node_type,
        types=tuple(types),
        type_names=tuple(type_names),
        level_gbps_factor=factor,
        rail_level=rail_level,
        clique_gbps=float(clique_gbps),
        labels=tuple(_node_labels(cluster, nd) for nd in nodes),
        taints=tuple(tuple((t.key, t.value, t.effect) for t in nd.state.taints) for nd in nodes),
        ready=np.array([nd.state.ready for nd in nodes], dtype=bool),
        unschedulable=np.array([nd.state.unschedulable for nd in nodes], dtype=bool),
        version=version,
        ext_names=ext_names,
        ext_alloc=ext_alloc,
    )


def _node_labels(cluster: Cluster, nd: ResolvedNode) -> dict[str, str]:
    """The node's labels plus the ones a scheduler matches on (hostname, levels, GPU)."""
    out = {"kubernetes.io/hostname": nd.name}
    for lv, value in zip(cluster.spec.levels, nd.levels, strict=True):
        out[lv.label_key()] = value
    if nd.topology.gpus.model:
        out["nvidia.com/gpu.product"] = nd.topology.gpus.model
    out["nvidia.com/gpu.count"] = str(nd.topology.gpus.count)
    if nd.clique:
        out["nvidia.com/gpu.clique"] = nd.clique
    out.update(nd.labels)
    return out


def build_graph(cluster: Cluster, nodes: list[str] | None = None) -> nx.Graph:
    """The cluster as a graph (optionally only some nodes' insides).

    Vertex keys are tuples: ``("gpu", node, i)``, ``("switch", node, name)``,
    ``("hostbridge", node, name)``, ``("numa", node, i)``, ``("nic", node, name)``,
    ``("node", node)``, ``("domain", level, path...)``, ``("clique", id)``, ``("root",)``.
    Every vertex has ``kind``; every edge has ``kind`` and ``bandwidth_gbps``.
    """
    g = nx.Graph()
    g.add_node(("root",), kind="root")
    wanted = set(nodes) if nodes is not None else None
    levels = cluster.spec.levels
    for nd in cluster.nodes:
        nkey = ("node", nd.name)
        g.add_node(nkey, kind="node", type=nd.type_name)
        parent: tuple = ("root",)
        for lv in range(len(levels)):
            dkey = ("domain", levels[lv].name, *nd.levels[: lv + 1])
            if dkey not in g:
                g.add_node(dkey, kind="domain", level=levels[lv].name, value=nd.levels[lv])
                g.add_edge(parent, dkey, kind="uplink", bandwidth_gbps=0.0)
            parent = dkey
        g.add_edge(parent, nkey, kind="uplink", bandwidth_gbps=0.0)
        if nd.clique:
            ckey = ("clique", nd.clique)
            g.add_node(ckey, kind="clique")
            g.add_edge(nkey, ckey, kind="mnnvl", bandwidth_gbps=0.0)
        if wanted is None or nd.name in wanted:
            _add_node_inside(g, nd)
    return g


def _add_node_inside(g: nx.Graph, nd: ResolvedNode) -> None:
    topo = nd.topology
    t = node_type_arrays(topo)
    nkey = ("node", nd.name)
    numa = topo.gpu_numa()
    for s in sorted(set(numa)):
        g.add_node(("numa", nd.name, s), kind="numa")
        g.add_edge(nkey, ("numa", nd.name, s), kind="socket", bandwidth_gbps=0.0)
    for gi in range(topo.gpus.count):
        g.add_node(("gpu", nd.name, gi), kind="gpu", model=topo.gpus.model, numa=numa[gi], index=gi)
    by_gpu = {p.gpu: p for p in topo.pcie}
    for gi in range(topo.gpus.count):
        p = by_gpu.get(gi)
        chain: list[tuple] = [("gpu", nd.name, gi)]
        if p and p.switch:
            chain.append(("switch", nd.name, p.switch))
        if p and p.upstream:
            chain.append(("switch", nd.name, p.upstream))
        if p and p.host_bridge:
            chain.append(("hostbridge", nd.name, p.host_bridge))
        chain.append(("numa", nd.name, numa[gi]))
        for a, b in zip(chain, chain[1:], strict=False):
            if b not in g:
                g.add_node(b, kind=b[0])
            g.add_edge(a, b, kind="pcie", bandwidth_gbps=PCIE_X16_GBPS[topo.pcie_gen])
    rel = topo.pcie_relation_matrix()
    for a in range(topo.gpus.count):
        for b in range(a + 1, topo.gpus.count):
            ga, gb = ("gpu", nd.name, a), ("gpu", nd.name, b)
            if t.nvlinks[a, b] > 0:
                g.add_edge(ga, gb, kind="nvlink", links=int(t.nvlinks[a, b]), pcie=rel[a][b],
                           bandwidth_gbps=float(t.bandwidth_gbps[a, b]))
            else:
                g.add_edge(ga, gb, kind="p2p", pcie=rel[a][b], bandwidth_gbps=float(t.bandwidth_gbps[a, b]))
    for nic in topo.nics:
        k = ("nic", nd.name, nic.name)
        g.add_node(k, kind="nic", rail=nic.rail)
        g.add_edge(k, nkey, kind="network", bandwidth_gbps=nic.bandwidth_gbps)
        for gi in nic.gpus:
            g.add_edge(k, ("gpu", nd.name, gi), kind="gpudirect", bandwidth_gbps=nic.bandwidth_gbps)
