"""GPU facts from NVML, each call allowed to fail.

``GpuSource`` is what discovery asks of a node's GPUs. ``NvmlSource`` answers it through
a pynvml-like library (``nvidia-ml-py`` by default). Every NVML call goes through
``NvmlSource._call``: an ``NVMLError`` (NotSupported, FunctionNotFound, Unknown, ...) or
the ``TypeError`` / ``AttributeError`` of an older or newer ``nvidia-ml-py`` becomes
``None`` plus a note naming the call, so a guest that answers NotSupported for the NUMA id
or the NVLink state degrades to the nvidia-smi fallback instead of crashing.

``ReplaySource`` is an ``NvmlSource`` over ``RecordedNvml``, a stand-in for the pynvml
module that answers from a JSON record (format in docs/agent.md): DGX answers built from
facts, or what a real machine answered (``nvml-torch.json`` of the shared fixtures).
"""

from __future__ import annotations

import ctypes
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from models.errors import SpecError, ToposchedError

# NVML return codes we name in notes (nvml.h).
NVML_ERROR_NAMES = {
    1: "Uninitialized", 2: "InvalidArgument", 3: "NotSupported", 4: "NoPermission", 6: "NotFound",
    9: "DriverNotLoaded", 10: "Timeout", 12: "LibraryNotFound", 13: "FunctionNotFound", 15: "GpuIsLost",
    17: "OperatingSystem", 18: "LibRmVersionMismatch", 999: "Unknown",
}
INVALID_ARGUMENT, NOT_SUPPORTED, FUNCTION_NOT_FOUND = 2, 3, 13
# nvmlInit failures that mean "no usable driver here" rather than a bug.
NO_DRIVER_CODES = {9: "the NVIDIA driver is not loaded", 12: "libnvidia-ml.so is not installed",
                   18: "the driver and its NVML library disagree (reboot after a driver upgrade?)"}
# nvmlDeviceGetTopologyCommonAncestor levels -> nvidia-smi words.
TOPOLOGY_LEVELS = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
NVLINK_DEVICE_GPU, NVLINK_DEVICE_SWITCH = 0, 2
FABRIC_STATE_COMPLETED = 3
DEFAULT_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS of older nvidia-ml-py (36 in 13.x)
REPLAY_MAX_LINKS = 36
AFFINITY_WORDS = 4  # 64-bit words of the NUMA node mask asked for (256 nodes)


class NvmlUnavailable(ToposchedError):
    """NVML cannot be used on this machine (no library, no driver); ``reason`` says why."""

    def __init__(self, reason: str, *, no_driver: bool = False) -> None:
        self.reason = reason
        self.no_driver = no_driver
        super().__init__(f"NVML unavailable: {reason}")


@dataclass(frozen=True)
class NvLinkEnd:
    """One active NVLink of a GPU: its number and what is at the other end."""

    link: int
    remote_bus_id: str | None  # normalized PCI bus id, None when NVML cannot tell
    remote_is_switch: bool | None  # None when NVML cannot tell (decided by bus id then)


@dataclass(frozen=True)
class DeviceFacts:
    """What NVML says about one GPU; None wherever NVML had no answer."""

    index: int
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total_mib: int | None = None
    numa_node: int | None = None  # CPU-side NUMA node (memory affinity)
    gpu_numa_id: int | None = None  # the GPU's own memory as a NUMA node (coherent platforms)
    mig_mode: str | None = None  # "Enabled" / "Disabled"
    nvlinks: tuple[NvLinkEnd, ...] | None = None  # active links; None = NVLink state unknown
    fabric_clique: str | None = None  # "<ClusterUUID>.<CliqueId>" as GFD labels it
    max_pcie_gen: int | None = None


class GpuSource(Protocol):
    """The per-GPU questions discovery asks; every answer may be None (unknown)."""

    kind: str

    def open(self) -> None:
        """Start talking to the driver; raises ``NvmlUnavailable``."""

    def close(self) -> None: ...

    def notes(self) -> list[str]:
        """One line per call that had no answer, naming the call, the error and the GPUs."""

    def driver_version(self) -> str | None: ...

    def device_count(self) -> int: ...

    def device(self, index: int) -> DeviceFacts: ...

    def pcie_relation(self, a: int, b: int) -> str | None:
        """PCIe relation of two GPUs in nvidia-smi words (PIX ... SYS), None if unknown."""


def normalize_bus_id(value: Any) -> str | None:
    """``00000000:18:00.0`` / ``0000:18:00.0`` / bytes -> ``0000:18:00.0`` (lower case)."""
    text = value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\s*(?:([0-9A-Fa-f]{1,8}):)?([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])\s*", text)
    if not m:
        return None
    domain = int(m.group(1) or "0", 16)
    return f"{domain:04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}.{m.group(4)}"


def index_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _targets_text(targets: list[str]) -> str:
    """``["GPU 0", "GPU 1"]`` -> ``GPUs 0-1``; pairs ``GPU 0/1`` are counted."""
    single = [int(t[4:]) for t in targets if re.fullmatch(r"GPU \d+", t)]
    pairs = [t for t in targets if re.fullmatch(r"GPU \d+/\d+", t)]
    parts = []
    if single:
        parts.append(f"GPU {single[0]}" if len(single) == 1 else f"GPUs {index_ranges(single)}")
    if pairs:
        parts.append(pairs[0] if len(pairs) == 1 else f"{len(pairs)} GPU pairs")
    parts += [t for t in targets if t not in pairs and not re.fullmatch(r"GPU \d+", t)]
    return ", ".join(parts)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray):
        value = value.decode(errors="replace")
    return value.strip() or None if isinstance(value, str) else None


def _nvml_error(exc: BaseException) -> str | None:
    """The NVML error name of ``exc`` (None when it is no NVML error)."""
    code = getattr(exc, "value", None)
    if type(exc).__name__.startswith("NVMLError") and isinstance(code, int):
        return NVML_ERROR_NAMES.get(code, f"NVML error {code}")
    return None


class _Failed:
    """Marker for a call that had no answer."""

    def __init__(self, error: str, code: int | None) -> None:
        self.error = error
        self.code = code


class FabricInfo(ctypes.Structure):
    """``nvmlGpuFabricInfo_v2_t``: the layout ``nvmlDeviceGetGpuFabricInfoV`` fills."""

    _fields_ = [("version", ctypes.c_uint), ("clusterUuid", ctypes.c_uint8 * 16), ("status", ctypes.c_uint),
                ("cliqueId", ctypes.c_uint32), ("state", ctypes.c_uint), ("healthMask", ctypes.c_uint32)]


FABRIC_INFO_V2 = ctypes.sizeof(FabricInfo) | (2 << 24)  # NVML_STRUCT_VERSION(GpuFabricInfo, 2)


@dataclass
class NvmlSource:
    """A ``GpuSource`` over a pynvml-like library (``nvidia-ml-py``'s ``pynvml`` by default)."""

    lib: Any = None
    kind: str = "nvml"
    record: bool = False  # write down every answer (``recording``) for --record
    _failures: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)
    _handles: dict[int, Any] = field(default_factory=dict, repr=False)
    _facts: dict[int, DeviceFacts] = field(default_factory=dict, repr=False)
    _open: bool = field(default=False, repr=False)

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Import pynvml (unless a library was given) and initialise NVML."""
        if self.lib is None:
            try:
                import pynvml  # nvidia-ml-py: the `agent` extra
            except ImportError:
                raise NvmlUnavailable("the Python package nvidia-ml-py is not installed "
                                      "(pip install 'toposched[agent]')") from None
            self.lib = pynvml
        if self.record and not isinstance(self.lib, RecordingNvml):
            self.lib = RecordingNvml(self.lib)
        try:
            self.lib.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - classified below, never a traceback
            name = _nvml_error(exc)
            if name is None and not isinstance(exc, OSError):
                raise
            code = getattr(exc, "value", None)
            reason = NO_DRIVER_CODES.get(code, f"nvmlInit failed: {name or exc}")
            raise NvmlUnavailable(reason, no_driver=code in NO_DRIVER_CODES or isinstance(exc, OSError)) from None
        self._open = True

    def close(self) -> None:
        if self._open:
            self._call("nvmlShutdown", None, self.lib.nvmlShutdown)
            self._open = False

    def recording(self) -> dict[str, Any] | None:
        """What NVML answered so far, as a replayable record (only with ``record=True``)."""
        return self.lib.doc if isinstance(self.lib, RecordingNvml) else None

    def notes(self) -> list[str]:
        out = []
        for (call, error), targets in self._failures.items():
            where = f" ({_targets_text(targets)})" if targets else ""
            out.append(f"NVML {call}: {error}{where}")
        return out

    # -- the wrapper every call goes through ---------------------------------------------

    def _try(self, call: str, target: str | None, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """``fn(*args)``, or ``_Failed`` for an NVML error or an API mismatch (noted unless target is None)."""
        if fn is None:
            failed = _Failed("FunctionNotFound (not in this nvidia-ml-py)", FUNCTION_NOT_FOUND)
        else:
            try:
                return fn(*args)
            except (TypeError, AttributeError) as exc:  # nvidia-ml-py API drift between releases
                failed = _Failed(f"{type(exc).__name__}: {exc}", None)
            except Exception as exc:
                name = _nvml_error(exc)
                if name is None:
                    raise
                failed = _Failed(name, getattr(exc, "value", None))
        if target is not None:
            self._note(call, failed.error, target)
        return failed

    def _note(self, call: str, error: str, target: str) -> None:
        targets = self._failures.setdefault((call, error), [])
        if target and target not in targets:
            targets.append(target)

    def _call(self, call: str, target: str | None, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """Like ``_try`` but a failure is ``None``."""
        value = self._try(call, target, fn, *args)
        return None if isinstance(value, _Failed) else value

    def _fn(self, name: str) -> Callable[..., Any] | None:
        return getattr(self.lib, name, None)

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            fn = self._fn("nvmlDeviceGetHandleByIndex")
            self._handles[index] = self._call("nvmlDeviceGetHandleByIndex", f"GPU {index}", fn, index)
        return self._handles[index]

    # -- the questions ---------------------------------------------------------------------

    def driver_version(self) -> str | None:
        return _text(self._call("nvmlSystemGetDriverVersion", "", self._fn("nvmlSystemGetDriverVersion")))

    def device_count(self) -> int:
        """Number of GPUs NVML sees; a failure here means NVML is of no use."""
        value = self._try("nvmlDeviceGetCount", None, self._fn("nvmlDeviceGetCount"))
        if isinstance(value, _Failed):
            raise NvmlUnavailable(f"nvmlDeviceGetCount failed: {value.error}")
        return int(value)

    def device(self, index: int) -> DeviceFacts:
        if index in self._facts:
            return self._facts[index]
        h = self._handle(index)
        gpu = f"GPU {index}"
        if h is None:
            facts = DeviceFacts(index=index)
        else:
            pci = self._call("nvmlDeviceGetPciInfo", gpu, self._fn("nvmlDeviceGetPciInfo"), h)
            memory = self._call("nvmlDeviceGetMemoryInfo", gpu, self._fn("nvmlDeviceGetMemoryInfo"), h)
            total = getattr(memory, "total", None)
            mig = self._call("nvmlDeviceGetMigMode", gpu, self._fn("nvmlDeviceGetMigMode"), h)
            gpu_numa = self._call("nvmlDeviceGetNumaNodeId", gpu, self._fn("nvmlDeviceGetNumaNodeId"), h)
            gen = self._call("nvmlDeviceGetMaxPcieLinkGeneration", gpu,
                             self._fn("nvmlDeviceGetMaxPcieLinkGeneration"), h)
            facts = DeviceFacts(
                index=index,
                name=_text(self._call("nvmlDeviceGetName", gpu, self._fn("nvmlDeviceGetName"), h)),
                uuid=_text(self._call("nvmlDeviceGetUUID", gpu, self._fn("nvmlDeviceGetUUID"), h)),
                pci_bus_id=normalize_bus_id(getattr(pci, "busId", None)),
                memory_total_mib=int(total) // (1024 * 1024) if isinstance(total, int) else None,
                numa_node=self._numa(h, gpu),
                gpu_numa_id=gpu_numa if isinstance(gpu_numa, int) and gpu_numa >= 0 else None,
                mig_mode=("Enabled" if mig[0] else "Disabled") if isinstance(mig, list | tuple) and mig else None,
                nvlinks=self._nvlinks(h, gpu),
                fabric_clique=self._fabric(h, gpu),
                max_pcie_gen=gen if isinstance(gen, int) and 1 <= gen <= 6 else None,
            )
        self._facts[index] = facts
        return facts

    def pcie_relation(self, a: int, b: int) -> str | None:
        ha, hb = self._handle(a), self._handle(b)
        if ha is None or hb is None:
            return None
        level = self._call("nvmlDeviceGetTopologyCommonAncestor", f"GPU {a}/{b}",
                           self._fn("nvmlDeviceGetTopologyCommonAncestor"), ha, hb)
        return TOPOLOGY_LEVELS.get(level) if isinstance(level, int) else None

    def _numa(self, h: Any, gpu: str) -> int | None:
        """The NUMA node whose memory is nearest the GPU; None unless exactly one."""
        words = self._call("nvmlDeviceGetMemoryAffinity", gpu, self._fn("nvmlDeviceGetMemoryAffinity"), h,
                           AFFINITY_WORDS, getattr(self.lib, "NVML_AFFINITY_SCOPE_NODE", 0))
        if words is None:
            return None
        nodes = [w * 64 + bit for w, word in enumerate(list(words)) for bit in range(64) if int(word) >> bit & 1]
        if len(nodes) != 1:
            what = "no NUMA node" if not nodes else f"NUMA nodes {nodes}"
            self._note("nvmlDeviceGetMemoryAffinity", f"names {what}", gpu)
            return None
        return nodes[0]

    def _nvlinks(self, h: Any, gpu: str) -> tuple[NvLinkEnd, ...] | None:
        """Active NVLinks; None when the first link's state is unknown (no NVLink answer at all)."""
        ends = []
        for link in range(int(getattr(self.lib, "NVML_NVLINK_MAX_LINKS", DEFAULT_MAX_LINKS))):
            # past the GPU's last link NVML answers InvalidArgument (or NotSupported): the end, not news
            quiet = None if link > 0 else gpu
            state = self._try("nvmlDeviceGetNvLinkState", quiet, self._fn("nvmlDeviceGetNvLinkState"), h, link)
            if isinstance(state, _Failed):
                if link == 0:
                    return None
                if state.code not in (INVALID_ARGUMENT, NOT_SUPPORTED):
                    self._note("nvmlDeviceGetNvLinkState", f"{state.error} at link {link}", gpu)
                break
            if not state:
                continue
            kind = self._call("nvmlDeviceGetNvLinkRemoteDeviceType", gpu,
                              self._fn("nvmlDeviceGetNvLinkRemoteDeviceType"), h, link)
            pci = self._call("nvmlDeviceGetNvLinkRemotePciInfo", gpu,
                             self._fn("nvmlDeviceGetNvLinkRemotePciInfo"), h, link)
            ends.append(NvLinkEnd(
                link=link,
                remote_bus_id=normalize_bus_id(getattr(pci, "busId", None)),
                remote_is_switch=None if not isinstance(kind, int) or kind not in (NVLINK_DEVICE_GPU, NVLINK_DEVICE_SWITCH)
                else kind == NVLINK_DEVICE_SWITCH,
            ))
        return tuple(ends)

    def _fabric(self, h: Any, gpu: str) -> str | None:
        """The NVLink fabric clique, ``<ClusterUUID>.<CliqueId>``, once the fabric manager has registered the GPU."""
        info = FabricInfo(version=FABRIC_INFO_V2)
        done = self._try("nvmlDeviceGetGpuFabricInfoV", gpu, self._fn("nvmlDeviceGetGpuFabricInfoV"), h,
                         ctypes.byref(info))
        if isinstance(done, _Failed) or info.state != FABRIC_STATE_COMPLETED or info.status != 0:
            return None
        raw = bytes(info.clusterUuid)
        if not any(raw):
            return None
        return f"{uuid.UUID(bytes=raw)}.{info.cliqueId}"


# --------------------------------------------------------------------------- replay


class _ReplayedError(Exception):
    """An NVML error played back from a record (named like pynvml's ``NVMLError_*``)."""

    def __init__(self, value: int) -> None:
        self.value = value
        super().__init__(NVML_ERROR_NAMES.get(value, f"NVML error {value}"))


_ReplayedError.__name__ = "NVMLError_Replayed"
_ERR_RE = re.compile(r"^(?:ERR\s+)?(?:NVMLError_\w*\((\d+)\)|(TypeError|AttributeError)\((.*)\))$", re.DOTALL)


class RecordedNvml:
    """A stand-in for the pynvml module that answers from a record (see docs/agent.md).

    A value written ``"ERR NVMLError_NotSupported(3)"`` is raised as that NVML error; a
    key that is absent answers FunctionNotFound, as an older driver would; a link not
    listed under ``nvlinks`` answers InvalidArgument (past the GPU's last link).
    """

    NVML_AFFINITY_SCOPE_NODE = 0

    def __init__(self, doc: dict[str, Any], source: str) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("gpus"), list):
            raise SpecError("an NVML record needs a `gpus` list", source=source, fix="see docs/agent.md")
        self.doc = doc
        self.source = source
        self.NVML_NVLINK_MAX_LINKS = REPLAY_MAX_LINKS
        self.calls: list[str] = []

    def _value(self, value: Any, path: str) -> Any:
        if isinstance(value, str) and (value.startswith("ERR") or value.startswith("NVMLError_")):
            m = _ERR_RE.match(value.strip())
            if not m:
                raise SpecError("not an error this replay knows (NVMLError_<Name>(<code>), TypeError(...), "
                                "AttributeError(...))", source=self.source, path=path, value=value)
            if m.group(1):
                raise _ReplayedError(int(m.group(1)))
            raise (TypeError if m.group(2) == "TypeError" else AttributeError)(m.group(3))
        return value

    def _top(self, key: str) -> Any:
        self.calls.append(key)
        if key not in self.doc:
            raise _ReplayedError(FUNCTION_NOT_FOUND)
        return self._value(self.doc[key], key)

    def _gpu(self, handle: int, key: str) -> Any:
        self.calls.append(f"{key}[{handle}]")
        entry = self.doc["gpus"][handle]
        if not isinstance(entry, dict):
            raise SpecError("must be a mapping", source=self.source, path=f"gpus[{handle}]")
        if key not in entry:
            raise _ReplayedError(FUNCTION_NOT_FOUND)
        return self._value(entry[key], f"gpus[{handle}].{key}")

    def _link(self, handle: int, link: int) -> dict[str, Any]:
        links = self._gpu(handle, "nvlinks")
        for item in links if isinstance(links, list) else []:
            if isinstance(item, dict) and item.get("link") == link:
                if "err" in item:
                    self._value(item["err"] if str(item["err"]).startswith(("ERR", "NVMLError_")) else
                                f"ERR {item['err']}", f"gpus[{handle}].nvlinks[{link}].err")
                return item
        raise _ReplayedError(INVALID_ARGUMENT)

    # the pynvml functions NvmlSource calls
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if "init" in self.doc:
            self._top("init")

    def nvmlShutdown(self) -> None:  # noqa: N802
        return None

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return self._top("driver")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        if "device_count" in self.doc:
            return self._top("device_count")
        return len(self.doc["gpus"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if not 0 <= index < len(self.doc["gpus"]):
            raise _ReplayedError(INVALID_ARGUMENT)
        entry = self.doc["gpus"][index]
        if isinstance(entry, dict) and "handle" in entry:  # a recorded failure (e.g. GpuIsLost)
            self._value(entry["handle"], f"gpus[{index}].handle")
        return index

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return self._gpu(h, "name")

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return self._gpu(h, "uuid")

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:  # noqa: N802
        return _Obj(busId=self._gpu(h, "pci").encode())

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:  # noqa: N802
        return _Obj(total=self._gpu(h, "memory_total"))

    def nvmlDeviceGetNumaNodeId(self, h: int) -> int:  # noqa: N802
        return self._gpu(h, "numa")

    def nvmlDeviceGetMemoryAffinity(self, h: int, words: int, scope: int) -> list[int]:  # noqa: N802
        mask = list(self._gpu(h, "memory_affinity"))
        return (mask + [0] * words)[:words]

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:  # noqa: N802
        return self._gpu(h, "mig_mode")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:  # noqa: N802
        return self._gpu(h, "max_pcie_gen")

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:  # noqa: N802
        return int(self._link(h, link).get("state", 0))

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h: int, link: int) -> int:  # noqa: N802
        item = self._link(h, link)
        if "remote_type" not in item:
            raise _ReplayedError(FUNCTION_NOT_FOUND)
        return self._value(item["remote_type"], f"gpus[{h}].nvlinks[{link}].remote_type")

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: int, link: int) -> Any:  # noqa: N802
        item = self._link(h, link)
        if "remote_pci" not in item:
            raise _ReplayedError(NOT_SUPPORTED)
        return _Obj(busId=str(self._value(item["remote_pci"], f"gpus[{h}].nvlinks[{link}].remote_pci")).encode())

    def nvmlDeviceGetTopologyCommonAncestor(self, a: int, b: int) -> int:  # noqa: N802
        matrix = self._top("topology")
        try:
            cell = matrix[a][b]
        except (IndexError, KeyError, TypeError):
            raise SpecError("needs one row and column per GPU", source=self.source, path="topology") from None
        return self._value(cell, f"topology[{a}][{b}]")

    def nvmlDeviceGetGpuFabricInfoV(self, h: int, ref: Any) -> int:  # noqa: N802
        fabric = self._gpu(h, "fabric")
        info = ref._obj  # ctypes.byref(FabricInfo) as NvmlSource passes it
        info.state = int(fabric.get("state", FABRIC_STATE_COMPLETED))
        info.status = int(fabric.get("status", 0))
        info.cliqueId = int(fabric["clique_id"])
        info.clusterUuid[:] = list(uuid.UUID(fabric["cluster_uuid"]).bytes)
        return 0


class _Obj:
    """Attribute bag standing in for a ctypes struct of pynvml."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class ReplaySource(NvmlSource):
    """An ``NvmlSource`` playing back a JSON record of NVML answers."""

    def __init__(self, record: dict[str, Any], source: str = "NVML record") -> None:
        super().__init__(lib=RecordedNvml(record, source), kind=f"replay:{Path(source).name}")

    @classmethod
    def from_file(cls, path: str | Path) -> ReplaySource:
        try:
            doc = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SpecError("file not found", source=str(path), fix="check the path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read file: {exc}", source=str(path)) from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                            source=str(path)) from None
        return cls(doc, str(path))



# --------------------------------------------------------------------------- record


def _error_text(exc: BaseException) -> str:
    """An exception as a record writes it: ``ERR NVMLError_<Name>(<code>)`` or ``ERR TypeError(...)``."""
    code = getattr(exc, "value", None)
    if isinstance(code, int) and _nvml_error(exc) is not None:
        return f"ERR NVMLError_{NVML_ERROR_NAMES.get(code, 'Unknown')}({code})"
    return f"ERR {type(exc).__name__}({exc})"


class RecordingNvml:
    """A pynvml-like library that passes every call to the real one and writes down the answers.

    The record (``doc``) has the format ``RecordedNvml`` plays back (docs/agent.md), so what a
    node answered can be replayed elsewhere (``toposched discover --record FILE``, then
    ``--replay FILE``). A function the real library lacks stays absent here too, which replays
    as FunctionNotFound; an error is written down and raised again.
    """

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.doc: dict[str, Any] = {"gpus": []}
        self._index: dict[int, int] = {}  # id(handle) -> GPU index

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.lib, name)  # AttributeError when the library lacks it, as NvmlSource expects
        if not callable(real) or not name.startswith("nvml"):
            return real
        store = getattr(self, f"_store_{name}", None)
        if store is None:
            return real

        def call(*args: Any) -> Any:
            try:
                value = real(*args)
            except Exception as exc:
                store(args, None, _error_text(exc))
                raise
            store(args, value, None)
            return value

        return call

    # where each answer goes: value when the call returned, error (record text) when it raised

    def _gpu(self, handle: Any) -> dict[str, Any]:
        return self.doc["gpus"][self._index[id(handle)]]

    def _put(self, entry: dict[str, Any], key: str, value: Any, error: str | None) -> None:
        entry[key] = error if error is not None else value

    def _store_nvmlInit(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802 - pynvml's names
        if error is not None:
            self.doc["init"] = error

    def _store_nvmlSystemGetDriverVersion(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self.doc, "driver", _text(value), error)

    def _store_nvmlDeviceGetCount(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self.doc, "device_count", value, error)

    def _store_nvmlDeviceGetHandleByIndex(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        index = int(args[0])
        gpus = self.doc["gpus"]
        while len(gpus) <= index:
            gpus.append({"index": len(gpus)})
        if error is not None:
            gpus[index]["handle"] = error
        else:
            self._index[id(value)] = index

    def _store_nvmlDeviceGetName(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "name", _text(value), error)

    def _store_nvmlDeviceGetUUID(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "uuid", _text(value), error)

    def _store_nvmlDeviceGetPciInfo(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "pci", _text(getattr(value, "busId", None)), error)

    def _store_nvmlDeviceGetMemoryInfo(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "memory_total", getattr(value, "total", None), error)

    def _store_nvmlDeviceGetNumaNodeId(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "numa", value, error)

    def _store_nvmlDeviceGetMemoryAffinity(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "memory_affinity", None if value is None else [int(w) for w in value], error)

    def _store_nvmlDeviceGetMigMode(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "mig_mode", None if value is None else [int(m) for m in value], error)

    def _store_nvmlDeviceGetMaxPcieLinkGeneration(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._gpu(args[0]), "max_pcie_gen", value, error)

    def _link(self, handle: Any, link: int) -> dict[str, Any]:
        links = self._gpu(handle).setdefault("nvlinks", [])
        for item in links:
            if item["link"] == link:
                return item
        item = {"link": link}
        links.append(item)
        return item

    def _store_nvmlDeviceGetNvLinkState(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        item = self._link(args[0], int(args[1]))
        if error is not None:
            item["err"] = error
        else:
            item["state"] = int(value)

    def _store_nvmlDeviceGetNvLinkRemoteDeviceType(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._link(args[0], int(args[1])), "remote_type", value, error)

    def _store_nvmlDeviceGetNvLinkRemotePciInfo(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        self._put(self._link(args[0], int(args[1])), "remote_pci", _text(getattr(value, "busId", None)), error)

    def _store_nvmlDeviceGetTopologyCommonAncestor(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        a, b = self._index[id(args[0])], self._index[id(args[1])]
        n = max(len(self.doc["gpus"]), a + 1, b + 1)
        matrix = self.doc.setdefault("topology", [])
        for row in matrix:
            row.extend([None] * (n - len(row)))
        while len(matrix) < n:
            matrix.append([None] * n)
        matrix[a][b] = error if error is not None else int(value)

    def _store_nvmlDeviceGetGpuFabricInfoV(self, args: tuple, value: Any, error: str | None) -> None:  # noqa: N802
        if error is not None:
            self._gpu(args[0])["fabric"] = error
            return
        info = args[1]._obj  # ctypes.byref(FabricInfo), as NvmlSource passes it
        self._gpu(args[0])["fabric"] = {"cluster_uuid": str(uuid.UUID(bytes=bytes(info.clusterUuid))),
                                        "clique_id": int(info.cliqueId), "state": int(info.state),
                                        "status": int(info.status)}
