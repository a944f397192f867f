"""Running nvidia-smi: a missing binary, a failing driver and a hang are clear errors; output is parsed once."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from scheduler.agent.smi_source import SmiSource, SmiUnavailable, run_command, saved_outputs
from tests.agent.records import h200_query_xml, h200_topo_text


def fake_binary(tmp_path: Path, body: str) -> str:
    """An executable Python script standing in for nvidia-smi."""
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_missing_binary_says_so(tmp_path):
    with pytest.raises(SmiUnavailable, match="not found") as err:
        run_command([str(tmp_path / "nvidia-smi"), "topo", "-m"], 5)
    assert err.value.missing and not err.value.no_driver


def test_driver_failure_is_no_driver(tmp_path):
    binary = fake_binary(tmp_path, 'print("NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA '
                                   'driver. Make sure that the latest NVIDIA driver is installed and running.")\n'
                                   "sys.exit(9)")
    with pytest.raises(SmiUnavailable, match="exited with status 9: NVIDIA-SMI has failed") as err:
        run_command([binary, "topo", "-m"], 5)
    assert err.value.no_driver


def test_a_hang_is_cut_at_the_timeout(tmp_path):
    binary = fake_binary(tmp_path, "time.sleep(30)")
    with pytest.raises(SmiUnavailable, match=r"`.*nvidia-smi topo -m` did not finish within 0.3 s"):
        run_command([binary, "topo", "-m"], 0.3)


def test_output_of_the_real_binary_path_is_parsed(tmp_path):
    (tmp_path / "topo.txt").write_text(h200_topo_text())
    binary = fake_binary(tmp_path, f"print(open({str(tmp_path / 'topo.txt')!r}).read(), end='')")
    matrix = SmiSource(binary=binary).topo_matrix()
    assert matrix.gpus == ("GPU0",) and matrix.numa_affinity == (0,)


def test_each_command_runs_once():
    calls = []

    def run(argv, timeout_s):
        calls.append(argv)
        return h200_query_xml() if "-x" in argv else h200_topo_text()

    src = SmiSource(run=run, timeout_s=7)
    src.topo_matrix(), src.topo_matrix(), src.query(), src.pcie_generations()
    assert calls == [["nvidia-smi", "topo", "-m"], ["nvidia-smi", "-q", "-x"]]
    assert src.pcie_generations() == [5]


def test_saved_outputs_answer_from_files(tmp_path):
    (tmp_path / "q.xml").write_text(h200_query_xml())
    src = SmiSource(run=saved_outputs(query=tmp_path / "q.xml"))
    assert src.query()[0].product_name == "NVIDIA H200"
    with pytest.raises(SmiUnavailable, match="give --smi-topo"):
        src.topo_matrix()


@pytest.mark.skipif(os.name != "posix", reason="exec bits")
def test_non_executable_binary_is_missing(tmp_path):
    path = tmp_path / "nvidia-smi"
    path.write_text("not a program")
    with pytest.raises(SmiUnavailable, match="not executable") as err:
        run_command([str(path), "-q", "-x"], 5)
    assert err.value.missing
