"""Load published ``topo -m`` matrices restated as JSON into ``TopoMatrix``.

The format is that of ``nvidia_smi_topo_observed.json`` (shared data): one entry per
machine with ``gpu_matrix`` (rows of cells, null where the source did not show a cell),
``complete`` (false when the source was cut off) and optional ``nic`` (NIC name -> one
cell per GPU), ``nic_pix`` / ``nic_pxb`` (GPU -> its PIX / PXB NICs, every other GPU-NIC
cell SYS; read only for complete entries), ``cpu_affinity`` and ``numa_affinity``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from models.errors import SpecError
from models.readers.nvidia_smi import CPU_LIST_RE, LEGACY_CELLS, TopoMatrix
from models.spec import read_text

_NIC_NUM_RE = re.compile(r"NIC(\d+)$")


def _nic_key(name: str) -> tuple[int, str]:
    m = _NIC_NUM_RE.match(name)
    return (int(m.group(1)), "") if m else (1 << 30, name)


def _nic_columns(entry: dict[str, Any], gpus: list[str], where: str) -> tuple[list[str], list[list[str]]]:
    """NIC names and the GPU x NIC cells of one entry."""
    n = len(gpus)
    if "nic" in entry:
        nic = entry["nic"]
        if not isinstance(nic, dict):
            raise SpecError("must map NIC name -> one cell per GPU", source=where, path="nic")
        names = list(nic)
        for name, col in nic.items():
            if not isinstance(col, list) or len(col) != n or any(not isinstance(c, str) for c in col):
                raise SpecError(f"needs one cell per GPU ({n})", source=where, path=f"nic.{name}", value=col)
        return names, [[nic[name][i] for name in names] for i in range(n)]
    near: dict[str, dict[str, str]] = {}
    if entry.get("complete", True):
        for key, cell in (("nic_pix", "PIX"), ("nic_pxb", "PXB")):
            for gpu, nics in (entry.get(key) or {}).items():
                if gpu not in gpus:
                    raise SpecError(f"unknown GPU {gpu!r}", source=where, path=key, fix=f"use one of {gpus}")
                for name in [nics] if isinstance(nics, str) else list(nics):
                    near.setdefault(str(name), {})[gpu] = cell
    names = sorted(near, key=_nic_key)
    return names, [[near[name].get(g, "SYS") for name in names] for g in gpus]


def load_published(entry: dict[str, Any], name: str, *, fill_unknown: str | None = None) -> TopoMatrix:
    """One published entry as a ``TopoMatrix``.

    Null GPU cells are an error unless ``fill_unknown`` (e.g. ``SYS``) is given. In an
    entry marked ``complete: false`` a CPU affinity that is not a CPU list (text that was
    cut off) reads as unknown (None); in a complete entry it is an error.
    """
    where = f"published topology {name}"
    if not isinstance(entry, dict) or not isinstance(entry.get("gpu_matrix"), list):
        raise SpecError("needs `gpu_matrix`, a list of rows", source=where)
    rows = entry["gpu_matrix"]
    n = len(rows)
    gpus = [f"GPU{i}" for i in range(n)]
    cells: list[list[str]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n:
            raise SpecError(f"row must have {n} cells", source=where, path=f"gpu_matrix[{i}]", value=row)
        out = []
        for j, c in enumerate(row):
            if c is None:
                if fill_unknown is None:
                    raise SpecError("cell not given", source=where, path=f"gpu_matrix[{i}][{j}]",
                                    fix="pass fill_unknown= to stand in for cells the source did not show")
                c = "X" if i == j else fill_unknown
            if not isinstance(c, str):
                raise SpecError("cell must be a string", source=where, path=f"gpu_matrix[{i}][{j}]", value=c)
            out.append(LEGACY_CELLS.get(c, c))
        cells.append(out)
    complete = bool(entry.get("complete", True))
    cpu: list[str | None] = []
    for i, c in enumerate(entry.get("cpu_affinity") or [None] * n):
        if c is not None and not (isinstance(c, str) and CPU_LIST_RE.match(c)):
            if complete:
                raise SpecError("not a CPU list such as 0-11,24-35", source=where, path=f"cpu_affinity[{i}]", value=c)
            c = None
        cpu.append(c)
    numa = list(entry.get("numa_affinity") or [None] * n)
    for i, v in enumerate(numa):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise SpecError("must be a NUMA node number or null", source=where, path=f"numa_affinity[{i}]", value=v)
    nics, nic_cells = _nic_columns(entry, gpus, where)
    return TopoMatrix(
        gpus=tuple(gpus),
        gpu_cells=tuple(tuple(r) for r in cells),
        nics=tuple(nics),
        nic_cells=tuple(tuple(r) for r in nic_cells),
        cpu_affinity=tuple(cpu),
        numa_affinity=tuple(numa),
        source=where,
    )


def load_published_file(path: str | Path, *, fill_unknown: str | None = None) -> dict[str, TopoMatrix]:
    """Every entry of a published-matrices JSON file (keys starting with ``_`` are notes)."""
    text = read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=str(path)) from None
    if not isinstance(doc, dict):
        raise SpecError("must be a mapping of machine name -> entry", source=str(path))
    return {k: load_published(v, k, fill_unknown=fill_unknown) for k, v in doc.items() if not k.startswith("_")}
