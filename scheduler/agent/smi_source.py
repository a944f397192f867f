"""``nvidia-smi topo -m`` and ``nvidia-smi -q -x``, run with a timeout and parsed.

The command runner is a seam: ``run_command`` runs the binary; ``saved_outputs`` reads
outputs captured earlier (``--smi-topo`` / ``--smi-query``, tests). A missing binary, a
timeout or a failing command is an ``SmiUnavailable`` that says which; malformed output
is the readers' ``SpecError`` naming the command and the line.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import ToposchedError
from models.readers.nvidia_smi import GpuInfo, TopoMatrix, parse_query_xml, parse_topo_matrix

Runner = Callable[[Sequence[str], float], str]
DEFAULT_TIMEOUT_S = 30.0
# What nvidia-smi prints (exit 9) when it finds no working driver.
NO_DRIVER_TEXT = ("couldn't communicate with the nvidia driver", "no devices were found", "driver/library version mismatch")


class SmiUnavailable(ToposchedError):
    """nvidia-smi could not be run or failed; ``no_driver`` when it says the driver is missing."""

    def __init__(self, reason: str, *, missing: bool = False, no_driver: bool = False) -> None:
        self.reason = reason
        self.missing = missing
        self.no_driver = no_driver
        super().__init__(reason)


def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run ``argv`` and return its standard output; failures are ``SmiUnavailable``."""
    cmd = " ".join(argv)
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise SmiUnavailable(f"{argv[0]} not found (is the NVIDIA driver installed and on PATH?)",
                             missing=True) from None
    except PermissionError:
        raise SmiUnavailable(f"{argv[0]} is not executable", missing=True) from None
    except subprocess.TimeoutExpired:
        raise SmiUnavailable(f"`{cmd}` did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        said = (done.stdout + "\n" + done.stderr).strip().splitlines()
        last = said[-1].strip() if said else "no output"
        no_driver = done.returncode == 9 or any(t in last.lower() for t in NO_DRIVER_TEXT)
        raise SmiUnavailable(f"`{cmd}` exited with status {done.returncode}: {last}", no_driver=no_driver)
    return done.stdout


def saved_outputs(topo: str | Path | None = None, query: str | Path | None = None) -> Runner:
    """A runner that answers ``topo -m`` and ``-q -x`` from files captured earlier."""
    files = {"topo": topo, "query": query}

    def run(argv: Sequence[str], timeout_s: float) -> str:
        key = "topo" if "topo" in argv else "query"
        path = files[key]
        if path is None:
            flag = "--smi-topo" if key == "topo" else "--smi-query"
            raise SmiUnavailable(f"no saved output for `{' '.join(argv)}` (give {flag})", missing=True)
        try:
            return Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SmiUnavailable(f"cannot read saved nvidia-smi output {path}: {exc}", missing=True) from None

    return run


@dataclass
class SmiSource:
    """Runs nvidia-smi once per question and keeps the parsed answer."""

    run: Runner = run_command
    binary: str = "nvidia-smi"
    timeout_s: float = DEFAULT_TIMEOUT_S
    # saved outputs ``run`` reads ("topo", "query" -> file): a malformed one is named by its file
    files: Mapping[str, str | Path | None] = field(default_factory=dict)
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    def _source(self, key: str, command: str) -> str:
        """What a reader's error names: the command, and the file its output was saved in."""
        saved = self.files.get(key)
        return f"{saved} ({self.binary} {command})" if saved else f"{self.binary} {command}"

    def _ask(self, key: str, args: Sequence[str]) -> str:
        if key not in self._cache:
            try:
                self._cache[key] = self.run([self.binary, *args], self.timeout_s)
            except SmiUnavailable as exc:
                self._cache[key] = exc
        answer = self._cache[key]
        if isinstance(answer, SmiUnavailable):
            raise answer
        return str(answer)

    def topo_matrix(self) -> TopoMatrix:
        """``nvidia-smi topo -m``, parsed (``SpecError`` naming the line when malformed)."""
        return parse_topo_matrix(self._ask("topo", ["topo", "-m"]), self._source("topo", "topo -m"))

    def query(self) -> list[GpuInfo]:
        """``nvidia-smi -q -x``, parsed: one ``GpuInfo`` per GPU."""
        return parse_query_xml(self._ask("query", ["-q", "-x"]), self._source("query", "-q -x"))

    def pcie_generations(self) -> list[int | None]:
        """Per GPU, the highest PCIe generation GPU and slot support (``max_link_gen`` of ``-q -x``)."""
        self.query()  # parses and checks the XML first
        root = ET.fromstring(self._ask("query", ["-q", "-x"]))
        out: list[int | None] = []
        for gpu in root.findall("gpu"):
            text = (gpu.findtext("pci/pci_gpu_link_info/pcie_gen/max_link_gen") or "").strip()
            out.append(int(text) if text.isdigit() and 1 <= int(text) <= 6 else None)
        return out
