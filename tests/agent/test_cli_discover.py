"""``toposched discover``: output, exit statuses for bad input, measurement into the topology and the engine."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from models.cluster import cluster_from_data
from models.readers.annotation import ANNOTATION_KEY, decode_annotation
from models.readers.k8s_node import node_from_k8s
from models.topology import LinkClass, build_arrays
from scheduler import cli_discover
from scheduler.agent.discover import discover
from scheduler.agent.measure import BandwidthReport
from scheduler.agent.nvml_source import RecordedNvml
from scheduler.cli import main
from tests.agent.records import RECORDS, fake_sysfs, h200_query_xml, h200_record, h200_topo_text, replay


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["discover", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_json_output_of_the_real_h200(tmp_path, sysfs, capsys):
    (tmp_path / "rec.json").write_text(json.dumps(h200_record()))
    (tmp_path / "topo.txt").write_text(h200_topo_text())
    (tmp_path / "q.xml").write_text(h200_query_xml())
    status, out, _ = run_cli(capsys, "--json", "--replay", str(tmp_path / "rec.json"), "--smi-topo",
                             str(tmp_path / "topo.txt"), "--smi-query", str(tmp_path / "q.xml"), "--sys-root", str(sysfs))
    assert status == 0
    doc = json.loads(out)
    assert doc["topology"]["gpus"] == {"count": 1, "model": "NVIDIA-H200", "memory_mib": 143771}
    assert doc["gpus"][0]["pci_bus_id"] == "0000:00:06.0" and doc["gpus"][0]["numa"] == 0
    assert doc["driver_version"] == "580.159.04"
    assert any("nvmlDeviceGetNumaNodeId: NotSupported" in n for n in doc["notes"])


def test_text_output_lists_gpus_pcie_and_notes(sysfs, capsys):
    status, out, _ = run_cli(capsys, "--replay", str(RECORDS / "dgx1-v100.json"), "--no-nvidia-smi",
                             "--sys-root", str(sysfs))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "8x Tesla-V100-SXM2-32GB, 32768 MiB each (nvml, driver 535.183.01)"
    assert lines[2].split()[:5] == ["0", "0000:06:00.0", "0", "-", "1(1)"]
    assert "GPU0  X      PIX    PHB    PHB    SYS    SYS    SYS    SYS" in lines
    assert "note: NVML nvmlDeviceGetMigMode: NotSupported (GPUs 0-7)" in lines


def test_cpu_only_node_exits_0_with_an_empty_topology(sysfs, capsys):
    status, out, _ = run_cli(capsys, "--no-nvml", "--no-nvidia-smi", "--sys-root", str(sysfs))
    assert status == 0
    assert out.startswith("no GPUs (none): empty topology")
    assert "a CPU-only node" in out


@pytest.mark.parametrize("args", [
    ["--no-nvml", "--smi-topo", "absent.txt"],
    ["--replay", "absent.json"],
    ["--nic-gbps", "0"], ["--nic-gbps", "nan"], ["--nic-gbps", "inf"], ["--interval", "inf"], ["--interval", "nan"],
], ids=["smi-topo-missing", "replay-missing", "nic-zero", "nic-nan", "nic-inf", "interval-inf", "interval-nan"])
def test_files_that_are_not_there_and_numbers_out_of_range_are_refused(sysfs, capsys, args):
    status, _, err = run_cli(capsys, *args, "--sys-root", str(sysfs))
    assert status == 2
    assert f"{args[-2]}:" in err and "internal error" not in err


def test_gpus_without_a_driver_exit_3(tmp_path, capsys):
    sys_root = fake_sysfs(tmp_path, gpus=8)
    status, _, err = run_cli(capsys, "--no-nvml", "--no-nvidia-smi", "--sys-root", str(sys_root))
    assert status == 3
    assert err.startswith("toposched: error: 8 NVIDIA GPU(s) are on the PCI bus (0000:18:00.0, ")
    assert "Install or load the NVIDIA driver" in err


def test_garbled_nvidia_smi_exits_2_naming_the_line(tmp_path, sysfs, capsys):
    (tmp_path / "topo.txt").write_text("\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tNV4\t0-7\nGPU1\tNVX\t X \t0-7\n")
    status, out, err = run_cli(capsys, "--no-nvml", "--smi-topo", str(tmp_path / "topo.txt"), "--sys-root", str(sysfs))
    assert (status, out) == (2, "")
    assert err == (f"toposched: error: {tmp_path / 'topo.txt'} (nvidia-smi topo -m): line 3: column GPU0: 'NVX' is not "
                   "a topology cell (X, NV#, PIX, PXB, PHB, NODE or SYS)\n")


def _topo_text(n: int, cell: str = "NV4") -> str:
    head = "\t" + "\t".join(f"GPU{i}" for i in range(n)) + "\tCPU Affinity\tNUMA Affinity\n"
    return head + "".join("\t".join([f"GPU{i}", *(" X " if i == j else cell for j in range(n)), "0-7", "0"]) + "\n"
                          for i in range(n))


def _query_xml(n: int) -> str:
    gpu = ('<gpu id="00000000:{i:02X}:00.0"><uuid>GPU-{i}</uuid><product_name>P</product_name>'
           "<fb_memory_usage><total>1024 MiB</total></fb_memory_usage></gpu>")
    return "<nvidia_smi_log>\n" + "\n".join(gpu.format(i=i) for i in range(n)) + "\n</nvidia_smi_log>\n"


@pytest.mark.parametrize(("topo", "query", "message"), [
    (_topo_text(65), None, "{topo} (nvidia-smi topo -m): line 1: 65 GPU columns (GPU0 ... GPU64); toposched takes "
                           "at most 64 GPUs per node"),
    (_topo_text(2, "NV65"), None, "{topo} (nvidia-smi topo -m): line 2: column GPU1: 'NV65' is more bonded NVLinks "
                                  "than toposched takes (at most NV64)"),
    (_topo_text(64), _query_xml(65), "{query} (nvidia-smi -q -x): line 66: 65 GPUs (<gpu> elements); toposched "
                                     "takes at most 64 GPUs per node"),
], ids=["topo-65-gpus", "topo-nv65", "query-65-gpus"])
def test_saved_nvidia_smi_beyond_the_product_limits_exits_2_naming_the_file(tmp_path, sysfs, capsys, topo, query,
                                                                            message):
    """These ended in `internal error: ValidationError` (exit 1) when the topology was built."""
    files = {"topo": tmp_path / "topo.txt", "query": tmp_path / "q.xml"}
    files["topo"].write_text(topo)
    args = ["--no-nvml", "--smi-topo", str(files["topo"]), "--sys-root", str(sysfs)]
    if query is not None:
        files["query"].write_text(query)
        args += ["--smi-query", str(files["query"])]
    status, out, err = run_cli(capsys, *args)
    assert (status, out) == (2, "")
    assert err == f"toposched: error: {message.format(**files)}\n"


def test_nvml_with_more_than_64_gpus_exits_2(tmp_path, sysfs, capsys):
    doc = json.loads((RECORDS / "dgx-h100.json").read_text())
    doc["gpus"] = [{**doc["gpus"][i % 8], "index": i, "uuid": f"GPU-{i}", "pci": f"00000000:{i:02X}:00.0"}
                   for i in range(65)]
    doc["topology"] = [[None if a == b else 50 for b in range(65)] for a in range(65)]
    (tmp_path / "rec.json").write_text(json.dumps(doc))
    status, _, err = run_cli(capsys, "--replay", str(tmp_path / "rec.json"), "--no-nvidia-smi", "--sys-root", str(sysfs))
    assert status == 2
    assert err == ("toposched: error: discover: NVML (replay:rec.json) sees 65 GPUs; toposched takes at most 64 GPUs "
                   "per node\n")


@pytest.mark.parametrize("args, message", [
    (["--publish"], "--node-name: --publish needs the node's name"),
    (["--rounds", "2"], "--rounds: needs --interval"),
    (["--interval", "0"], "--interval: must be a positive number of seconds"),
    (["--replay", "x.json", "--no-nvml"], "--replay and --no-nvml exclude each other"),
    (["--record", "x.json", "--replay", "y.json"], "--record: records what NVML answers"),
], ids=["publish-no-node", "rounds-no-interval", "zero-interval", "replay-and-no-nvml", "record-and-replay"])
def test_bad_arguments_exit_2(monkeypatch, capsys, args, message):
    monkeypatch.delenv("NODE_NAME", raising=False)
    status, _, err = run_cli(capsys, *args)
    assert status == 2
    assert message in err


def test_record_then_replay_gives_the_same_discovery(monkeypatch, tmp_path, sysfs, capsys):
    """--record writes what the NVML library answered; --replay of that file discovers the same node."""
    monkeypatch.setitem(sys.modules, "pynvml", RecordedNvml(json.loads((RECORDS / "dgx-h100.json").read_text()), "lib"))
    rec = tmp_path / "node.json"
    status, live, _ = run_cli(capsys, "--json", "--record", str(rec), "--no-nvidia-smi", "--sys-root", str(sysfs))
    assert status == 0
    doc = json.loads(rec.read_text())
    assert doc["_about"].startswith("NVML answers recorded by `toposched discover --record`")
    assert doc["driver"] == "550.54.15" and len(doc["gpus"]) == 8
    monkeypatch.delitem(sys.modules, "pynvml")
    status, replayed, _ = run_cli(capsys, "--json", "--replay", str(rec), "--no-nvidia-smi", "--sys-root", str(sysfs))
    assert status == 0
    live_doc, replay_doc = json.loads(live), json.loads(replayed)
    assert replay_doc["topology"] == live_doc["topology"]
    assert replay_doc["topology"]["nvswitch"] is not None
    assert replay_doc["gpus"] == live_doc["gpus"]


def test_a_record_is_written_when_nvml_fails(monkeypatch, tmp_path, sysfs, capsys):
    """nvmlInit failing is exactly what a support record should show."""
    lib = RecordedNvml({"gpus": [], "init": "ERR NVMLError_LibRmVersionMismatch(18)"}, "lib")
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    rec = tmp_path / "node.json"
    run_cli(capsys, "--json", "--record", str(rec), "--no-nvidia-smi", "--sys-root", str(sysfs))
    assert json.loads(rec.read_text())["init"] == "ERR NVMLError_LibRmVersionMismatch(18)"


def test_measure_without_torch_exits_2(monkeypatch, sysfs, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    status, _, err = run_cli(capsys, "--measure", "--replay", str(RECORDS / "dgx-h100.json"), "--no-nvidia-smi",
                             "--sys-root", str(sysfs))
    assert status == 2
    assert "toposched: error: --measure needs PyTorch" in err


def test_loop_keeps_going_after_a_failed_round(monkeypatch, tmp_path, capsys):
    sys_root = fake_sysfs(tmp_path, gpus=1)
    status, _, err = run_cli(capsys, "--no-nvml", "--no-nvidia-smi", "--sys-root", str(sys_root),
                             "--interval", "0.01", "--rounds", "2")
    assert status == 3  # the last round's status
    assert err.count("failed: 1 NVIDIA GPU(s) are on the PCI bus") == 2


# -- measured bandwidth: into the published topology, and preferred by the engine --------------------------


def fake_report(n: int, p2p_gbps: float) -> BandwidthReport:
    """Every pair but 0<->1 measured at ``p2p_gbps``; 0<->1 unmeasured (table value stays)."""
    p2p = tuple(tuple(None if a == b or {a, b} == {0, 1} else p2p_gbps for b in range(n)) for a in range(n))
    return BandwidthReport(n, (441.0,) * n, (402.5,) * n, (33600.0,) * n, p2p, 60.0, 12.5, 1 << 28)


def test_measured_p2p_goes_into_the_published_topology_and_the_engine_uses_it(apiserver, monkeypatch, tmp_path,
                                                                             sysfs, capsys):
    monkeypatch.setattr(cli_discover, "measure_node", lambda found, budget_s: fake_report(8, 1234.5))
    apiserver.store.create("nodes", {"metadata": {"name": "dgx-1"},
                                     "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "80", "pods": "110"}}})
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    status, out, _ = run_cli(capsys, "--measure", "--publish", "--node-name", "dgx-1", "--kubeconfig",
                             str(kubeconfig), "--replay", str(RECORDS / "dgx1-v100.json"), "--no-nvidia-smi",
                             "--sys-root", str(sysfs))
    assert status == 0
    assert "GPU 0: h2d 441  d2h 402  d2d 33600  p2p [- - 1234 1234 1234 1234 1234 1234]" in out
    node = apiserver.store.get("nodes", "dgx-1")
    annotations = node["metadata"]["annotations"]
    ann = decode_annotation(annotations[ANNOTATION_KEY], "dgx-1")
    assert ann.source == "nvml+torch"
    assert ann.topology.measured_p2p_gbps[0][2] == 1234.5 and ann.topology.measured_p2p_gbps[0][1] == 0.0
    bandwidth = json.loads(annotations[cli_discover.BANDWIDTH_ANNOTATION])
    assert bandwidth["unit"] == "Gbit/s" and bandwidth["h2d_gbps"] == [441.0] * 8

    # the scheduler's view of that node: measured numbers where present, the table elsewhere
    spec = node_from_k8s(node, [])
    arrays = build_arrays(cluster_from_data({"name": "c", "nodes": [spec.model_dump(mode="json")]}))
    measured = arrays.link_between(0, 0, 0, 2)
    assert measured.link_class == LinkClass.NVLINK and measured.bandwidth_gbps == pytest.approx(1234.5)
    table = arrays.link_between(0, 0, 0, 1)  # one NVLink2 link, not measured: 200 Gbit/s from the table
    assert table.link_class == LinkClass.NVLINK and table.bandwidth_gbps == pytest.approx(200.0)


def test_a_cuda_error_while_measuring_skips_the_measurement_and_the_loop_goes_on(monkeypatch, sysfs, capsys):
    def broken(found, budget_s):
        raise RuntimeError("CUDA error: uncorrectable ECC error encountered")

    monkeypatch.setattr(cli_discover, "measure_node", broken)
    status, out, err = run_cli(capsys, "--measure", "--replay", str(RECORDS / "dgx1-v100.json"), "--no-nvidia-smi",
                               "--sys-root", str(sysfs), "--interval", "0.01", "--rounds", "2")
    assert status == 0 and out
    assert "measurement skipped for this process: RuntimeError: CUDA error" in err
    status, _, err = run_cli(capsys, "--measure", "--replay", str(RECORDS / "dgx1-v100.json"), "--no-nvidia-smi",
                             "--sys-root", str(sysfs))  # one round: an error, not a traceback
    assert status == 2 and "measurement failed: RuntimeError: CUDA error" in err


def test_a_measurement_is_taken_again_when_the_gpu_count_changes(monkeypatch, sysfs):
    calls: list[int] = []

    def measure(found, budget_s):
        calls.append(found.topology.gpus.count)
        return fake_report(found.topology.gpus.count, 1000.0)

    monkeypatch.setattr(cli_discover, "measure_node", measure)
    found = discover(replay("dgx1-v100"), None, sys_root=sysfs)  # 8 GPUs
    state = cli_discover._State(measured=fake_report(7, 1000.0))  # measured when the node showed 7
    out = cli_discover._with_measurement(found, argparse.Namespace(measure_budget=1.0, interval=1.0), state)
    assert calls == [8] and len(out.topology.measured_p2p_gbps) == 8


def test_the_bandwidth_annotation_alone_does_not_repatch_the_node(apiserver, monkeypatch, tmp_path, sysfs, capsys):
    monkeypatch.setattr(cli_discover, "measure_node", lambda found, budget_s: fake_report(8, 1234.5))
    apiserver.store.create("nodes", {"metadata": {"name": "dgx-2"},
                                     "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "80", "pods": "110"}}})
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    status, _, err = run_cli(capsys, "--measure", "--publish", "--node-name", "dgx-2", "--kubeconfig", str(kubeconfig),
                             "--replay", str(RECORDS / "dgx1-v100.json"), "--no-nvidia-smi", "--sys-root", str(sysfs),
                             "--interval", "1.1", "--rounds", "2")  # generated_at moves on by a second
    assert status == 0
    assert len(apiserver.store.find_requests(method="PATCH")) == 1
    assert "already up to date" in err


def test_record_says_so_when_nvidia_ml_py_is_missing(monkeypatch, tmp_path, sysfs, capsys):
    """Without nvidia-ml-py NVML is never asked: no file, and stderr says why (not a silent exit 0)."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    rec = tmp_path / "node.json"
    status, _, err = run_cli(capsys, "--json", "--record", str(rec), "--no-nvidia-smi", "--sys-root", str(sysfs))
    assert status == 0 and not rec.exists()
    assert f"--record: no record written to {rec}: nvidia-ml-py is not installed" in err
