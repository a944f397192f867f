"""``toposched cluster``: show, draw and list cluster specs and presets."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from models import presets
from models.cluster import Cluster, load_cluster
from models.errors import ToposchedError
from models.spec import ResolvedNode
from models.topology import NodeTypeArrays, TopologyArrays, build_arrays, nvlink_generation

NAME = "cluster"
LIST_LIMIT = 8  # domains listed one by one per level in the text view


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="show, draw and list cluster specs and presets",
                       description="Inspect a cluster spec (YAML/JSON file) or a preset cluster.")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    show = csub.add_parser("show", help="summarize a cluster: nodes, GPUs, levels, NVLink islands, cliques",
                           description="Summarize a cluster spec or preset.")
    show.add_argument("spec", metavar="SPEC_OR_PRESET", help="cluster spec file (YAML/JSON) or preset name")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    draw = csub.add_parser("draw", help="draw one node's insides and the domain tree to an image",
                           description="Draw one node's intra-node topology (left) and the cluster's "
                                       "domain tree (right, collapsed when large).")
    draw.add_argument("spec", metavar="SPEC_OR_PRESET", help="cluster spec file (YAML/JSON) or preset name")
    draw.add_argument("-o", "--output", required=True, metavar="FILE",
                      help="image file to write (.png, .svg or .pdf)")
    draw.add_argument("--node", metavar="NAME", help="node to draw (default: the first node)")
    pre = csub.add_parser("presets", help="list preset node types and clusters",
                          description="List the node types and clusters shipped with toposched.")
    pre.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    if args.cluster_command == "show":
        cluster = load_cluster(args.spec)
        summary = summarize(cluster, build_arrays(cluster))
        if args.json:
            json.dump(summary, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(render_summary(summary))
        return 0
    if args.cluster_command == "draw":
        from scheduler.cluster_draw import draw_cluster

        cluster = load_cluster(args.spec)
        node = draw_cluster(cluster, args.output, node=args.node)
        print(f"wrote {args.output} (node {node})")
        return 0
    if args.cluster_command == "presets":
        listing = list_presets()
        if args.json:
            json.dump(listing, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(render_presets(listing))
        return 0
    raise ToposchedError(f"unknown cluster subcommand {args.cluster_command!r}")


# -- show ---------------------------------------------------------------------------


def _ranges(indices: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2,5"``."""
    out: list[str] = []
    start = prev = indices[0]
    for i in indices[1:]:
        if i != prev + 1:
            out.append(f"{start}-{prev}" if prev > start else str(start))
            start = i
        prev = i
    out.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(out)


def _type_summary(name: str, t: NodeTypeArrays, node: ResolvedNode, nodes: int) -> dict[str, Any]:
    topo = node.topology
    nvlinked = int((t.nvlinks > 0).sum()) > 0
    return {
        "name": name,
        "nodes": nodes,
        "cpu_milli": node.cpu_milli,
        "memory_mib": node.memory_mib,
        "max_pods": node.max_pods,
        "extended_resources": dict(node.extended_resources),
        "gpus_per_node": t.n_gpus,
        "gpu_model": topo.gpus.model,
        "nvswitch": t.nvswitch,
        "nvlink_generation": nvlink_generation(topo.gpus.model, topo.nvlink_generation) if nvlinked else None,
        "max_nvlinks_per_pair": int(t.nvlinks.max()) if t.n_gpus else 0,
        "islands": [list(i) for i in t.islands],
        "numa_nodes": sorted({int(v) for v in t.numa}),
        "nics": [{"name": nic.name, "bandwidth_gbps": nic.bandwidth_gbps, "rail": nic.rail, "gpus": list(nic.gpus)}
                 for nic in topo.nics],
    }


def summarize(cluster: Cluster, arrays: TopologyArrays) -> dict[str, Any]:
    """Facts about a cluster as plain data (what ``cluster show`` prints)."""
    by_model: dict[str, dict[str, int]] = {}
    for i, nd in enumerate(cluster.nodes):
        model = nd.topology.gpus.model or "(unnamed)"
        entry = by_model.setdefault(model, {"nodes": 0, "gpus": 0})
        entry["nodes"] += 1
        entry["gpus"] += int(arrays.gpu_count[i])
    levels = []
    for lv, spec in enumerate(cluster.spec.levels):
        counts = np.bincount(arrays.domain[lv], minlength=len(arrays.domain_names[lv]))
        parents = arrays.domain_parent[lv]
        domains = []
        for d, value in enumerate(arrays.domain_names[lv]):
            path = [value]
            p, up = int(parents[d]), lv - 1
            while up >= 0 and p >= 0:
                path.insert(0, arrays.domain_names[up][p])
                p, up = int(arrays.domain_parent[up][p]), up - 1
            domains.append({"name": "/".join(path), "nodes": int(counts[d])})
        levels.append({
            "name": spec.name,
            "label": spec.label_key(),
            "oversubscription": spec.oversubscription,
            "bandwidth_gbps": spec.bandwidth_gbps,
            "domains": domains,
        })
    # A node type as the spec names it, with its resources: nodes of one topology (one entry of
    # arrays.types, which the engine keys its GPU-set tables by) but another name, CPU, memory,
    # pod limit or extended resources are another line.
    kinds: dict[tuple[Any, ...], list[int]] = {}  # key -> [first node, node count]
    for i, nd in enumerate(cluster.nodes):
        key = (nd.type_name, int(arrays.node_type[i]), nd.cpu_milli, nd.memory_mib, nd.max_pods,
               tuple(nd.extended_resources.items()))
        kinds.setdefault(key, [i, 0])[1] += 1
    types = [_type_summary(key[0], arrays.types[key[1]], cluster.nodes[first], count)
             for key, (first, count) in kinds.items()]
    clique_sizes = np.bincount(arrays.clique[arrays.clique >= 0], minlength=len(arrays.clique_names))
    return {
        "name": cluster.name,
        "description": cluster.spec.description,
        "source": cluster.source,
        "nodes": arrays.n_nodes,
        "gpus": arrays.total_gpus,
        "gpus_by_model": by_model,
        "levels": levels,
        "rail_level": cluster.spec.rail_level,
        "node_types": types,
        "cliques": {
            "count": len(arrays.clique_names),
            "bandwidth_gbps": arrays.clique_gbps,
            "sizes": {name: int(clique_sizes[k]) for k, name in enumerate(arrays.clique_names)},
        },
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _count_range(values: list[int], unit: str) -> str:
    lo, hi = min(values), max(values)
    return f"{_plural(lo, unit)} each" if lo == hi else f"{lo}-{hi} {unit}s"


def _resources(t: dict[str, Any]) -> str:
    """``64 CPUs, 512 GiB memory, 110 pods, rdma/ib 4``."""
    mem = t["memory_mib"]
    parts = [f"{t['cpu_milli'] / 1000:g} CPUs", f"{mem // 1024} GiB memory" if mem % 1024 == 0 else f"{mem} MiB memory",
             _plural(t["max_pods"], "pod")]
    parts += [f"{name} {amount}" for name, amount in t["extended_resources"].items()]
    return ", ".join(parts)


def render_summary(s: dict[str, Any]) -> str:
    """The text view of ``summarize``."""
    lines = [f"cluster {s['name']}" + (f": {s['description']}" if s["description"] else ""),
             f"  source: {s['source']}",
             f"  {_plural(s['nodes'], 'node')}, {_plural(s['gpus'], 'GPU')}", "", "GPUs by model:"]
    width = max(len(m) for m in s["gpus_by_model"])
    for model, e in sorted(s["gpus_by_model"].items(), key=lambda kv: -kv[1]["gpus"]):
        gpus = "GPU " if e["gpus"] == 1 else "GPUs"
        lines.append(f"  {model:<{width}}  {e['gpus']:>7} {gpus} on {_plural(e['nodes'], 'node')}")
    lines.append("")
    if s["levels"]:
        rail = f"; rail-optimized at {s['rail_level']}" if s["rail_level"] else ""
        lines.append(f"levels (widest first, host implicit{rail}):")
        for lv in s["levels"]:
            doms = lv["domains"]
            over = f", {lv['oversubscription']:g}:1 above" if lv["oversubscription"] != 1 else ""
            sizes = _count_range([d["nodes"] for d in doms], "node")
            lines.append(f"  {lv['name']}: {_plural(len(doms), 'domain')}, {sizes}{over}"
                         f"  (label {lv['label']})")
            shown = ", ".join(f"{d['name']} ({d['nodes']})" for d in doms[:LIST_LIMIT])
            more = f", ... {len(doms) - LIST_LIMIT} more" if len(doms) > LIST_LIMIT else ""
            lines.append(f"    {shown}{more}")
    else:
        lines.append("levels: none (every node is its own domain)")
    lines.append("")
    lines.append("node types:")
    for t in s["node_types"]:
        if t["nvswitch"]:
            nv = f"NVSwitch, {t['max_nvlinks_per_pair']} NVLink{t['nvlink_generation']} links/GPU"
        elif t["nvlink_generation"]:
            nv = f"NVLink{t['nvlink_generation']} mesh, up to {t['max_nvlinks_per_pair']} links/pair"
        else:
            nv = "no NVLink"
        islands = [i for i in t["islands"] if len(i) > 1]
        isl = " ".join(f"[{_ranges(tuple(i))}]" for i in islands) if islands else "none"
        nics = t["nics"]
        rates = "/".join(sorted({f"{n['bandwidth_gbps']:g}" for n in nics}))
        nic = f"{_plural(len(nics), 'NIC')} ({rates} Gb/s)" if nics else "no NICs listed"
        lines.append(f"  {t['name']}: {_plural(t['nodes'], 'node')}, {t['gpus_per_node']}x {t['gpu_model'] or '(unnamed)'}")
        lines.append(f"    {nv}; NVLink islands {isl}; NUMA {','.join(map(str, t['numa_nodes'])) or '-'}; {nic}")
        lines.append(f"    per node: {_resources(t)}")
    lines.append("")
    c = s["cliques"]
    if c["count"]:
        sizes = _count_range(list(c["sizes"].values()), "node")
        lines.append(f"NVLink cliques: {c['count']}, {sizes}, {c['bandwidth_gbps']:g} Gb/s per GPU")
    else:
        lines.append("NVLink cliques: none")
    return "\n".join(lines)


# -- presets ------------------------------------------------------------------------


def list_presets() -> dict[str, list[dict[str, Any]]]:
    """Preset node types and clusters with their descriptions."""
    types = []
    for name in presets.node_type_names():
        t = presets.node_type(name)
        types.append({"name": name, "gpus": t.topology.gpus.count, "gpu_model": t.topology.gpus.model,
                      "description": t.description})
    clusters = [{"name": name, "description": presets.cluster_description(name)} for name in presets.cluster_names()]
    return {"node_types": types, "clusters": clusters}


def render_presets(listing: dict[str, list[dict[str, Any]]]) -> str:
    width = max(len(e["name"]) for group in listing.values() for e in group)
    lines = ["node types (use as `type:` in a spec):"]
    lines += [f"  {e['name']:<{width}}  {e['description']}" for e in listing["node_types"]]
    lines += ["", "clusters (use the name wherever a spec file is accepted):"]
    lines += [f"  {e['name']:<{width}}  {e['description']}" for e in listing["clusters"]]
    return "\n".join(lines)
