"""Draw a cluster to an image: one node's insides (left) and the domain tree (right).

Left, from ``build_graph``: NUMA sockets, host bridges and PCIe switches above a row of
GPUs; NVLink bonds as arcs labelled ``NV<links>`` (or one NVSwitch hub); NICs below with
the GPUs they serve. Right: root, network domains level by level, and nodes. Small trees
are drawn whole; large ones keep the drawn node's path open and fold its siblings into
"+k more" boxes.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath

from models.cluster import Cluster
from models.errors import ToposchedError
from models.spec import ResolvedNode
from models.topology import TopologyArrays, build_arrays, build_graph

GPU_DX = 1.3  # horizontal spacing of GPUs
ROW = {"numa": 4.4, "hostbridge": 3.3, "upstream": 2.2, "switch": 1.1, "gpu": 0.0}
FULL_TREE_BOXES = 40  # draw the whole domain tree up to this many boxes
MAX_SIBLINGS = 4  # boxes shown per parent in a folded tree
HIGHLIGHT = "#c0392b"
FORMATS = (".png", ".svg", ".pdf")


def draw_cluster(cluster: Cluster, output: str | Path, node: str | None = None) -> str:
    """Write the drawing of ``cluster`` (centred on ``node``, default the first) to ``output``."""
    out = Path(output)
    if out.suffix.lower() not in FORMATS:
        raise ToposchedError(f"{out}: unsupported image type {out.suffix or '(none)'!r}; use {', '.join(FORMATS)}")
    if not out.parent.exists():
        raise ToposchedError(f"{out}: folder {str(out.parent)!r} does not exist")
    name = node if node is not None else cluster.nodes[0].name
    try:
        nd = cluster.node(name)
    except KeyError:
        sample = ", ".join(n.name for n in cluster.nodes[:5])
        raise ToposchedError(f"node {name!r} is not in cluster {cluster.name!r} (nodes: {sample}, ...)") from None
    arrays = build_arrays(cluster)
    gpus = nd.topology.gpus.count
    tree = _domain_tree(cluster, arrays, arrays.node_index[name])
    leaves = max(1, _count_leaves(tree))
    left_w = max(5.0, gpus * GPU_DX * 0.9 + 2.0)
    right_w = max(5.0, min(30.0, leaves * 1.25))
    fig = Figure(figsize=(left_w + right_w, 7.5), layout="constrained")
    ax_node, ax_tree = fig.subplots(1, 2, width_ratios=[left_w, right_w])
    _draw_node(ax_node, cluster, nd)
    _draw_tree(ax_tree, tree, cluster)
    fig.suptitle(f"{cluster.name}: {arrays.n_nodes} nodes, {arrays.total_gpus} GPUs", fontsize=12)
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise ToposchedError(f"{out}: cannot write the image ({exc.strerror or exc})") from None
    return name


# -- left panel: one node --------------------------------------------------------------


def _box(ax, x: float, y: float, text: str, color: str, *, size: float = 8, edge: str = "#333333") -> None:
    ax.text(x, y, text, ha="center", va="center", fontsize=size, zorder=4,
            bbox={"boxstyle": "round,pad=0.3", "facecolor": color, "edgecolor": edge, "linewidth": 0.8})


def _node_positions(nd: ResolvedNode) -> dict[tuple, tuple[float, float]]:
    """Coordinates of the node's GPU, PCIe, NUMA vertices (keys as in ``build_graph``)."""
    topo = nd.topology
    n = topo.gpus.count
    numa = topo.gpu_numa()
    pos: dict[tuple, tuple[float, float]] = {}
    members: dict[tuple, list[float]] = {}
    by_gpu = {p.gpu: p for p in topo.pcie}
    for g in range(n):
        x = g * GPU_DX
        pos[("gpu", nd.name, g)] = (x, ROW["gpu"])
        p = by_gpu.get(g)
        ups = []
        if p is not None and p.switch:
            ups.append((("switch", nd.name, p.switch), "switch"))
        if p is not None and p.upstream:
            ups.append((("switch", nd.name, p.upstream), "upstream"))
        if p is not None and p.host_bridge:
            ups.append((("hostbridge", nd.name, p.host_bridge), "hostbridge"))
        ups.append((("numa", nd.name, numa[g]), "numa"))
        for key, row in ups:
            members.setdefault(key, []).append(x)
            pos[key] = (0.0, ROW[row])
    for key, xs in members.items():
        pos[key] = (float(np.mean(xs)), pos[key][1])
    return pos


def _arc(ax, xa: float, xb: float, y: float, depth: float, color: str, width: float) -> None:
    """A downward arc from (xa, y) to (xb, y) whose lowest point is ``depth`` below y."""
    mid = (xa + xb) / 2
    verts = [(xa, y), (mid, y - 2 * depth), (xb, y)]
    path = MplPath(verts, [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
    ax.add_patch(PathPatch(path, facecolor="none", edgecolor=color, linewidth=width, zorder=2))


def _draw_node(ax, cluster: Cluster, nd: ResolvedNode) -> None:
    topo = nd.topology
    n = topo.gpus.count
    graph = build_graph(cluster, nodes=[nd.name])
    pos = _node_positions(nd)
    for a, b, data in graph.edges(data=True):
        if data["kind"] == "pcie" and a in pos and b in pos:
            ax.plot([pos[a][0], pos[b][0]], [pos[a][1], pos[b][1]], color="#7f8c8d", linewidth=1.0, zorder=1)
    labels = {"numa": "NUMA {}", "hostbridge": "host bridge\n{}", "switch": "PCIe sw\n{}"}
    colors = {"numa": "#d6eaf8", "hostbridge": "#e8daef", "switch": "#fdebd0"}
    for key, (x, y) in pos.items():
        if key[0] in labels:
            _box(ax, x, y, labels[key[0]].format(key[2]), colors[key[0]], size=7)
    y_gpu = ROW["gpu"]
    bottom = y_gpu - 0.6
    nvlinks = [(a, b, d) for a, b, d in graph.edges(data=True) if d["kind"] == "nvlink"]
    if topo.nvswitch is not None and n > 1:
        hub = ((n - 1) * GPU_DX / 2, y_gpu - 1.7)
        for g in range(n):
            x = g * GPU_DX
            ax.plot([x, hub[0]], [y_gpu, hub[1]], color="#27ae60", linewidth=1.6, zorder=2)
            ax.text(x + (hub[0] - x) * 0.3, y_gpu + (hub[1] - y_gpu) * 0.3, f"NV{topo.nvswitch.links_per_gpu}",
                    fontsize=6.5, color="#1e8449", ha="center", va="center", zorder=3,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        _box(ax, hub[0], hub[1], "NVSwitch", "#d5f5e3", size=8)
        bottom = hub[1] - 0.5
    else:
        for a, b, d in nvlinks:
            xa, xb = sorted((pos[a][0], pos[b][0]))
            depth = 0.25 + 0.28 * (xb - xa) / GPU_DX
            _arc(ax, xa, xb, y_gpu - 0.25, depth, "#27ae60", 0.8 + 0.6 * d["links"])
            ax.text((xa + xb) / 2, y_gpu - 0.25 - depth, f"NV{d['links']}", fontsize=6.5, color="#1e8449",
                    ha="center", va="center", zorder=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
            bottom = min(bottom, y_gpu - 0.25 - depth - 0.4)
    for g in range(n):
        x, y = pos[("gpu", nd.name, g)]
        _box(ax, x, y, f"GPU{g}", "#abebc6", size=8)
    if topo.nics:
        y_nic = bottom - 0.9
        used: dict[float, int] = {}
        for nic in topo.nics:
            xs = [g * GPU_DX for g in nic.gpus]
            x = float(np.mean(xs)) if xs else (n - 1) * GPU_DX / 2
            k = used.get(round(x, 2), 0)
            used[round(x, 2)] = k + 1
            y = y_nic - 0.75 * k
            for gx in xs:
                ax.plot([gx, x], [y_gpu, y], color="#2874a6", linewidth=0.8, linestyle="--", zorder=1)
            rail = f" r{nic.rail}" if nic.rail is not None else ""
            _box(ax, x, y, f"{nic.name}\n{nic.bandwidth_gbps:g}G{rail}", "#d6eaf8", size=6.5)
        bottom = y_nic - 0.75 * max(used.values()) - 0.3
    span = max((n - 1) * GPU_DX, 1.0)
    ax.set_xlim(-0.9, span + 0.9)
    ax.set_ylim(bottom - 0.4, ROW["numa"] + 0.8)
    ax.set_axis_off()
    model = topo.gpus.model or "GPU"
    ax.set_title(f"node {nd.name} ({nd.type_name}): {n}x {model}", fontsize=10)


# -- right panel: the domain tree ------------------------------------------------------


@dataclass
class _Item:
    """A box of the tree drawing."""

    label: str
    sub: str = ""
    children: list[_Item] = field(default_factory=list)
    highlight: bool = False
    folded: bool = False
    x: float = 0.0
    depth: int = 0


def _count_leaves(item: _Item) -> int:
    return 1 if not item.children else sum(_count_leaves(c) for c in item.children)


def _node_item(arrays: TopologyArrays, i: int, selected: int) -> _Item:
    clique = int(arrays.clique[i])
    sub = f"{int(arrays.gpu_count[i])} GPUs"
    if clique >= 0:
        sub += f"\n{arrays.clique_names[clique]}"
    return _Item(arrays.node_names[i], sub, highlight=i == selected)


def _domain_tree(cluster: Cluster, arrays: TopologyArrays, selected: int) -> _Item:
    """Build the boxes: whole tree if small, else the selected node's path with folded siblings."""
    n_levels = len(arrays.level_names)
    n_nodes = arrays.n_nodes
    counts = [np.bincount(arrays.domain[lv], minlength=len(arrays.domain_names[lv])) for lv in range(n_levels)]
    children: list[dict[int, list[int]]] = []  # level -> parent id (-1 = root) -> child ids
    for lv in range(n_levels):
        kids: dict[int, list[int]] = {}
        for d, parent in enumerate(arrays.domain_parent[lv]):
            kids.setdefault(int(parent), []).append(d)
        children.append(kids)
    nodes_in: dict[int, list[int]] = {}
    last = arrays.domain[n_levels - 1] if n_levels else np.full(n_nodes, -1)
    for i in range(n_nodes):
        nodes_in.setdefault(int(last[i]), []).append(i)
    total_boxes = sum(len(names) for names in arrays.domain_names) + n_nodes
    full = total_boxes <= FULL_TREE_BOXES
    path = [int(arrays.domain[lv, selected]) for lv in range(n_levels)]

    def fold(items: list[_Item], rest: list[int], unit_nodes: int, what: str) -> list[_Item]:
        if rest:
            items.append(_Item(f"+{len(rest)} more {what}", f"{unit_nodes} nodes", folded=True))
        return items

    def expand(level: int, parent: int) -> list[_Item]:
        if level == n_levels:  # the nodes under the leaf domain `parent`
            members = nodes_in.get(parent, [])
            if full:
                return [_node_item(arrays, i, selected) for i in members]
            shown = [i for i in members if i == selected] + [i for i in members if i != selected]
            keep, rest = sorted(shown[:MAX_SIBLINGS]), shown[MAX_SIBLINGS:]
            return fold([_node_item(arrays, i, selected) for i in keep], rest, len(rest), "nodes")
        lv_name = arrays.level_names[level]
        ids = children[level].get(parent, [])
        on_path = path[level] if level < len(path) else None
        if full:
            keep, rest = ids, []
        else:
            ordered = [d for d in ids if d == on_path] + [d for d in ids if d != on_path]
            keep, rest = sorted(ordered[:MAX_SIBLINGS]), ordered[MAX_SIBLINGS:]
        items = []
        for d in keep:
            item = _Item(f"{lv_name} {arrays.domain_names[level][d]}", f"{int(counts[level][d])} nodes",
                         highlight=d == on_path)
            if full or d == on_path:
                item.children = expand(level + 1, d)
            items.append(item)
        return fold(items, rest, int(sum(counts[level][d] for d in rest)), lv_name + "s")

    root = _Item("cluster", f"{n_nodes} nodes", highlight=True)
    root.children = expand(0, -1)
    return root


def _layout(item: _Item, depth: int, next_x: list[float]) -> None:
    item.depth = depth
    if not item.children:
        item.x = next_x[0]
        next_x[0] += 1.0
        return
    for c in item.children:
        _layout(c, depth + 1, next_x)
    item.x = (item.children[0].x + item.children[-1].x) / 2


def _draw_tree(ax, root: _Item, cluster: Cluster) -> None:
    _layout(root, 0, [0.0])
    max_depth = 0
    stack = [root]
    while stack:
        item = stack.pop()
        max_depth = max(max_depth, item.depth)
        for c in item.children:
            color = HIGHLIGHT if c.highlight and item.highlight else "#7f8c8d"
            ax.plot([item.x, c.x], [-item.depth, -c.depth], color=color, linewidth=1.0, zorder=1)
            stack.append(c)
        face = "#fadbd8" if item.highlight else ("#f2f3f4" if item.folded else "#eaf2f8")
        edge = HIGHLIGHT if item.highlight else "#555555"
        _box(ax, item.x, -item.depth, f"{item.label}\n{item.sub}" if item.sub else item.label, face, size=7, edge=edge)
    leaves = _count_leaves(root)
    ax.set_xlim(-0.8, leaves - 0.2)
    ax.set_ylim(-max_depth - 0.7, 0.7)
    ax.set_axis_off()
    levels = " > ".join(["cluster", *cluster.level_names(), "node"])
    rail = f", rails at {cluster.spec.rail_level}" if cluster.spec.rail_level else ""
    ax.set_title(f"domains: {levels}{rail}", fontsize=10)
