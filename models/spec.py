"""Cluster spec: the pydantic model of a GPU cluster, loaded from YAML or JSON.

A spec names its network levels (widest first, the host level is implicit), the node
types it uses (presets such as ``dgx-h100`` or its own), and its nodes, either one by
one or in compact groups (template x count with generated names and level values).

``load_cluster(text_or_path)`` validates a spec and returns a ``ClusterSpec`` whose
``expand()`` gives the concrete node list; every error is a ``SpecError`` that names
the file, the path inside it, the value and what to do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import SpecError

PCIE_RELATIONS = ("PIX", "PXB", "PHB", "NODE", "SYS")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")  # \Z: "$" would let a final newline through
MAX_GPUS_PER_NODE = 64  # the engine keeps a node's GPUs as bits of one 64-bit mask
MAX_NVLINKS = 64  # bonded NVLinks between two GPUs, or per GPU to NVSwitch, that a spec takes


def is_node_name(name: str) -> bool:
    """A name the API server accepts for a Node (a DNS subdomain: lower-case, at most 253)."""
    return len(name) <= 253 and NAME_RE.match(name) is not None
# A Kubernetes resource name: an optional DNS-subdomain prefix and a name of at most 63
# characters (``rdma/rdma_shared_device_a``, ``vpc.amazonaws.com/efa``, ``hugepages-2Mi``).
RESOURCE_NAME_RE = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z"
)
# Resources a node spec gives elsewhere (cpu_milli, memory_mib, max_pods, the GPU count) or
# that are not placed (ephemeral-storage); they are not extended resources.
NOT_EXTENDED = ("cpu", "memory", "pods", "ephemeral-storage", "nvidia.com/gpu")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # JSON has no Infinity


def check_extended_resources(value: dict[str, int]) -> dict[str, int]:
    """Extended resources: Kubernetes resource names other than the ones modelled elsewhere, sorted."""
    for name in value:
        if name in NOT_EXTENDED:
            raise ValueError(f"{name!r} is not an extended resource (cpu, memory, pods and nvidia.com/gpu have "
                             "their own keys; ephemeral-storage is not placed)")
        prefix = name.partition("/")[0] if "/" in name else ""
        if len(name) > 253 or not RESOURCE_NAME_RE.match(name) or len(prefix) > 253:
            raise ValueError(f"{name!r} is not a Kubernetes resource name (e.g. rdma/ib, vpc.amazonaws.com/efa, "
                             "hugepages-2Mi)")
    return dict(sorted(value.items()))


# Upper bounds that keep every value a 64-bit (or, for NUMA ids and rails, 16-bit) number in the
# topology arrays; far above any real node (2^53 milli-CPU, MiB or units; 1,024 NUMA nodes as Linux)
MAX_QUANTITY = 2**53
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
NumaId = Annotated[int, Field(ge=0, le=1023)]
ExtendedResources = Annotated[dict[str, Quantity], Field(default_factory=dict)]


class GpuSpec(_Strict):
    """The GPUs of a node: all of one model."""

    count: Annotated[int, Field(ge=0, le=MAX_GPUS_PER_NODE)]
    model: str = ""
    memory_mib: Quantity = 0


def _reject_remote_gpu(value: Any) -> Any:
    """Refuse ``"node:3"``-style GPU references: a node's topology names only its own GPUs."""
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, str) and ":" in item:
            raise ValueError(
                f"{item!r} names a GPU of another node; a node's topology names only its own GPUs "
                "(0-based indices). GPUs of different nodes meet through the network (`levels`) or a "
                "multi-node NVLink domain (`clique` on nodes, `clique_every` on groups)"
            )
    return value


class NvLinkSpec(_Strict):
    """A bonded set of NVLinks between two GPUs of the same node."""

    gpus: tuple[int, int]
    links: Annotated[int, Field(ge=1, le=MAX_NVLINKS)] = 1

    _local = field_validator("gpus", mode="before")(_reject_remote_gpu)


class NvSwitchSpec(_Strict):
    """All GPUs of the node reach each other through NVSwitch."""

    links_per_gpu: Annotated[int, Field(ge=1, le=MAX_NVLINKS)] = 18


class PcieSpec(_Strict):
    """Where one GPU sits on the PCIe tree.

    Two GPUs on the same ``switch`` are PIX; under a common ``upstream`` switch PXB;
    on the same ``host_bridge`` PHB; on the same ``numa`` node NODE; otherwise SYS.
    """

    gpu: int
    switch: str | None = None
    upstream: str | None = None
    host_bridge: str | None = None
    numa: NumaId = 0

    _local = field_validator("gpu", mode="before")(_reject_remote_gpu)


class NicSpec(_Strict):
    """A network interface and the GPUs that sit next to it (GPUDirect RDMA)."""

    name: str
    bandwidth_gbps: Annotated[float, Field(gt=0)] = 400.0
    gpus: tuple[int, ...] = ()
    rail: Annotated[int, Field(ge=0, le=1023)] | None = None
    numa: NumaId | None = None

    _local = field_validator("gpus", mode="before")(_reject_remote_gpu)


class NodeTopologySpec(_Strict):
    """Intra-node topology: GPUs, NVLink/NVSwitch, PCIe placement, NUMA, NICs.

    PCIe relations come either from ``pcie`` (one entry per GPU, relations derived) or
    from ``pcie_matrix`` (N x N cells as ``nvidia-smi topo -m`` prints them, ``X`` on the
    diagonal); the matrix wins where both are given.
    """

    gpus: GpuSpec
    nvswitch: NvSwitchSpec | None = None
    nvlinks: tuple[NvLinkSpec, ...] = ()
    nvlink_generation: Annotated[int, Field(ge=1, le=6)] | None = None
    pcie: tuple[PcieSpec, ...] = ()
    pcie_matrix: tuple[tuple[str, ...], ...] | None = None
    pcie_gen: Annotated[int, Field(ge=1, le=6)] = 4
    numa: tuple[NumaId, ...] | None = None
    nics: tuple[NicSpec, ...] = ()
    measured_p2p_gbps: tuple[tuple[float, ...], ...] | None = None

    @model_validator(mode="after")
    def _check_indices(self) -> NodeTopologySpec:
        n = self.gpus.count
        rng = f"node has GPUs 0-{n - 1}" if n else "node has no GPUs"

        def check(idx: int, where: str) -> None:
            if not 0 <= idx < n:
                raise ValueError(f"{where}: GPU {idx} out of range ({rng})")

        pairs: dict[frozenset[int], int] = {}
        for i, link in enumerate(self.nvlinks):
            a, b = link.gpus
            check(a, f"nvlinks[{i}].gpus")
            check(b, f"nvlinks[{i}].gpus")
            if a == b:
                raise ValueError(f"nvlinks[{i}].gpus: a GPU cannot link to itself ({a})")
            first = pairs.setdefault(frozenset((a, b)), i)
            if first != i:  # one entry per pair carries all its links; a second would replace the first
                raise ValueError(f"nvlinks[{i}].gpus: GPUs {a} and {b} are already linked by nvlinks[{first}]; "
                                 "give the pair once, with all its links")
        seen: set[int] = set()
        for i, p in enumerate(self.pcie):
            check(p.gpu, f"pcie[{i}].gpu")
            if p.gpu in seen:
                raise ValueError(f"pcie[{i}].gpu: GPU {p.gpu} listed twice")
            seen.add(p.gpu)
        if self.pcie and len(seen) != n:
            missing = sorted(set(range(n)) - seen)
            raise ValueError(f"pcie: GPUs {missing} have no entry (give one per GPU or none)")
        if self.numa is not None and len(self.numa) == n:
            for i, p in enumerate(self.pcie):
                if "numa" in p.model_fields_set and p.numa != self.numa[p.gpu]:
                    raise ValueError(f"pcie[{i}].numa: {p.numa} disagrees with numa[{p.gpu}] = {self.numa[p.gpu]}")
        self._check_pcie_tree()
        if self.pcie_matrix is not None:
            if len(self.pcie_matrix) != n or any(len(r) != n for r in self.pcie_matrix):
                raise ValueError(f"pcie_matrix: must be {n} x {n}")
            for i, row in enumerate(self.pcie_matrix):
                for j, cell in enumerate(row):
                    ok = cell == "X" if i == j else cell in PCIE_RELATIONS
                    if not ok:
                        raise ValueError(
                            f"pcie_matrix[{i}][{j}]: {cell!r} is not one of "
                            f"{'X' if i == j else '/'.join(PCIE_RELATIONS)}"
                        )
                    if i != j and self.pcie_matrix[j][i] != cell:
                        raise ValueError(f"pcie_matrix[{i}][{j}]: not symmetric")
        if self.numa is not None and len(self.numa) != n:
            raise ValueError(f"numa: needs one entry per GPU ({n}), got {len(self.numa)}")
        for i, nic in enumerate(self.nics):
            for g in nic.gpus:
                check(g, f"nics[{i}].gpus")
        names = [nic.name for nic in self.nics]
        if len(set(names)) != len(names):
            raise ValueError("nics: duplicate NIC names")
        if self.measured_p2p_gbps is not None:
            if len(self.measured_p2p_gbps) != n or any(len(r) != n for r in self.measured_p2p_gbps):
                raise ValueError(f"measured_p2p_gbps: must be {n} x {n}")
            # 0 = not measured (the link table's value stands); anything else a bandwidth
            bad = next(((i, j, v) for i, r in enumerate(self.measured_p2p_gbps) for j, v in enumerate(r)
                        if not (math.isfinite(v) and v >= 0)), None)
            if bad is not None:
                raise ValueError(f"measured_p2p_gbps[{bad[0]}][{bad[1]}]: {bad[2]} is not a bandwidth "
                                 "(GB/s, or 0 where not measured)")
        return self

    def _check_pcie_tree(self) -> None:
        """Each PCIe switch, upstream switch and host bridge has one parent, whichever GPU names it."""
        if not self.pcie:
            return
        numa = self.numa if self.numa is not None and len(self.numa) == self.gpus.count else None
        parents: dict[tuple[str, str], tuple[Any, int]] = {}
        switches = {p.switch for p in self.pcie if p.switch}
        for i, p in enumerate(self.pcie):
            if p.upstream and not p.switch:
                raise ValueError(f"pcie[{i}].upstream: needs `switch` (the upstream switch sits above the GPU's switch)")
            if p.upstream in switches:
                raise ValueError(f"pcie[{i}].upstream: {p.upstream!r} is also used as a GPU's `switch`; "
                                 "give the two levels different names")
            node_numa = numa[p.gpu] if numa is not None and 0 <= p.gpu < len(numa) else p.numa
            chain = [("switch", p.switch, (p.upstream, p.host_bridge, node_numa)),
                     ("upstream", p.upstream, (p.host_bridge, node_numa)),
                     ("host_bridge", p.host_bridge, (node_numa,))]
            for role, name, above in chain:
                if not name:
                    continue
                first = parents.setdefault((role, name), (above, p.gpu))
                if first[0] != above:
                    raise ValueError(
                        f"pcie[{i}].{role}: {name!r} sits under {_above(first[0])} for GPU {first[1]} but under "
                        f"{_above(above)} for GPU {p.gpu}; a PCIe device has one parent"
                    )

    def gpu_numa(self) -> list[int]:
        """NUMA node of each GPU (0 where nothing says otherwise)."""
        if self.numa is not None:
            return list(self.numa)
        if self.pcie:
            by_gpu = {p.gpu: p.numa for p in self.pcie}
            return [by_gpu[g] for g in range(self.gpus.count)]
        return [0] * self.gpus.count

    def nvlink_matrix(self) -> list[list[int]]:
        """Bonded NVLink count for every GPU pair (NVSwitch counts as links_per_gpu)."""
        n = self.gpus.count
        m = [[0] * n for _ in range(n)]
        if self.nvswitch is not None:
            for a in range(n):
                for b in range(n):
                    if a != b:
                        m[a][b] = self.nvswitch.links_per_gpu
        for link in self.nvlinks:
            a, b = link.gpus
            m[a][b] = m[b][a] = link.links if self.nvswitch is None else max(m[a][b], link.links)
        return m

    def pcie_relation_matrix(self) -> list[list[str]]:
        """PCIe relation of every GPU pair, ``X`` on the diagonal."""
        n = self.gpus.count
        if self.pcie_matrix is not None:
            return [list(r) for r in self.pcie_matrix]
        numa = self.gpu_numa()
        by_gpu = {p.gpu: p for p in self.pcie}
        out = [["X"] * n for _ in range(n)]
        for a in range(n):
            for b in range(n):
                if a == b:
                    continue
                pa, pb = by_gpu.get(a), by_gpu.get(b)
                if pa and pb and pa.switch and pa.switch == pb.switch:
                    rel = "PIX"
                elif pa and pb and pa.upstream and pa.upstream == pb.upstream:
                    rel = "PXB"
                elif pa and pb and pa.host_bridge and pa.host_bridge == pb.host_bridge:
                    rel = "PHB"
                elif numa[a] == numa[b]:
                    rel = "NODE"
                else:
                    rel = "SYS"
                out[a][b] = rel
        return out


def _above(parents: tuple[Any, ...]) -> str:
    """Describe a PCIe device's parents (upstream, host bridge, NUMA; innermost first)."""
    names = ("upstream", "host_bridge", "numa")[-len(parents):]
    return "(" + ", ".join(f"{k}={v!r}" for k, v in zip(names, parents, strict=True)) + ")"


class TaintSpec(_Strict):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class NodeStateSpec(_Strict):
    ready: bool = True
    unschedulable: bool = False
    taints: tuple[TaintSpec, ...] = ()


class LevelSpec(_Strict):
    """One network tier, widest first. ``label`` is the node label that carries it."""

    name: str
    label: str | None = None
    bandwidth_gbps: Annotated[float, Field(gt=0)] | None = None
    oversubscription: Annotated[float, Field(ge=1.0)] = 1.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", v) or v in ("host", "node"):
            raise ValueError(f"level name {v!r} must be lower-case letters/digits and not 'host'/'node'")
        return v

    def label_key(self) -> str:
        return self.label or f"topology.toposched.io/{self.name}"


class NodeSpec(_Strict):
    """One node. Its topology is a named node type or given explicitly."""

    name: str
    type: str | None = None
    topology: NodeTopologySpec | None = None
    cpu_milli: Quantity | None = None
    memory_mib: Quantity | None = None
    max_pods: Annotated[int, Field(ge=1, le=1_000_000)] = 110
    extended_resources: ExtendedResources
    levels: dict[str, str] = Field(default_factory=dict)
    clique: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    state: NodeStateSpec = NodeStateSpec()

    _ext = field_validator("extended_resources")(check_extended_resources)

    @model_validator(mode="after")
    def _type_or_topology(self) -> NodeSpec:
        if self.type is None and self.topology is None:
            raise ValueError("a node needs `type` (a node type name) or `topology`")
        return self


class LevelPattern(_Strict):
    """How a group generates one level's value: node ``i`` of the group lands in
    domain ``(start + i // every)``, formatted with ``format`` (``{n}`` is that number)."""

    every: Annotated[int, Field(ge=1)]
    format: str = "{level}{n}"
    start: Annotated[int, Field(ge=0)] = 0


class NodeGroupSpec(_Strict):
    """Compact form: ``count`` nodes from one template, names and levels generated.

    ``name`` is a Python format string over ``{i}`` (index in the group, 0-based) and
    ``{g}`` (index + ``first``), e.g. ``gpu-{g:04d}``. Each level is either a fixed
    value (all nodes share it) or a pattern (``every: 32`` -> a new rack each 32 nodes).
    ``clique_every`` groups consecutive nodes into NVLink cliques.
    """

    name: str
    count: Annotated[int, Field(ge=1, le=100_000)]
    first: Annotated[int, Field(ge=0)] = 0
    type: str | None = None
    topology: NodeTopologySpec | None = None
    cpu_milli: Quantity | None = None
    memory_mib: Quantity | None = None
    max_pods: Annotated[int, Field(ge=1, le=1_000_000)] = 110
    extended_resources: ExtendedResources
    levels: dict[str, str | LevelPattern] = Field(default_factory=dict)
    clique_every: Annotated[int, Field(ge=1)] | None = None
    clique_format: str = "clique-{n}"
    labels: dict[str, str] = Field(default_factory=dict)
    state: NodeStateSpec = NodeStateSpec()

    _ext = field_validator("extended_resources")(check_extended_resources)

    @model_validator(mode="after")
    def _check(self) -> NodeGroupSpec:
        if self.type is None and self.topology is None:
            raise ValueError("a group needs `type` (a node type name) or `topology`")
        try:
            self.name.format(i=0, g=0)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(f"name: bad format string {self.name!r} ({exc}); use {{i}} or {{g}}") from None
        if self.clique_every:
            try:
                self.clique_format.format(n=0, i=0)
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                raise ValueError(f"clique_format: bad format string {self.clique_format!r} ({exc}); "
                                 "use {n} (the clique's number) or {i}") from None
        if self.count > 1 and self.name.format(i=0, g=self.first) == self.name.format(i=1, g=self.first + 1):
            raise ValueError(f"name: {self.name!r} gives all {self.count} nodes the same name; "
                             "put {i} or {g} in it, e.g. 'gpu-{g:03d}'")
        return self


class NodeTypeSpec(_Strict):
    """A reusable node template: topology plus CPU, memory and extended resources."""

    topology: NodeTopologySpec
    cpu_milli: Quantity = 0
    memory_mib: Quantity = 0
    extended_resources: ExtendedResources
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)

    _ext = field_validator("extended_resources")(check_extended_resources)


class ClusterSpec(_Strict):
    """A whole cluster. ``levels`` widest first; the host level is implicit."""

    name: str = "cluster"
    description: str = ""
    levels: tuple[LevelSpec, ...] = ()
    rail_level: str | None = None
    clique_bandwidth_gbps: Annotated[float, Field(gt=0)] | None = None
    node_types: dict[str, NodeTypeSpec] = Field(default_factory=dict)
    nodes: tuple[NodeSpec, ...] = ()
    groups: tuple[NodeGroupSpec, ...] = ()

    @model_validator(mode="after")
    def _check_levels(self) -> ClusterSpec:
        check_levels(self.levels)
        names = [lv.name for lv in self.levels]
        if self.rail_level is not None and self.rail_level not in names:
            raise ValueError(f"rail_level: {self.rail_level!r} is not one of the levels {names}")
        return self

    def level_names(self) -> list[str]:
        return [lv.name for lv in self.levels]


def check_levels(levels: Sequence[LevelSpec], fallback: Mapping[str, str] | None = None) -> None:
    """Each level has its own name and its own node label (``label_key``): two levels on one
    label would write each other's value on the node, and a node read back gives both the same.

    ``fallback`` (level name -> label) is the label a reader also tries for a level that names
    none (e.g. ``zone`` -> ``topology.kubernetes.io/zone``); it must not be another level's either.
    """
    names = [lv.name for lv in levels]
    if len(set(names)) != len(names):
        raise ValueError(f"levels: duplicate level names {names}")
    by_key: dict[str, int] = {}
    for i, lv in enumerate(levels):
        keys = [lv.label_key()]
        if lv.label is None and fallback and lv.name in fallback:
            keys.append(fallback[lv.name])
        for n, key in enumerate(keys):
            j = by_key.setdefault(key, i)
            if j == i:
                continue
            if lv.label is not None:
                head = f"levels[{i}].label: {key!r} of level {lv.name!r}"
            elif n == 0:
                head = f"levels[{i}]: level {lv.name!r} gives no label, and its default {key!r}"
            else:
                head = f"levels[{i}]: level {lv.name!r} gives no label, and the well-known {key!r} it falls back to"
            raise ValueError(f"{head} is already the label of level {levels[j].name!r} (levels[{j}]); "
                             "give each level its own node label")


class ResolvedNode(BaseModel):
    """A concrete node after expansion: type resolved, levels filled in."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    type_name: str
    topology: NodeTopologySpec
    cpu_milli: int
    memory_mib: int
    max_pods: int
    levels: tuple[str, ...]
    clique: str | None
    labels: dict[str, str]
    state: NodeStateSpec
    where: str
    extended_resources: dict[str, int] = Field(default_factory=dict)  # the type's, overridden by the node's


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_check_indices()]",) or str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _value_at(data: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, cur


_REL_PATH = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*): (.+)$", re.DOTALL)


def _parse_rel_path(text: str) -> tuple[Any, ...]:
    """``"nvlinks[0].gpus"`` -> ``("nvlinks", 0, "gpus")``."""
    return tuple(int(idx) if idx else key for key, idx in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", text))


# where a user reads about the keys of each document kind (by model class name)
DOC_PAGES = {
    "ClusterSpec": "docs/cluster-spec.md", "NodeTypeSpec": "docs/cluster-spec.md",
    "NodeTopologySpec": "docs/node-annotation.md", "RequestFile": "docs/requests.md",
    "StateFile": "docs/requests.md", "PlacementConfig": "docs/requests.md",
    "WorkloadFile": "docs/workload-simulator.md", "ServeConfig": "docs/deploy.md",
}


def spec_error_from_validation(exc: ValidationError, data: Any, source: str | None,
                               doc: str = "docs/cluster-spec.md") -> SpecError:
    """Turn pydantic's first error into one ``SpecError`` naming path, value and fix."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    etype = err["type"]
    if etype == "value_error":
        # a model validator names the place inside the model: "nvlinks[0].gpus: GPU 9 out of range"
        m = _REL_PATH.match(msg)
        if m:
            rel = _parse_rel_path(m.group(1))
            parent_found, parent = _value_at(data, loc)
            if parent_found and isinstance(parent, dict) and rel[0] in parent:
                loc = loc + rel
                msg = m.group(2)
    path = _fmt_loc(loc)
    has, value = _value_at(data, loc)
    if isinstance(value, dict):
        has, value = False, None  # the message names the problem; a whole mapping is noise
    fix = None
    if etype == "extra_forbidden":
        parent = _fmt_loc(loc[:-1]) or "the top level"
        msg = f"unknown key {loc[-1]!r}"
        fix = f"remove it or check its spelling (see {doc} for the keys of {parent})"
        has = False
    elif etype == "missing":
        msg = f"required key {loc[-1]!r} is missing"
        fix = f"add it (see {doc})"
        has = False
    elif etype.endswith("_type") or etype.endswith("_parsing"):
        fix = "fix the value's type"
    return SpecError(msg, source=source, path=path or None, value=value if has else None, fix=fix, has_value=has)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML with a key written twice in one mapping refused (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, list | dict):
                    continue  # unhashable: the base class says so
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_document(text: str, source: str) -> Any:
    """Parse YAML (a superset of JSON) and map syntax errors to ``SpecError``; a key given twice
    in one mapping is an error (the parsers would keep the last one silently)."""
    try:
        if source.endswith(".json"):
            try:
                return json.loads(text, object_pairs_hook=_unique_pairs)
            except json.JSONDecodeError:
                raise
            except ValueError as exc:
                raise SpecError(f"malformed JSON: {exc}", source=source, fix="give each key once") from None
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise SpecError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=source,
                        fix="fix the syntax") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"malformed YAML{where}: {problem}", source=source, fix="fix the syntax") from None
    except RecursionError:
        raise SpecError("nested too deeply to read", source=source, fix="flatten the document") from None


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise SpecError("file not found", source=str(path), fix="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, a name too long, ...
        raise SpecError(f"cannot read file: {exc}", source=str(path)[:300]) from None


def validate_model(model: type[BaseModel], data: Any, source: str | None) -> Any:
    """Validate a parsed document against ``model``; every problem is one ``SpecError``."""
    doc = DOC_PAGES.get(model.__name__, "docs/")
    if not isinstance(data, dict):
        keys = ", ".join(f"`{k}:`" for k in list(model.model_fields)[:3])
        raise SpecError(f"the document must be a mapping, not {type(data).__name__}", source=source,
                        fix=f"start the file with keys such as {keys} (see {doc})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, data, source, doc) from None
