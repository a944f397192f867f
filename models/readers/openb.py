"""Readers for the Alibaba openb GPU cluster trace (cluster-trace-gpu-v2023) CSV files: node lists (the `openb` cluster preset) and pod lists (the fill-up simulator).

Every row is checked; a bad row raises ``TraceRowError`` naming the file and its 1-based
line (the header is line 1). Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from models.errors import SpecError, TraceRowError
from models.spec import MAX_GPUS_PER_NODE, MAX_QUANTITY, is_node_name

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")


@dataclass(frozen=True)
class NodeRow:
    """One node of an openb node list."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


_INTEGER = re.compile(r"-?[0-9]+")


def _int(value: str, column: str, source: str, line: int) -> int:
    text = value.strip()
    if not _INTEGER.fullmatch(text):  # int() would also take "1_000", "+5" and other spellings
        raise TraceRowError(source, line, f"{column}: {text!r} is not an integer")
    number = int(text)
    if number < 0:
        raise TraceRowError(source, line, f"{column}: {number} is negative")
    if number > MAX_QUANTITY:  # as the cluster model allows
        raise TraceRowError(source, line, f"{column}: {text} is too large (at most {MAX_QUANTITY})")
    return number


def _named_rows(reader, columns: tuple[str, ...], kind: str, source: str) -> Iterator[tuple[int, str, list[str]]]:
    """Data rows of ``reader`` as ``(line, name, row)``: not empty, ``len(columns)`` fields, a new name first."""
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            raise TraceRowError(source, line, "empty row")
        if len(row) != len(columns):
            raise TraceRowError(source, line, f"{len(row)} fields; expected {len(columns)} ({','.join(columns)})")
        name = row[0].strip()
        if not name:
            raise TraceRowError(source, line, f"{columns[0]}: empty {kind} name")
        if name in seen:
            raise TraceRowError(source, line, f"{columns[0]}: {kind} {name!r} already listed on line {seen[name]}")
        seen[name] = line
        yield line, name, row


def read_node_list(text: str, source: str) -> list[NodeRow]:
    """Parse an openb node list (CSV with header ``sn,cpu_milli,memory_mib,gpu,model``)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise TraceRowError(source, 1, f"empty file; expected the header {','.join(NODE_COLUMNS)}")
    if tuple(h.strip() for h in header) != NODE_COLUMNS:
        raise TraceRowError(source, 1, f"header is {','.join(header)!r}; expected {','.join(NODE_COLUMNS)}")
    rows: list[NodeRow] = []
    for line, name, row in _named_rows(reader, NODE_COLUMNS, "node", source):
        if not is_node_name(name):
            raise TraceRowError(source, line, f"sn: {name!r} is not a valid Kubernetes node name "
                                              "(lower-case letters, digits, '-' and '.')")
        gpus = _int(row[3], "gpu", source, line)
        if gpus > MAX_GPUS_PER_NODE:
            raise TraceRowError(source, line, f"gpu: {gpus} GPUs on one node; at most {MAX_GPUS_PER_NODE}")
        model = row[4].strip()
        if gpus > 0 and not model:
            raise TraceRowError(source, line, f"model: empty, but the node has {gpus} GPUs")
        rows.append(NodeRow(
            name=name,
            cpu_milli=_int(row[1], "cpu_milli", source, line),
            memory_mib=_int(row[2], "memory_mib", source, line),
            gpus=gpus,
            model=model,
        ))
    return rows


# ------------------------------------------------------------------------------ pod lists

POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
               "creation_time", "deletion_time", "scheduled_time")
POD_COLUMNS_SHORT = POD_COLUMNS[:5]  # the multigpu* variants
GPU_MILLI = 1000
BUNDLED_PODS = {"default": "openb_pod_list_default.csv"}
BUNDLED_NODES = "openb_node_list_gpu_node.csv"


@dataclass(frozen=True)
class PodRow:
    """One pod of an openb pod list. ``gpu_milli`` is per GPU; < 1000 means a shared GPU."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: tuple[str, ...] = ()  # allowed GPU models; empty = any
    qos: str = ""
    pod_phase: str = ""
    creation_time: int | None = None
    deletion_time: int | None = None
    scheduled_time: int | None = None
    line: int = 0  # 1-based line in its file (0 = not from a file, e.g. an inflation clone)

    @property
    def is_shared(self) -> bool:
        return self.num_gpu == 1 and 0 < self.gpu_milli < GPU_MILLI

    @property
    def gpu_milli_total(self) -> int:
        return self.num_gpu * self.gpu_milli

    def clone(self, name: str) -> PodRow:
        """The same request under another name, without the trace's bookkeeping (QoS, phase,
        times, file line): an inflation clone or a pod a variant adds."""
        return PodRow(name=name, cpu_milli=self.cpu_milli, memory_mib=self.memory_mib, num_gpu=self.num_gpu,
                      gpu_milli=self.gpu_milli, gpu_spec=self.gpu_spec)


def _opt_int(value: str, column: str, source: str, line: int) -> int | None:
    return None if not value.strip() else _int(value, column, source, line)


def read_pod_list(text: str, source: str) -> list[PodRow]:
    """Parse an openb pod list: the 11-column form or the 5-column ``multigpu*`` form.

    Checks per row: field count, integers, no negatives, unique names, and GPU fields that
    agree (``gpu_milli`` 1..1000 when ``num_gpu`` > 0, 0 when it is 0, a shared
    ``gpu_milli`` < 1000 only with ``num_gpu`` 1). ``gpu_spec`` is ``|``-separated.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    expected = f"{','.join(POD_COLUMNS)} (or the first 5 of them)"
    if header is None:
        raise TraceRowError(source, 1, f"empty file; expected the header {expected}")
    columns = tuple(h.strip() for h in header)
    if columns not in (POD_COLUMNS, POD_COLUMNS_SHORT):
        raise TraceRowError(source, 1, f"header is {','.join(header)!r}; expected {expected}")
    long = len(columns) == len(POD_COLUMNS)
    rows: list[PodRow] = []
    for line, name, row in _named_rows(reader, columns, "pod", source):
        num_gpu = _int(row[3], "num_gpu", source, line)
        gpu_milli = _int(row[4], "gpu_milli", source, line)
        _check_gpu_fields(num_gpu, gpu_milli, source, line)
        spec: tuple[str, ...] = ()
        extra: dict = {}
        if long:
            spec = tuple(m.strip() for m in row[5].split("|") if m.strip())
            if spec and num_gpu == 0:
                raise TraceRowError(source, line, f"gpu_spec: {row[5]!r} given for a pod without GPUs")
            extra = {
                "qos": row[6].strip(),
                "pod_phase": row[7].strip(),
                "creation_time": _opt_int(row[8], "creation_time", source, line),
                "deletion_time": _opt_int(row[9], "deletion_time", source, line),
                "scheduled_time": _opt_int(row[10], "scheduled_time", source, line),
            }
        rows.append(PodRow(name=name, cpu_milli=_int(row[1], "cpu_milli", source, line),
                           memory_mib=_int(row[2], "memory_mib", source, line), num_gpu=num_gpu,
                           gpu_milli=gpu_milli, gpu_spec=tuple(dict.fromkeys(spec)), line=line, **extra))
    return rows


def _check_gpu_fields(num_gpu: int, gpu_milli: int, source: str, line: int) -> None:
    if num_gpu == 0 and gpu_milli != 0:
        raise TraceRowError(source, line, f"gpu_milli: {gpu_milli} for a pod with num_gpu 0 (expected 0)")
    if num_gpu > 0 and not 1 <= gpu_milli <= GPU_MILLI:
        raise TraceRowError(source, line, f"gpu_milli: {gpu_milli} out of range 1..{GPU_MILLI} (num_gpu {num_gpu})")
    if num_gpu > 1 and gpu_milli != GPU_MILLI:
        raise TraceRowError(source, line, f"gpu_milli: {gpu_milli} < {GPU_MILLI} with num_gpu {num_gpu}; "
                                          "a shared GPU request must ask for exactly 1 GPU")


# ------------------------------------------------------------------------------ files


def bundled_text(filename: str) -> str:
    """A file of the bundled openb data (``models/data/openb``)."""
    from importlib import resources

    return resources.files("models.data").joinpath("openb", filename).read_text()


def read_pod_file(name_or_path: str) -> tuple[list[PodRow], str]:
    """Pods from a CSV path, or the bundled list ``default``; returns (rows, trace name)."""
    if name_or_path in BUNDLED_PODS:
        filename = BUNDLED_PODS[name_or_path]
        return read_pod_list(bundled_text(filename), f"bundled {filename}"), trace_name(filename)
    return read_pod_list(_read(name_or_path), name_or_path), trace_name(name_or_path)


def read_node_file(path: str | None) -> tuple[list[NodeRow], str]:
    """Nodes from a CSV path, or the bundled GPU node list when ``path`` is None."""
    if path is None:
        return read_node_list(bundled_text(BUNDLED_NODES), f"bundled {BUNDLED_NODES}"), BUNDLED_NODES
    return read_node_list(_read(path), path), path


def trace_name(path: str) -> str:
    """``openb_pod_list_gpushare40`` for ``.../openb_pod_list_gpushare40.csv``."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".csv") else base


def _read(path: str) -> str:
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise SpecError("no such file", source=path, fix="give the path of an openb CSV file")
    try:
        return p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read the file: {e}", source=path) from None
