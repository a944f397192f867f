"""Replays of a real H200 node (tests/fixtures/real-gpu/): discovery gives what the machine printed."""

from __future__ import annotations

import json

from models.readers.nvidia_smi import parse_query_xml, parse_topo_matrix
from scheduler.cli import main
from tests.paths import REPO_ROOT

REAL = REPO_ROOT / "tests" / "fixtures" / "real-gpu"


def test_replaying_the_record_discovers_what_the_node_printed(sysfs, capsys):
    """NVML record + saved nvidia-smi output, replayed here, give the machine's own `discover --json` (bar bandwidth)."""
    status = main(["discover", "--json", "--replay", str(REAL / "nvml-record.json"),
                   "--smi-topo", str(REAL / "nvidia-smi-topo.txt"), "--smi-query", str(REAL / "nvidia-smi-q.xml"),
                   "--sys-root", str(sysfs)])
    out, _ = capsys.readouterr()
    assert status == 0
    here = json.loads(out)
    there = json.loads((REAL / "discover.json").read_text())
    there.pop("bandwidth")
    here["source"] = here["source"].replace("replay:nvml-record.json", "nvml")  # the only word that names the source
    assert here == there


def test_the_measurement_on_the_real_gpu_is_plausible():
    """The numbers --measure printed there: one GPU, no P2P pairs, PCIe Gen5-class host copies, HBM-class on-device."""
    bw = json.loads((REAL / "discover.json").read_text())["bandwidth"]
    assert bw["unit"] == "Gbit/s" and bw["elapsed_s"] < bw["budget_s"] and not bw["notes"]
    assert bw["p2p_gbps"] == [[None]]
    assert 200 < bw["h2d_gbps"][0] < 512 and 200 < bw["d2h_gbps"][0] < 512  # x16 Gen5 is 512 Gbit/s raw
    assert bw["d2d_gbps"][0] > 10_000


def test_the_saved_nvidia_smi_output_parses():
    gpus = parse_query_xml((REAL / "nvidia-smi-q.xml").read_text(), "nvidia-smi -q -x")
    assert [(g.product_name, g.memory_total_mib, g.pci_bus_id) for g in gpus] == [
        ("NVIDIA H200", 143771, "00000000:00:06.0")]
    matrix = parse_topo_matrix((REAL / "nvidia-smi-topo.txt").read_text(), "nvidia-smi topo -m")
    assert matrix.gpus == ("GPU0",) and matrix.gpu_cells == (("X",),)
