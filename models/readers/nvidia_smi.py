"""Readers for ``nvidia-smi`` output: the ``topo -m`` matrix and the ``-q`` / ``-q -x`` query.

``parse_topo_matrix`` reads the matrix as a ``TopoMatrix`` (cells as printed);
``topology_from_matrix`` turns it into a ``NodeTopologySpec``; ``render_topo_matrix``
writes a ``TopoMatrix`` back in the ``topo -m`` text form. ``parse_query_xml`` and
``parse_query_text`` read per-GPU facts (UUID, model, memory, PCI bus, NUMA, MIG, fabric).
Every malformed input is a ``SpecError`` naming the source and the 1-based line.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

from models.errors import SpecError
from models.spec import (
    MAX_GPUS_PER_NODE,
    MAX_NVLINKS,
    PCIE_RELATIONS,
    GpuSpec,
    NicSpec,
    NodeTopologySpec,
    NvLinkSpec,
    NvSwitchSpec,
)

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GPU_COLUMN_RE = re.compile(r"GPU\d+$")
NIC_COLUMN_RE = re.compile(r"NIC\d+$")
NIC_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*$")
NV_RE = re.compile(r"NV([1-9][0-9]*)$")  # NV0 is no link: not a cell
CPU_LIST_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*$")
NIC_LEGEND_RE = re.compile(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$")
AFFINITY_COLUMNS = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")
HEADER_TOKEN_RE = re.compile("|".join(re.escape(c) for c in AFFINITY_COLUMNS) + r"|\S+")
# nvidia-smi releases before 2017 printed SOC for what is now SYS (across CPU sockets).
LEGACY_CELLS = {"SOC": "SYS"}
CELL_HELP = "X, NV#, PIX, PXB, PHB, NODE or SYS"
NOT_AVAILABLE = ("", "N/A")


def _is_cell(cell: str) -> bool:
    return cell == "X" or cell in PCIE_RELATIONS or NV_RE.match(cell) is not None


def nvlink_count(cell: str) -> int:
    """Bonded NVLinks of a ``topo -m`` cell (``NV12`` -> 12, anything else -> 0)."""
    m = NV_RE.match(cell)
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class TopoMatrix:
    """The ``nvidia-smi topo -m`` matrix as printed.

    ``gpu_cells[i][j]`` is the cell of row GPU i, column GPU j (``X`` on the diagonal);
    ``nic_cells[i][k]`` is GPU i against NIC k. ``nics`` holds the NIC device names (the
    ``NIC Legend`` names when one is printed). ``nic_nic_cells`` is the NIC x NIC block
    when the NIC rows were printed, else None. Affinities are None where ``N/A`` or blank.
    """

    gpus: tuple[str, ...] = ()
    gpu_cells: tuple[tuple[str, ...], ...] = ()
    nics: tuple[str, ...] = ()
    nic_cells: tuple[tuple[str, ...], ...] = ()
    nic_nic_cells: tuple[tuple[str, ...], ...] | None = None
    cpu_affinity: tuple[str | None, ...] = ()
    numa_affinity: tuple[int | None, ...] = ()
    gpu_numa_id: tuple[int | None, ...] = ()
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n = len(self.gpus)
        for name in ("cpu_affinity", "numa_affinity", "gpu_numa_id"):
            if not getattr(self, name):
                object.__setattr__(self, name, (None,) * n)
        if not self.nic_cells and n:
            object.__setattr__(self, "nic_cells", ((),) * n if not self.nics else ())
        self._check()

    @property
    def n_gpus(self) -> int:
        return len(self.gpus)

    def nvlinks(self, a: int, b: int) -> int:
        """Bonded NVLinks between GPUs ``a`` and ``b`` (0 when the cell is a PCIe relation)."""
        return nvlink_count(self.gpu_cells[a][b])

    def _fail(self, path: str, problem: str, value: object = None) -> SpecError:
        return SpecError(problem, source=self.source or "topo matrix", path=path, value=value)

    def _check(self) -> None:
        n, k = len(self.gpus), len(self.nics)
        if len(set(self.gpus)) != n:
            raise self._fail("gpus", "duplicate GPU names", self.gpus)
        if len(set(self.nics)) != k:
            raise self._fail("nics", "duplicate NIC names", self.nics)
        if len(self.gpu_cells) != n or any(len(r) != n for r in self.gpu_cells):
            raise self._fail("gpu_cells", f"must be {n} x {n}")
        if len(self.nic_cells) != n or any(len(r) != k for r in self.nic_cells):
            raise self._fail("nic_cells", f"must be {n} x {k} (GPUs x NICs)")
        for i, row in enumerate(self.gpu_cells):
            for j, cell in enumerate(row):
                if i == j and cell != "X":
                    raise self._fail(f"gpu_cells[{i}][{j}]", "the diagonal must be X", cell)
                if i != j and (cell == "X" or not _is_cell(cell)):
                    raise self._fail(f"gpu_cells[{i}][{j}]", f"not a GPU-GPU cell ({CELL_HELP})", cell)
                if cell != self.gpu_cells[j][i]:
                    raise self._fail(f"gpu_cells[{i}][{j}]", f"not symmetric ({cell} vs {self.gpu_cells[j][i]})")
        for i, row in enumerate(self.nic_cells):
            for j, cell in enumerate(row):
                if cell == "X" or not _is_cell(cell):
                    raise self._fail(f"nic_cells[{i}][{j}]", f"not a GPU-NIC cell ({CELL_HELP})", cell)
        if self.nic_nic_cells is not None:
            if len(self.nic_nic_cells) != k or any(len(r) != k for r in self.nic_nic_cells):
                raise self._fail("nic_nic_cells", f"must be {k} x {k}")
            for i, row in enumerate(self.nic_nic_cells):
                for j, cell in enumerate(row):
                    ok = cell == "X" if i == j else (cell != "X" and _is_cell(cell))
                    if not ok:
                        raise self._fail(f"nic_nic_cells[{i}][{j}]", f"not a NIC-NIC cell ({CELL_HELP})", cell)
        for name in ("cpu_affinity", "numa_affinity", "gpu_numa_id"):
            if len(getattr(self, name)) != n:
                raise self._fail(name, f"needs one entry per GPU ({n})")
        for i, cpus in enumerate(self.cpu_affinity):
            if cpus is not None and not CPU_LIST_RE.match(cpus):
                raise self._fail(f"cpu_affinity[{i}]", "not a CPU list such as 0-11,24-35", cpus)
        for name in ("numa_affinity", "gpu_numa_id"):
            for i, v in enumerate(getattr(self, name)):
                if v is not None and (not isinstance(v, int) or v < 0):
                    raise self._fail(f"{name}[{i}]", "must be a NUMA node number or None", v)


# --------------------------------------------------------------------------- topo -m


def _split(line: str) -> list[str]:
    """Fields of a matrix line: tab-separated when it has tabs (blank fields kept), else by spaces."""
    if "\t" in line:
        return [f.strip() for f in line.split("\t")]
    return line.split()


def _header_columns(line: str) -> list[str]:
    if "\t" in line:
        return [f.strip() for f in line.split("\t") if f.strip()]
    return HEADER_TOKEN_RE.findall(line)


def _affinity_values(tail: list[str], n_cols: int, tabbed: bool) -> list[str]:
    """Assign the fields after the cells to the affinity columns.

    nvidia-smi pads some affinity columns with an extra tab, and prints a blank CPU
    affinity on some machines. With tabs: an exact count maps one to one; otherwise the
    first field is the first column and the non-blank rest fill the others in order.
    Without tabs (copied text) blanks are lost: values are right-aligned.
    """
    if len(tail) == n_cols:
        return tail
    if not tabbed:
        if len(tail) > n_cols:
            raise ValueError(f"{len(tail)} values after the cells for {n_cols} affinity columns")
        return [""] * (n_cols - len(tail)) + tail
    if n_cols == 0:
        if any(tail):
            raise ValueError(f"unexpected values after the cells: {[t for t in tail if t]}")
        return []
    rest = [t for t in tail[1:] if t]
    if len(rest) > n_cols - 1:
        raise ValueError(f"{1 + len(rest)} values after the cells for {n_cols} affinity columns")
    return [tail[0] if tail else ""] + rest + [""] * (n_cols - 1 - len(rest))


def parse_topo_matrix(text: str, source: str) -> TopoMatrix:
    """Read ``nvidia-smi topo -m`` output (ANSI escapes, tabs or spaces) as a ``TopoMatrix``.

    Phases: (1) strip ANSI escapes; the first non-blank line is the header, whose
    columns are GPUn, NIC columns (``NICn`` or, on old drivers, device names such as
    ``mlx5_0``) and the affinity columns. (2) One row per GPU, then optionally one per
    NIC, until a blank line or ``Legend:``. (3) An optional ``NIC Legend`` names the NICs.
    (4) Cells are checked: ``X`` on the diagonal, known words, a symmetric matrix.
    Blank text (a node without GPUs) gives an empty matrix.
    """
    lines = [ANSI_RE.sub("", raw).rstrip("\r\n") for raw in text.splitlines()]

    def fail(lineno: int, problem: str, fix: str | None = None) -> SpecError:
        return SpecError(problem, source=source, path=f"line {lineno}", fix=fix)

    pos = 0
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    if pos == len(lines):
        return TopoMatrix(source=source)
    header_no = pos + 1
    columns = _header_columns(lines[pos])
    gpus = [c for c in columns if GPU_COLUMN_RE.match(c)]
    affinity = [c for c in columns if c in AFFINITY_COLUMNS]
    nic_cols = [c for c in columns if c not in gpus and c not in affinity]
    if not gpus and not affinity:
        raise fail(header_no, f"expected the `nvidia-smi topo -m` header (GPU0 GPU1 ... CPU Affinity), got {lines[pos].strip()!r}",
                   fix="pass the output of `nvidia-smi topo -m` only")
    if columns != gpus + nic_cols + affinity:
        raise fail(header_no, f"header columns out of order: {columns}", fix="expected GPU columns, then NICs, then affinities")
    if len(set(columns)) != len(columns):
        raise fail(header_no, f"duplicate header columns: {columns}")
    for c in nic_cols:
        if not NIC_NAME_RE.match(c):
            raise fail(header_no, f"{c!r} is neither a GPU, a NIC nor an affinity column")
    n, k, m = len(gpus), len(nic_cols), len(affinity)
    if n > MAX_GPUS_PER_NODE:
        raise fail(header_no, f"{n} GPU columns ({gpus[0]} ... {gpus[-1]}); toposched takes at most "
                              f"{MAX_GPUS_PER_NODE} GPUs per node")
    expected = gpus + nic_cols
    cells: list[list[str]] = []
    tails: list[dict[str, str]] = []
    row_lines: list[int] = []
    pos += 1
    while pos < len(lines):
        line = lines[pos]
        stripped = line.strip()
        if not stripped or stripped.startswith("Legend"):
            break
        lineno = pos + 1
        fields = _split(line)
        while fields and not fields[0]:
            fields.pop(0)
        label = fields[0]
        r = len(cells)
        if r >= len(expected):
            after = f"after the last row {expected[-1]}" if expected else "in a matrix without GPUs or NICs"
            raise fail(lineno, f"unexpected row {label!r} {after}")
        if label != expected[r]:
            raise fail(lineno, f"expected row {expected[r]}, got {label!r}")
        values = fields[1:]
        row: list[str] = []
        while values and len(row) < n + k:
            v = values.pop(0)
            if v or "\t" not in line:
                row.append(v)
        if len(row) < n + k:
            raise fail(lineno, f"row {label} has {len(row)} cells, the header has {n + k} columns")
        for j, raw in enumerate(row):
            cell = LEGACY_CELLS.get(raw, raw)
            if not _is_cell(cell):
                raise fail(lineno, f"column {expected[j]}: {raw!r} is not a topology cell ({CELL_HELP})")
            if (j == r) != (cell == "X"):
                raise fail(lineno, f"column {expected[j]}: {raw!r} " + ("must be X (self)" if j == r else "where X (self) is only allowed on the diagonal"))
            if nvlink_count(cell) > MAX_NVLINKS:
                raise fail(lineno, f"column {expected[j]}: {raw!r} is more bonded NVLinks than toposched takes "
                                   f"(at most NV{MAX_NVLINKS})")
            row[j] = cell
        try:
            tail = _affinity_values(values, m if r < n else 0, "\t" in line)
        except ValueError as exc:
            raise fail(lineno, f"row {label}: {exc}") from None
        cells.append(row)
        tails.append(dict(zip(affinity, tail, strict=True)) if r < n else {})
        row_lines.append(lineno)
        pos += 1
    if len(cells) < n:
        raise fail(pos + 1 if pos < len(lines) else len(lines), f"the matrix ends after {len(cells)} of {n} GPU rows")
    if n < len(cells) < n + k:
        raise fail(pos + 1 if pos < len(lines) else len(lines), f"the matrix ends after {len(cells) - n} of {k} NIC rows")
    has_nic_rows = len(cells) == n + k and k > 0

    # Symmetry: check each lower-triangle cell against its mirror, naming the lower row.
    for i in range(len(cells)):
        for j in range(min(i, len(cells[i]))):
            if j < len(cells) and cells[i][j] != cells[j][i]:
                raise fail(row_lines[i], f"{expected[i]}/{expected[j]} is {cells[i][j]} but {expected[j]}/{expected[i]} is "
                           f"{cells[j][i]} (line {row_lines[j]}); the matrix must be symmetric")

    names = list(nic_cols)
    for p in range(pos, len(lines)):
        if lines[p].strip() == "NIC Legend:":
            for q in range(p + 1, len(lines)):
                if not lines[q].strip():
                    continue
                mm = NIC_LEGEND_RE.match(lines[q])
                if not mm:
                    break
                if mm.group(1) not in nic_cols:
                    raise fail(q + 1, f"the NIC legend names {mm.group(1)}, which is not a column of the matrix")
                names[nic_cols.index(mm.group(1))] = mm.group(2)
            break

    cpu, numa, gpu_numa = [], [], []
    for i in range(n):
        t = tails[i]
        c = t.get("CPU Affinity", "")
        if c not in NOT_AVAILABLE and not CPU_LIST_RE.match(c):
            raise fail(row_lines[i], f"CPU Affinity of {gpus[i]}: {c!r} is not a CPU list such as 0-11,24-35")
        cpu.append(None if c in NOT_AVAILABLE else c)
        for col, out in (("NUMA Affinity", numa), ("GPU NUMA ID", gpu_numa)):
            v = t.get(col, "")
            if v in NOT_AVAILABLE:
                out.append(None)
            elif re.fullmatch(r"[0-9]+", v):  # not str.isdigit: it takes "²", which int() refuses
                out.append(int(v))
            else:
                raise fail(row_lines[i], f"{col} of {gpus[i]}: {v!r} is not a NUMA node number or N/A")
    try:
        return TopoMatrix(
            gpus=tuple(gpus),
            gpu_cells=tuple(tuple(r[:n]) for r in cells[:n]),
            nics=tuple(names),
            nic_cells=tuple(tuple(r[n:]) for r in cells[:n]),
            nic_nic_cells=tuple(tuple(r[n:]) for r in cells[n:]) if has_nic_rows else None,
            cpu_affinity=tuple(cpu),
            numa_affinity=tuple(numa),
            gpu_numa_id=tuple(gpu_numa),
            source=source,
        )
    except SpecError as exc:
        raise SpecError(exc.problem, source=source, path=f"line {header_no}-{pos}: {exc.path}", value=exc.value) from None


def render_topo_matrix(m: TopoMatrix, *, ansi: bool = False) -> str:
    """Write ``m`` in the ``nvidia-smi topo -m`` text form (tab-separated, with legends)."""
    k = len(m.nics)
    nic_cols = [f"NIC{j}" for j in range(k)]
    header = "\t".join([*m.gpus, *nic_cols, *AFFINITY_COLUMNS])
    out = ["\t" + ("\x1b[4m" + header + "\x1b[0m" if ansi else header)]

    def cell(c: str) -> str:
        return " X " if c == "X" else c

    def na(v: object) -> str:
        return "N/A" if v is None else str(v)

    for i, name in enumerate(m.gpus):
        row = [cell(c) for c in (*m.gpu_cells[i], *m.nic_cells[i])]
        out.append("\t".join([name, *row, na(m.cpu_affinity[i]), na(m.numa_affinity[i]), na(m.gpu_numa_id[i])]))
    if m.nic_nic_cells is not None:
        for j in range(k):
            row = [cell(m.nic_cells[i][j]) for i in range(m.n_gpus)] + [cell(c) for c in m.nic_nic_cells[j]]
            out.append("\t".join([nic_cols[j], *row]))
    out += ["", "Legend:", "",
            "  X    = the device itself",
            "  SYS  = PCIe plus the link between NUMA nodes (sockets)",
            "  NODE = PCIe plus the link between host bridges of one NUMA node",
            "  PHB  = PCIe through a host bridge",
            "  PXB  = several PCIe bridges, no host bridge",
            "  PIX  = at most one PCIe bridge",
            "  NV#  = a bonded set of # NVLinks"]
    if k:
        out += ["", "NIC Legend:", ""] + [f"  {c}: {name}" for c, name in zip(nic_cols, m.nics, strict=True)]
    return "\n".join(out) + "\n"


def gpu_numa_nodes(m: TopoMatrix) -> tuple[int, ...] | None:
    """NUMA node of each GPU: printed NUMA affinity, else grouped by CPU affinity, else None.

    When not every GPU shows a NUMA affinity but every GPU shows a CPU affinity, GPUs
    with the same CPU list share a NUMA node, numbered in order of first appearance.
    """
    if all(v is not None for v in m.numa_affinity):
        return tuple(int(v) for v in m.numa_affinity if v is not None)
    if all(c is not None for c in m.cpu_affinity):
        order: dict[str, int] = {}
        return tuple(order.setdefault(str(c), len(order)) for c in m.cpu_affinity)
    return None


def topology_from_matrix(
    m: TopoMatrix, model: str = "", memory_mib: int = 0, nic_gbps: float = 400.0
) -> NodeTopologySpec:
    """Turn a ``TopoMatrix`` into a ``NodeTopologySpec``.

    Heuristics (documented in docs/readers.md):
    - NVSwitch: only when there are at least 4 GPUs and every pair shows the same NV#;
      ``links_per_gpu`` is that #. Otherwise each NV# pair becomes an ``nvlinks`` entry.
    - PCIe: a pair that shows NV# hides its PCIe relation; we use NODE when both GPUs are
      on the same NUMA node and SYS otherwise (NUMA as in ``gpu_numa_nodes``, 0 if unknown).
    - NICs: a NIC's GPUs are those that are PIX or PXB to it; its NUMA node is theirs
      when they agree.
    """
    n = m.n_gpus
    numa = gpu_numa_nodes(m)
    numa_or_zero = list(numa) if numa is not None else [0] * n
    counts = {m.nvlinks(a, b) for a in range(n) for b in range(n) if a != b}
    nvswitch = None
    nvlinks: list[NvLinkSpec] = []
    if n >= 4 and len(counts) == 1 and 0 not in counts:
        nvswitch = NvSwitchSpec(links_per_gpu=counts.pop())
    else:
        nvlinks = [NvLinkSpec(gpus=(a, b), links=m.nvlinks(a, b))
                   for a in range(n) for b in range(a + 1, n) if m.nvlinks(a, b)]
    pcie = [["X"] * n for _ in range(n)]
    for a in range(n):
        for b in range(n):
            if a != b:
                c = m.gpu_cells[a][b]
                if nvlink_count(c):
                    c = "NODE" if numa_or_zero[a] == numa_or_zero[b] else "SYS"
                pcie[a][b] = c
    nics = []
    for j, name in enumerate(m.nics):
        near = tuple(i for i in range(n) if m.nic_cells[i][j] in ("PIX", "PXB"))
        nic_numa = {numa[i] for i in near} if numa is not None else set()
        nics.append(NicSpec(name=name, bandwidth_gbps=nic_gbps, gpus=near,
                            numa=nic_numa.pop() if len(nic_numa) == 1 else None))
    return NodeTopologySpec(
        gpus=GpuSpec(count=n, model=model, memory_mib=memory_mib),
        nvswitch=nvswitch,
        nvlinks=tuple(nvlinks),
        pcie_matrix=tuple(tuple(r) for r in pcie) if n else None,
        numa=numa,
        nics=tuple(nics),
    )


# --------------------------------------------------------------------------- nvidia-smi -q


@dataclass(frozen=True)
class GpuInfo:
    """Per-GPU facts from ``nvidia-smi -q`` (None where the tool prints N/A or nothing)."""

    index: int
    uuid: str
    product_name: str
    memory_total_mib: int
    pci_bus_id: str
    numa_node: int | None = None
    mig_mode: str | None = None
    nvlink_active: int | None = None
    fabric_clique_id: str | None = None
    fabric_cluster_uuid: str | None = None

    @property
    def clique(self) -> str | None:
        """The NVLink domain as GPU Feature Discovery labels it: ``<ClusterUUID>.<CliqueId>``."""
        if self.fabric_clique_id is None or self.fabric_cluster_uuid is None:
            return None
        return f"{self.fabric_cluster_uuid}.{self.fabric_clique_id}"


def _known(v: str | None) -> str | None:
    v = (v or "").strip()
    return None if v in NOT_AVAILABLE or v in ("None", "Not Supported", "[N/A]") else v


def _mib(text: str | None) -> int | None:
    m = re.fullmatch(r"\s*(\d+)\s*MiB\s*", text or "")
    return int(m.group(1)) if m else None


def _line_of(text: str, needle: str, start: int = 0) -> int:
    at = text.find(needle, start)
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def parse_query_xml(text: str, source: str) -> list[GpuInfo]:
    """Read ``nvidia-smi -q -x`` as one ``GpuInfo`` per ``<gpu>`` element, in order.

    NUMA is taken from any element under ``<gpu>`` whose tag contains ``numa`` and holds
    a number; NVLink from ``Active`` states under elements whose tag contains ``nvlink``
    (None when the XML has no such element, as on single-GPU guests).
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, col = exc.position
        raise SpecError(f"malformed XML at column {col + 1}: {str(exc).split(':')[0]}",
                        source=source, path=f"line {line}", fix="pass the output of `nvidia-smi -q -x`") from None
    if root.tag != "nvidia_smi_log":
        raise SpecError(f"root element is <{root.tag}>, not <nvidia_smi_log>", source=source, path="line 1",
                        fix="pass the output of `nvidia-smi -q -x`")
    elements = root.findall("gpu")
    if len(elements) > MAX_GPUS_PER_NODE:
        over = [m.start() for m in re.finditer(r"<gpu[\s>]", text)][MAX_GPUS_PER_NODE:]  # where GPU 64 starts
        line = text.count("\n", 0, over[0]) + 1 if over else 1
        raise SpecError(f"{len(elements)} GPUs (<gpu> elements); toposched takes at most {MAX_GPUS_PER_NODE} "
                        "GPUs per node", source=source, path=f"line {line}")
    out = []
    search_from = 0
    for idx, gpu in enumerate(elements):
        bus = gpu.get("id", "")
        anchor = f'<gpu id="{bus}"' if bus else "<gpu"
        line = _line_of(text, anchor, search_from)
        search_from = max(search_from, text.find(anchor, search_from) + 1)

        def need(path: str, gpu: ET.Element = gpu, idx: int = idx, line: int = line) -> str:
            v = _known(gpu.findtext(path))
            if v is None:
                raise SpecError(f"GPU {idx}: <{path}> is missing or N/A", source=source, path=f"line {line}")
            return v

        uuid, product = need("uuid"), need("product_name")
        mem = _mib(gpu.findtext("fb_memory_usage/total"))
        if mem is None:
            raise SpecError(f"GPU {idx}: <fb_memory_usage/total> is not a size in MiB",
                            source=source, path=f"line {line}", value=gpu.findtext("fb_memory_usage/total"))
        numa = None
        nvlink_seen, active = False, 0
        for el in gpu.iter():
            tag = el.tag.lower()
            if numa is None and "numa" in tag and (el.text or "").strip().isdigit():
                numa = int((el.text or "").strip())
            if "nvlink" in tag:
                nvlink_seen = True
                active += sum(1 for sub in el.iter() if (sub.text or "").strip().lower() == "active")
        out.append(GpuInfo(
            index=idx,
            uuid=uuid,
            product_name=product,
            memory_total_mib=mem,
            pci_bus_id=_known(gpu.findtext("pci/pci_bus_id")) or bus,
            numa_node=numa,
            mig_mode=_known(gpu.findtext("mig_mode/current_mig")),
            nvlink_active=active if nvlink_seen else None,
            fabric_clique_id=_known(gpu.findtext("fabric/cliqueId")),
            fabric_cluster_uuid=_known(gpu.findtext("fabric/clusterUuid")),
        ))
    return out


_KV_RE = re.compile(r"^(\s*)([^:]*?)\s*:\s?(.*)$")


def parse_query_text(text: str, source: str) -> list[GpuInfo]:
    """Read plain ``nvidia-smi -q`` (an indented ``Key : Value`` tree) as ``GpuInfo`` per GPU."""
    blocks: list[tuple[int, str, dict[str, str]]] = []
    stack: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("==="):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            mm = re.fullmatch(r"GPU ([0-9A-Fa-f:.]+)", line)
            if mm:
                blocks.append((lineno, mm.group(1), {}))
                stack = []
            elif not _KV_RE.match(line):
                raise SpecError(f"unexpected top-level line {line.strip()!r}", source=source, path=f"line {lineno}",
                                fix="pass the output of `nvidia-smi -q`")
            continue
        if not blocks:
            raise SpecError("indented line before the first `GPU <bus id>` line", source=source, path=f"line {lineno}")
        kv = _KV_RE.match(line)
        key = (kv.group(2) if kv else line).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if kv:
            blocks[-1][2]["/".join(k for _, k in stack)] = kv.group(3).strip()
    out = []
    for idx, (lineno, bus, kv) in enumerate(blocks):
        def need(key: str, idx: int = idx, lineno: int = lineno, kv: dict[str, str] = kv) -> str:
            v = _known(kv.get(key))
            if v is None:
                raise SpecError(f"GPU {idx}: {key!r} is missing or N/A", source=source, path=f"line {lineno}")
            return v

        uuid, product = need("GPU UUID"), need("Product Name")
        mem = _mib(kv.get("FB Memory Usage/Total"))
        if mem is None:
            raise SpecError(f"GPU {idx}: 'FB Memory Usage/Total' is not a size in MiB", source=source,
                            path=f"line {lineno}", value=kv.get("FB Memory Usage/Total"))
        numa = next((int(v) for k, v in kv.items() if "NUMA" in k.upper() and v.strip().isdigit()), None)
        nvl = [v for k, v in kv.items() if "NVLINK" in k.upper()]
        out.append(GpuInfo(
            index=idx,
            uuid=uuid,
            product_name=product,
            memory_total_mib=mem,
            pci_bus_id=_known(kv.get("PCI/Bus Id")) or bus,
            numa_node=numa,
            mig_mode=_known(kv.get("MIG Mode/Current")),
            nvlink_active=sum(1 for v in nvl if v.lower().startswith("active")) if nvl else None,
            fabric_clique_id=_known(kv.get("Fabric/CliqueId")),
            fabric_cluster_uuid=_known(kv.get("Fabric/ClusterUUID")),
        ))
    return out


def gfd_model_name(product_name: str) -> str:
    """The product name as the ``nvidia.com/gpu.product`` label spells it (blanks -> ``-``)."""
    return "-".join(product_name.split())


def topology_from_nvidia_smi(topo_text: str, query_xml: str | None = None, *, source: str = "nvidia-smi",
                             nic_gbps: float = 400.0) -> NodeTopologySpec:
    """Convenience: ``topo -m`` text plus optional ``-q -x`` XML -> ``NodeTopologySpec``.

    Model and memory come from the XML's first GPU (all GPUs of a node are one model);
    the model is written as GPU Feature Discovery labels it (``gfd_model_name``).
    """
    m = parse_topo_matrix(topo_text, f"{source} topo -m")
    model, memory = "", 0
    if query_xml is not None:
        gpus: Sequence[GpuInfo] = parse_query_xml(query_xml, f"{source} -q -x")
        if gpus:
            if len(gpus) != m.n_gpus:
                raise SpecError(f"`-q -x` lists {len(gpus)} GPUs but `topo -m` shows {m.n_gpus}", source=source,
                                fix="capture both from the same node")
            model, memory = gfd_model_name(gpus[0].product_name), gpus[0].memory_total_mib
    return topology_from_matrix(m, model=model, memory_mib=memory, nic_gbps=nic_gbps)
