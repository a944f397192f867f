"""Discover a node's GPU topology: NVML first, nvidia-smi for what NVML cannot say.

Phases of ``discover``:

1. NVML (when it opens): every GPU's facts and every pair's PCIe relation.
2. nvidia-smi: ``topo -m`` (NICs always come from it; NVLink, PCIe relations and NUMA
   where NVML had no answer) and ``-q -x`` only when NVML left a per-GPU fact open.
3. Neither answered: look for NVIDIA GPUs on the PCI bus (sysfs). None: a CPU-only node,
   an empty topology. Some: ``NoDriverError`` (the CLI exits 3).
4. Merge field by field, noting every fallback, into a ``NodeTopologySpec`` plus a
   per-GPU report (``Discovery``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.errors import SpecError, ToposchedError
from models.readers.k8s_node import GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL
from models.readers.nvidia_smi import GpuInfo, TopoMatrix, gfd_model_name, gpu_numa_nodes
from models.spec import MAX_GPUS_PER_NODE, PCIE_RELATIONS, GpuSpec, NicSpec, NodeTopologySpec, NvLinkSpec, NvSwitchSpec
from scheduler.agent.nvml_source import DeviceFacts, GpuSource, NvmlUnavailable, index_ranges, normalize_bus_id
from scheduler.agent.smi_source import SmiSource, SmiUnavailable

GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_CLIQUE_LABEL = "nvidia.com/gpu.clique"
NVIDIA_VENDOR = "0x10de"
GPU_PCI_CLASSES = ("0x0300", "0x0302")  # VGA and 3D controllers; NVSwitches (0x0680) are not GPUs
DEFAULT_NIC_GBPS = 400.0
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec")


class NoDriverError(ToposchedError):
    """NVIDIA GPUs are on the PCI bus but no driver answers (the CLI exits 3)."""

    exit_status = 3


@dataclass(frozen=True)
class GpuReport:
    """One GPU as discovered; None where no source knew."""

    index: int
    uuid: str | None = None
    product: str | None = None  # as the driver prints it: "NVIDIA H200"
    memory_mib: int | None = None
    pci_bus_id: str | None = None
    numa: int | None = None
    gpu_numa_id: int | None = None  # the GPU's memory as a NUMA node (coherent platforms only)
    mig_mode: str | None = None
    nvlink_peers: dict[int, int] = field(default_factory=dict)  # peer GPU -> bonded links
    nvswitch_links: int = 0
    clique: str | None = None
    fallbacks: tuple[str, ...] = ()  # fields that came from nvidia-smi

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "uuid": self.uuid, "product": self.product, "memory_mib": self.memory_mib,
            "pci_bus_id": self.pci_bus_id, "numa": self.numa, "gpu_numa_id": self.gpu_numa_id, "mig_mode": self.mig_mode,
            "nvlink_peers": {str(k): v for k, v in sorted(self.nvlink_peers.items())},
            "nvswitch_links": self.nvswitch_links, "clique": self.clique, "fallbacks": list(self.fallbacks),
        }


@dataclass(frozen=True)
class Discovery:
    """A node's topology, the per-GPU report behind it and notes on every fallback."""

    topology: NodeTopologySpec
    gpus: tuple[GpuReport, ...] = ()
    source: str = "none"
    driver_version: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def clique(self) -> str | None:
        """The NVLink fabric clique all GPUs share (None unless every GPU names the same)."""
        cliques = {g.clique for g in self.gpus}
        return cliques.pop() if len(cliques) == 1 and None not in cliques else None

    def gfd_labels(self) -> dict[str, str]:
        """The GPU Feature Discovery labels this discovery can fill (none on a CPU-only node)."""
        gpus = self.topology.gpus
        if gpus.count == 0:
            return {}
        out = {GPU_COUNT_LABEL: str(gpus.count)}
        if gpus.model:
            out[GPU_PRODUCT_LABEL] = gpus.model
        if gpus.memory_mib:
            out[GPU_MEMORY_LABEL] = str(gpus.memory_mib)
        if self.clique:
            out[GPU_CLIQUE_LABEL] = self.clique
        return out

    def with_measured_p2p(self, gbps: list[list[float]], note: str | None = None) -> Discovery:
        """The same discovery with ``measured_p2p_gbps`` set (validated like any topology)."""
        data = self.topology.model_dump(mode="json", exclude_none=True)
        data["measured_p2p_gbps"] = gbps
        topo = NodeTopologySpec.model_validate(data)
        return replace(self, topology=topo, notes=self.notes + ((note,) if note else ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "driver_version": self.driver_version,
            "gpus": [g.to_json() for g in self.gpus],
            "topology": self.topology.model_dump(mode="json", exclude_none=True),
            "gfd_labels": self.gfd_labels(),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- sysfs


def nvidia_gpus_on_pci(sys_root: Path) -> list[str] | None:
    """PCI addresses of NVIDIA GPUs that sysfs lists (the truth when no driver answers); None if unreadable."""
    devices = sys_root / "bus" / "pci" / "devices"
    out = []
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return None
    for dev in entries:
        try:
            vendor = (dev / "vendor").read_text().strip().lower()
            cls = (dev / "class").read_text().strip().lower()
        except OSError:
            continue
        if vendor == NVIDIA_VENDOR and cls.startswith(GPU_PCI_CLASSES):
            out.append(dev.name)
    return out


def nic_speed_gbps(sys_root: Path, name: str) -> float | None:
    """A NIC's line rate: the best RDMA port rate (``400 Gb/sec (4X NDR)``), else the netdev speed."""
    rates = []
    for rate in sorted((sys_root / "class" / "infiniband" / name / "ports").glob("*/rate")):
        try:
            m = _RATE_RE.match(rate.read_text())
        except OSError:
            continue
        if m and float(m.group(1)) > 0:
            rates.append(float(m.group(1)))
    if rates:
        return max(rates)
    try:
        mbps = int((sys_root / "class" / "net" / name / "speed").read_text().strip())
    except (OSError, ValueError):
        return None
    return mbps / 1000.0 if mbps > 0 else None


# --------------------------------------------------------------------------- discovery


@dataclass
class _Smi:
    """nvidia-smi answers, asked for lazily; failures become notes."""

    smi: SmiSource | None
    notes: list[str]
    matrix: TopoMatrix | None = None
    matrix_reason: str | None = None
    matrix_no_driver: bool = False
    _query: list[GpuInfo] | None = None
    _query_asked: bool = False
    used: bool = False

    def load_matrix(self) -> None:
        if self.smi is None:
            self.matrix_reason = "nvidia-smi not used"
            return
        try:
            self.matrix = self.smi.topo_matrix()
        except SmiUnavailable as exc:
            self.matrix_reason = exc.reason
            self.matrix_no_driver = exc.no_driver

    def pcie_generations(self, n: int) -> list[int]:
        """Known PCIe generations from ``-q -x`` (empty when it is unavailable)."""
        if self.query(n) is None or self.smi is None:
            return []
        return [g for g in self.smi.pcie_generations() if g is not None]

    def query(self, n: int) -> list[GpuInfo] | None:
        if not self._query_asked:
            self._query_asked = True
            if self.smi is not None:
                try:
                    self._query = self.smi.query()
                except SmiUnavailable as exc:
                    self.notes.append(f"nvidia-smi -q -x: {exc.reason}")
                if self._query is not None and len(self._query) != n:
                    raise SpecError(f"`nvidia-smi -q -x` lists {len(self._query)} GPUs but the node has {n}",
                                    source="discover", fix="check that no GPU fell off the bus (nvidia-smi -L)")
        return self._query


def _nvml_answers(nvml: GpuSource, notes: list[str]) -> tuple[str | None, list[DeviceFacts], dict[tuple[int, int], str | None]]:
    """Driver version, per-GPU facts and pairwise PCIe relations from NVML."""
    nvml.open()
    try:
        n = nvml.device_count()
        driver = nvml.driver_version()
        facts = [nvml.device(i) for i in range(n)]
        rel = {(a, b): nvml.pcie_relation(a, b) for a in range(n) for b in range(a + 1, n)}
    finally:
        nvml.close()
        notes.extend(nvml.notes())
    return driver, facts, rel


def discover(nvml: GpuSource | None, smi: SmiSource | None, *, sys_root: Path = Path("/sys"),
             nic_gbps: float = DEFAULT_NIC_GBPS) -> Discovery:
    """The node's topology from NVML and nvidia-smi (either may be None: not used)."""
    notes: list[str] = []
    driver, facts, rel = None, None, {}
    nvml_reason, nvml_no_driver = "NVML not used", False
    if nvml is not None:
        try:
            driver, facts, rel = _nvml_answers(nvml, notes)
        except NvmlUnavailable as exc:
            nvml_reason, nvml_no_driver = exc.reason, exc.no_driver
            notes.append(f"NVML: {exc.reason}; using nvidia-smi")
    s = _Smi(smi, notes)
    s.load_matrix()
    if facts is None and s.matrix is None:
        on_pci = nvidia_gpus_on_pci(sys_root)
        if on_pci or (on_pci is None and (nvml_no_driver or s.matrix_no_driver)):
            seen = f"{len(on_pci)} NVIDIA GPU(s) are on the PCI bus ({', '.join(on_pci[:8])})" if on_pci else \
                f"the NVIDIA driver is installed but not working (and {sys_root}/bus/pci is unreadable)"
            raise NoDriverError(f"{seen} but no driver answers: NVML: {nvml_reason}; nvidia-smi: {s.matrix_reason}. "
                                "Install or load the NVIDIA driver, or give the container GPU access "
                                "(NVIDIA_VISIBLE_DEVICES=all with the NVIDIA container runtime)")
        why = "no NVIDIA GPU on the PCI bus" if on_pci is not None else f"{sys_root}/bus/pci unreadable, no driver"
        return _empty(notes + [f"{why}: a CPU-only node, an empty topology (nvidia-smi: {s.matrix_reason})"])
    n = len(facts) if facts is not None else s.matrix.n_gpus  # type: ignore[union-attr]
    if facts is not None and nvml is not None and n > MAX_GPUS_PER_NODE:  # nvidia-smi's readers refuse it themselves
        raise SpecError(f"NVML ({nvml.kind}) sees {n} GPUs; toposched takes at most {MAX_GPUS_PER_NODE} GPUs per node",
                        source="discover")
    if facts is not None and s.matrix is not None and s.matrix.n_gpus != n:
        raise SpecError(f"NVML sees {n} GPUs but `nvidia-smi topo -m` shows {s.matrix.n_gpus}", source="discover",
                        fix="check that no GPU fell off the bus (nvidia-smi -L) and run again")
    if s.matrix is None:
        notes.append(f"nvidia-smi topo -m: {s.matrix_reason}; NICs unknown")
    if n == 0:
        on_pci = nvidia_gpus_on_pci(sys_root)
        if on_pci:
            raise NoDriverError(f"the driver sees no GPU but {len(on_pci)} NVIDIA GPU(s) are on the PCI bus "
                                f"({', '.join(on_pci[:8])}); give the container GPU access "
                                "(NVIDIA_VISIBLE_DEVICES=all with the NVIDIA container runtime)")
        return _empty(notes + ["the driver sees no GPU: an empty topology"], driver=driver,
                      source="nvml" if facts is not None else "nvidia-smi")
    return _merge(n, facts, rel, s, notes, driver, sys_root, nic_gbps)


def _empty(notes: list[str], driver: str | None = None, source: str = "none") -> Discovery:
    return Discovery(topology=NodeTopologySpec(gpus=GpuSpec(count=0)), source=source, driver_version=driver,
                     notes=tuple(notes))


def _merge(n: int, facts: list[DeviceFacts] | None, rel: dict[tuple[int, int], str | None], s: _Smi,
           notes: list[str], driver: str | None, sys_root: Path, nic_gbps: float) -> Discovery:
    """Phase 4: one value per field, NVML first, nvidia-smi where NVML had none."""
    devs = facts if facts is not None else [DeviceFacts(index=i) for i in range(n)]
    fallbacks: list[list[str]] = [[] for _ in range(n)]
    matrix_numa = gpu_numa_nodes(s.matrix) if s.matrix is not None else None

    def from_query(i: int) -> GpuInfo | None:
        q = s.query(n)
        if q is None:
            return None
        bus = devs[i].pci_bus_id
        if bus is not None:
            for info in q:
                if normalize_bus_id(info.pci_bus_id) == bus:
                    return info
        return q[i]

    def pick(i: int, name: str, nvml_value: Any, *fallback: tuple[str, Callable[[], Any]]) -> Any:
        if nvml_value is not None:
            return nvml_value
        for where, get in fallback:
            value = get()
            if value is not None:
                fallbacks[i].append(f"{name} ({where})")
                s.used = True
                return value
        return None

    def query(i: int, attr: str, convert: Callable[[Any], Any] = lambda v: v) -> tuple[str, Callable[[], Any]]:
        def get() -> Any:
            info = from_query(i)
            value = getattr(info, attr, None) if info is not None else None
            return convert(value) if value is not None else None
        return ("-q -x", get)

    def topo_numa(i: int) -> tuple[str, Callable[[], Any]]:
        return ("topo -m", lambda: matrix_numa[i] if matrix_numa is not None else None)

    reports = [GpuReport(
        index=i,
        uuid=pick(i, "uuid", d.uuid, query(i, "uuid")),
        product=pick(i, "product", d.name, query(i, "product_name")),
        memory_mib=pick(i, "memory", d.memory_total_mib, query(i, "memory_total_mib")),
        pci_bus_id=pick(i, "pci_bus_id", d.pci_bus_id, query(i, "pci_bus_id", normalize_bus_id)),
        numa=pick(i, "numa", d.numa_node, topo_numa(i), query(i, "numa_node")),
        gpu_numa_id=d.gpu_numa_id,
        mig_mode=pick(i, "mig_mode", d.mig_mode, query(i, "mig_mode")),
        clique=pick(i, "clique", d.fabric_clique, query(i, "clique")),
    ) for i, d in enumerate(devs)]
    peers, switch_links = _nvlinks(devs, facts is not None, s, notes)
    reports = [replace(r, nvlink_peers=peers[r.index], nvswitch_links=switch_links[r.index],
                       fallbacks=tuple(fallbacks[r.index])) for r in reports]
    numa = [r.numa for r in reports]
    unknown_numa = [r.index for r in reports if r.numa is None]
    if unknown_numa:
        notes.append(f"NUMA node unknown for GPUs {index_ranges(unknown_numa)}; the topology names none")
    pcie = _pcie_matrix(n, rel, facts is not None, s, numa, notes)
    products = Counter(r.product for r in reports if r.product)
    if len(products) > 1:
        notes.append(f"GPUs of different models {sorted(products)}; the topology names the most common")
    product = products.most_common(1)[0][0] if products else ""
    memories = [r.memory_mib for r in reports if r.memory_mib]
    gens = [d.max_pcie_gen for d in devs if d.max_pcie_gen]
    if not gens:
        gens = s.pcie_generations(n)
        if gens:
            s.used = True
            notes.append("PCIe generation from nvidia-smi -q -x (NVML had no answer)")
        else:
            notes.append("PCIe generation unknown (neither NVML nor nvidia-smi -q -x said); the topology assumes Gen4")
    nvswitch, nvlinks = _nvlink_specs(n, peers, switch_links, notes)
    topo = NodeTopologySpec(
        gpus=GpuSpec(count=n, model=gfd_model_name(product) if product else "", memory_mib=min(memories, default=0)),
        nvswitch=nvswitch,
        nvlinks=nvlinks,
        pcie_matrix=tuple(tuple(r) for r in pcie),
        pcie_gen=min(gens) if gens else 4,
        numa=tuple(int(v) for v in numa) if not unknown_numa else None,  # type: ignore[arg-type]
        nics=_nics(s, numa, sys_root, nic_gbps, notes),
    )
    parts = (["nvml"] if facts is not None else []) + (["nvidia-smi"] if s.used or facts is None else [])
    return Discovery(topology=topo, gpus=tuple(reports), source="+".join(parts), driver_version=driver,
                     notes=tuple(notes))


def _nvlinks(devs: list[DeviceFacts], from_nvml: bool, s: _Smi, notes: list[str]) -> tuple[list[dict[int, int]], list[int]]:
    """Direct NVLink peers (peer -> links) and links to NVSwitch, per GPU."""
    n = len(devs)
    peers: list[dict[int, int]] = [{} for _ in range(n)]
    switch = [0] * n
    if from_nvml and all(d.nvlinks is not None for d in devs):
        by_bus = {d.pci_bus_id: d.index for d in devs if d.pci_bus_id}
        for d in devs:
            for end in d.nvlinks or ():
                peer = by_bus.get(end.remote_bus_id) if end.remote_bus_id else None
                if end.remote_is_switch or (end.remote_is_switch is None and peer is None):
                    switch[d.index] += 1
                elif peer is not None and peer != d.index:
                    peers[d.index][peer] = peers[d.index].get(peer, 0) + 1
        for a in range(n):
            for b, k in list(peers[a].items()):
                if peers[b].get(a) != k:
                    notes.append(f"NVML: GPU {a} shows {k} NVLinks to GPU {b} but GPU {b} shows {peers[b].get(a, 0)}; "
                                 "using the larger")
                    peers[a][b] = peers[b][a] = max(k, peers[b].get(a, 0))
        return peers, switch
    if s.matrix is None:
        notes.append("NVLink unknown: neither NVML nor nvidia-smi topo -m answered; the topology has none")
        return peers, switch
    s.used = True
    m = s.matrix
    if from_nvml:
        notes.append("NVLink from nvidia-smi topo -m (NVML had no NVLink state)")
    counts = {m.nvlinks(a, b) for a in range(n) for b in range(n) if a != b}
    if n >= 4 and len(counts) == 1 and 0 not in counts:  # every pair alike: NVSwitch, as topology_from_matrix reads it
        return peers, [counts.pop()] * n
    for a in range(n):
        for b in range(n):
            if a != b and m.nvlinks(a, b):
                peers[a][b] = m.nvlinks(a, b)
    return peers, switch


def _nvlink_specs(n: int, peers: list[dict[int, int]], switch: list[int],
                  notes: list[str]) -> tuple[NvSwitchSpec | None, tuple[NvLinkSpec, ...]]:
    nvswitch = None
    if n >= 2 and all(switch):
        if len(set(switch)) > 1:
            notes.append(f"GPUs have different NVSwitch link counts {switch}; the topology uses the smallest")
        nvswitch = NvSwitchSpec(links_per_gpu=min(switch))
    elif any(switch):
        on = [i for i, k in enumerate(switch) if k]
        notes.append(f"only GPUs {index_ranges(on)} have NVSwitch links; the topology names no NVSwitch")
    links = tuple(NvLinkSpec(gpus=(a, b), links=k) for a in range(n) for b, k in sorted(peers[a].items()) if a < b)
    return nvswitch, links


def _pcie_matrix(n: int, rel: dict[tuple[int, int], str | None], from_nvml: bool, s: _Smi,
                 numa: list[int | None], notes: list[str]) -> list[list[str]]:
    """PCIe relation of every pair: NVML, else the topo -m cell, else NODE/SYS by NUMA node."""
    out = [["X"] * n for _ in range(n)]
    from_smi, guessed = 0, 0
    for a in range(n):
        for b in range(a + 1, n):
            r = rel.get((a, b))
            if r is None and s.matrix is not None and s.matrix.gpu_cells[a][b] in PCIE_RELATIONS:
                r = s.matrix.gpu_cells[a][b]
                from_smi += 1
            if r is None:
                r = "NODE" if (numa[a] or 0) == (numa[b] or 0) else "SYS"
                guessed += 1
            out[a][b] = out[b][a] = r
    if from_nvml and from_smi:
        s.used = True
        notes.append(f"PCIe relation of {from_smi} GPU pair(s) from nvidia-smi topo -m (NVML had no answer)")
    if guessed:
        why = "NVML had no answer and topo -m shows NV#" if s.matrix is not None else "no source answered"
        notes.append(f"PCIe relation of {guessed} GPU pair(s) set to NODE/SYS by NUMA node ({why})")
    return out


def _nics(s: _Smi, numa: list[int | None], sys_root: Path, nic_gbps: float, notes: list[str]) -> tuple[NicSpec, ...]:
    """NICs from topo -m: a NIC's GPUs are those PIX or PXB to it; speed from sysfs."""
    m = s.matrix
    if m is None:
        return ()
    out, assumed = [], []
    for j, name in enumerate(m.nics):
        near = tuple(i for i in range(m.n_gpus) if m.nic_cells[i][j] in ("PIX", "PXB"))
        nic_numa = {numa[i] for i in near}
        speed = nic_speed_gbps(sys_root, name)
        if speed is None:
            assumed.append(name)
        out.append(NicSpec(name=name, bandwidth_gbps=speed or nic_gbps, gpus=near,
                           numa=nic_numa.pop() if len(nic_numa) == 1 and None not in nic_numa else None))
    if assumed:
        notes.append(f"line rate of {', '.join(assumed)} not in sysfs; assumed {nic_gbps:g} Gb/s")
    if out:
        s.used = True
    return tuple(out)

