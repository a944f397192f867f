"""Load a cluster from a spec file or a preset name and expand it into concrete nodes.

Phase 1 validates the document against ``ClusterSpec`` (shape, keys, types).
Phase 2 resolves references: node types (the spec's own, then presets), levels present
on every node, unique node names, generated names and level values of groups.
The result, ``Cluster``, is immutable and is what the topology graph is built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import SpecError
from models.spec import (
    ClusterSpec,
    LevelPattern,
    NodeGroupSpec,
    NodeSpec,
    NodeTypeSpec,
    ResolvedNode,
    is_node_name,
    parse_document,
    read_text,
    validate_model,
)


@dataclass(frozen=True)
class Cluster:
    """A validated cluster: the spec, and its nodes in spec order."""

    spec: ClusterSpec
    nodes: tuple[ResolvedNode, ...]
    source: str

    @property
    def name(self) -> str:
        return self.spec.name

    def level_names(self) -> list[str]:
        return self.spec.level_names()

    def node(self, name: str) -> ResolvedNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _resolve_type(
    name: str, spec: ClusterSpec, source: str, where: str
) -> NodeTypeSpec:
    from models import presets

    if name in spec.node_types:
        return spec.node_types[name]
    try:
        return presets.node_type(name)
    except KeyError:
        known = sorted(set(spec.node_types) | set(presets.node_type_names()))
        raise SpecError(
            f"unknown node type {name!r}", source=source, path=f"{where}.type",
            fix=f"use one of {', '.join(known)} or define it under node_types",
        ) from None


def _levels_for(
    values: dict[str, Any], spec: ClusterSpec, source: str, where: str, index: int
) -> tuple[str, ...]:
    names = spec.level_names()
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise SpecError(
            f"unknown level {unknown[0]!r}", source=source, path=f"{where}.levels.{unknown[0]}",
            fix=f"the cluster's levels are {names or '(none)'}; add it to `levels` or remove it",
        )
    out = []
    for lv in names:
        if lv not in values:
            raise SpecError(
                f"level {lv!r} is missing on this node", source=source, path=f"{where}.levels",
                fix=f"every node needs a value for each of the cluster's levels {names}",
            )
        v = values[lv]
        if isinstance(v, LevelPattern):
            n = v.start + index // v.every
            try:
                v = v.format.format(n=n, level=lv, i=index)
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                raise SpecError(f"bad format {v.format!r}: {exc}", source=source,
                                path=f"{where}.levels.{lv}.format", fix="use {n}, {level} or {i}") from None
        if not v:
            raise SpecError("empty level value", source=source, path=f"{where}.levels.{lv}")
        out.append(str(v))
    return tuple(out)


def _resolve_node(
    item: NodeSpec | NodeGroupSpec, spec: ClusterSpec, source: str, where: str,
    name: str, index: int, clique: str | None,
) -> ResolvedNode:
    if item.topology is not None:
        topo = item.topology
        base_cpu, base_mem, base_labels, type_name = 0, 0, {}, "custom"
        base_ext: dict[str, int] = {}
    else:
        assert item.type is not None
        t = _resolve_type(item.type, spec, source, where)
        topo, base_cpu, base_mem, base_labels, type_name = (
            t.topology, t.cpu_milli, t.memory_mib, t.labels, item.type
        )
        base_ext = t.extended_resources
    if not is_node_name(name):
        raise SpecError(
            "node name is not a valid Kubernetes name", source=source, path=f"{where}.name", value=name,
            fix="use lower-case letters, digits, '-' and '.'",
        )
    return ResolvedNode(
        name=name,
        type_name=type_name,
        topology=topo,
        cpu_milli=item.cpu_milli if item.cpu_milli is not None else base_cpu,
        memory_mib=item.memory_mib if item.memory_mib is not None else base_mem,
        max_pods=item.max_pods,
        levels=_levels_for(dict(item.levels), spec, source, where, index),
        clique=clique,
        labels={**base_labels, **item.labels},
        state=item.state,
        where=where,
        extended_resources=dict(sorted({**base_ext, **item.extended_resources}.items())),
    )


def expand(spec: ClusterSpec, source: str = "<spec>") -> Cluster:
    """Resolve types and generate group members; check names are unique."""
    nodes: list[ResolvedNode] = []
    seen: dict[str, str] = {}

    def add(node: ResolvedNode) -> None:
        if node.name in seen:
            raise SpecError(
                f"duplicate node name {node.name!r} (first at {seen[node.name]})", source=source,
                path=node.where, fix="node names must be unique across nodes and groups",
            )
        seen[node.name] = node.where
        nodes.append(node)

    for i, n in enumerate(spec.nodes):
        add(_resolve_node(n, spec, source, f"nodes[{i}]", n.name, 0, n.clique))
    clique_group: dict[str, int] = {}  # clique name -> the group that made it
    for gi, g in enumerate(spec.groups):
        for k in range(g.count):
            name = g.name.format(i=k, g=g.first + k)
            clique = None
            if g.clique_every:
                clique = g.clique_format.format(n=k // g.clique_every, i=k)
                if clique_group.setdefault(clique, gi) != gi:  # one NVLink domain cannot span two groups' racks
                    raise SpecError(f"clique {clique!r} is made by groups[{clique_group[clique]}] too",
                                    source=source, path=f"groups[{gi}].clique_format",
                                    fix="give each group its own clique_format, e.g. 'rack2-clique-{n}'")
            add(_resolve_node(g, spec, source, f"groups[{gi}]", name, k, clique))
    if not nodes:
        raise SpecError("the cluster has no nodes", source=source, path="nodes",
                        fix="add `nodes:` or `groups:`")
    return Cluster(spec=spec, nodes=tuple(nodes), source=source)


def cluster_from_data(data: Any, source: str = "<spec>") -> Cluster:
    spec = validate_model(ClusterSpec, data, source)
    return expand(spec, source)


def load_cluster(spec_or_preset: str | Path) -> Cluster:
    """Load a cluster from a YAML/JSON file path or a preset name (``superpod-su``)."""
    from models import presets

    text = str(spec_or_preset)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        doc = parse_document(read_text(path), str(path))
        return cluster_from_data(doc, str(path))
    if text in presets.cluster_names():
        return presets.cluster(text)
    if text in presets.node_type_names():
        # a node type alone: a one-node cluster, handy for `cluster show/draw` and `place`
        return cluster_from_data({"name": text, "nodes": [{"name": text, "type": text}]}, f"preset node type {text}")
    raise SpecError(
        f"{text!r} is neither a spec file nor a preset",
        fix=f"use a path, a cluster preset ({', '.join(presets.cluster_names())}) "
            f"or a node type ({', '.join(presets.node_type_names())})",
    )
