"""Helpers for the agent tests: recorded NVML answers, nvidia-smi outputs, a fake sysfs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.readers.nvidia_smi import render_topo_matrix
from models.readers.published import load_published
from scheduler.agent.nvml_source import ReplaySource
from scheduler.agent.smi_source import SmiSource, SmiUnavailable
from tests.paths import REPO_ROOT, shared_or_skip

RECORDS = REPO_ROOT / "tests" / "fixtures" / "nvml"
H200 = "fixtures/nvidia-smi/h200-x1"
OBSERVED = "data/gpu-topologies/nvidia_smi_topo_observed.json"


def record(name: str) -> dict[str, Any]:
    """A recorded NVML answer set from tests/fixtures/nvml/ (a fresh copy: tests may edit it)."""
    return json.loads((RECORDS / f"{name}.json").read_text())


def replay(name_or_doc: str | dict[str, Any]) -> ReplaySource:
    doc = record(name_or_doc) if isinstance(name_or_doc, str) else name_or_doc
    return ReplaySource(doc, "test record")


def h200_record() -> dict[str, Any]:
    """What nvidia-ml-py answered on a real H200 guest (shared fixture)."""
    return json.loads((shared_or_skip(H200) / "nvml-torch.json").read_text())


def h200_topo_text() -> str:
    """The `nvidia-smi topo -m` section of the real H200 node report (ANSI escapes kept)."""
    report = (shared_or_skip(H200) / "node-report.txt").read_text()
    return report.split("== topo -m\n", 1)[1].split("== topo -p2p r", 1)[0]


def h200_query_xml() -> str:
    return (shared_or_skip(H200) / "nvidia-smi-q.xml").read_text()


def published_topo_text(entry: str) -> str:
    """A published `topo -m` matrix (shared data), written back as nvidia-smi prints it."""
    doc = json.loads(shared_or_skip(OBSERVED).read_text())
    return render_topo_matrix(load_published(doc[entry], entry))


def smi(topo: str | None = None, query: str | None = None, calls: list[Sequence[str]] | None = None) -> SmiSource:
    """An SmiSource answering from texts; None answers as a missing binary."""

    def run(argv: Sequence[str], timeout_s: float) -> str:
        if calls is not None:
            calls.append(list(argv))
        text = topo if "topo" in argv else query
        if text is None:
            raise SmiUnavailable("nvidia-smi not found", missing=True)
        return text

    return SmiSource(run=run)


def fake_sysfs(root: Path, gpus: int = 0, nic_rates: dict[str, str] | None = None) -> Path:
    """A sysfs tree with ``gpus`` NVIDIA GPUs (and an Intel NIC) on the PCI bus and RDMA port rates."""
    devices = root / "bus" / "pci" / "devices"
    devices.mkdir(parents=True, exist_ok=True)
    entries = [(f"0000:{0x18 + i:02x}:00.0", "0x10de", "0x030200") for i in range(gpus)]
    entries += [("0000:00:1f.6", "0x8086", "0x020000"), ("0000:05:00.0", "0x10de", "0x068000")]  # NIC, NVSwitch
    for name, vendor, cls in entries:
        (devices / name).mkdir()
        (devices / name / "vendor").write_text(vendor + "\n")
        (devices / name / "class").write_text(cls + "\n")
    for nic, rate in (nic_rates or {}).items():
        port = root / "class" / "infiniband" / nic / "ports" / "1"
        port.mkdir(parents=True)
        (port / "rate").write_text(rate + "\n")
    return root
