"""Replays of real GPU nodes (tests/fixtures/real-gpu/<machine>/): discovery gives what each machine printed."""

from __future__ import annotations

import json

import pytest

from models.readers.nvidia_smi import parse_query_xml, parse_topo_matrix
from scheduler.cli import main
from tests.paths import REPO_ROOT

REAL = REPO_ROOT / "tests" / "fixtures" / "real-gpu"

# Each captured machine and what its own nvidia-smi -q -x said about the GPU.
MACHINES = {
    "h200-x1": ("NVIDIA H200", 143771, "00000000:00:06.0"),
    "h100-x1": ("NVIDIA H100 80GB HBM3", 81559, "00000000:00:06.0"),
}


def test_every_captured_machine_is_checked():
    """A folder added by capture.sh without an entry here would never be replayed."""
    assert sorted(p.name for p in REAL.iterdir() if p.is_dir()) == sorted(MACHINES)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_replaying_the_record_discovers_what_the_node_printed(machine, sysfs, capsys):
    """NVML record + saved nvidia-smi output, replayed here, give the machine's own `discover --json` (bar bandwidth)."""
    folder = REAL / machine
    status = main(["discover", "--json", "--replay", str(folder / "nvml-record.json"),
                   "--smi-topo", str(folder / "nvidia-smi-topo.txt"), "--smi-query", str(folder / "nvidia-smi-q.xml"),
                   "--sys-root", str(sysfs)])
    out, _ = capsys.readouterr()
    assert status == 0
    here = json.loads(out)
    there = json.loads((folder / "discover.json").read_text())
    there.pop("bandwidth")
    here["source"] = here["source"].replace("replay:nvml-record.json", "nvml")  # the only word that names the source
    assert here == there


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_measurement_on_the_real_gpu_is_plausible(machine):
    """The numbers --measure printed there: one GPU, no P2P pairs, PCIe Gen5-class host copies, HBM-class on-device."""
    bw = json.loads((REAL / machine / "discover.json").read_text())["bandwidth"]
    assert bw["unit"] == "Gbit/s" and bw["elapsed_s"] < bw["budget_s"] and not bw["notes"]
    assert bw["p2p_gbps"] == [[None]]
    assert 200 < bw["h2d_gbps"][0] < 512 and 200 < bw["d2h_gbps"][0] < 512  # x16 Gen5 is 512 Gbit/s raw
    assert bw["d2d_gbps"][0] > 10_000


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_saved_nvidia_smi_output_parses(machine):
    folder = REAL / machine
    gpus = parse_query_xml((folder / "nvidia-smi-q.xml").read_text(), "nvidia-smi -q -x")
    assert [(g.product_name, g.memory_total_mib, g.pci_bus_id) for g in gpus] == [MACHINES[machine]]
    matrix = parse_topo_matrix((folder / "nvidia-smi-topo.txt").read_text(), "nvidia-smi topo -m")
    assert matrix.gpus == ("GPU0",) and matrix.gpu_cells == (("X",),)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_machine_ran_every_step(machine):
    """capture.sh records each step's exit status; a fixture from a failed run would test nothing real."""
    text = (REAL / machine / "machine.txt").read_text()
    for step in ("discover --json --measure", "discover --measure", "pytest tests/agent"):
        assert f"{step}: exit 0" in text
