"""Discovery: recorded NVML answers (DGX H100, DGX-1, a real H200 guest) plus nvidia-smi -> the topology.

NVML is asked first; nvidia-smi fills what NVML could not say, field by field::

    field            NVML call                           nvidia-smi fallback
    NVLink           nvmlDeviceGetNvLinkState/Remote*    topo -m NV# cells
    PCIe relation    nvmlDeviceGetTopologyCommonAncestor topo -m PCIe cells (NV# pairs: NODE/SYS by NUMA)
    NUMA node        nvmlDeviceGetMemoryAffinity         topo -m NUMA Affinity, then -q -x
    uuid/model/...   nvmlDeviceGet*                      -q -x
    NICs             (none)                              topo -m NIC columns
"""

from __future__ import annotations

import json

import pytest

from models import presets
from models.errors import SpecError
from models.readers.nvidia_smi import parse_topo_matrix, render_topo_matrix
from models.readers.published import load_published
from scheduler.agent.discover import NoDriverError, discover, nic_speed_gbps, nvidia_gpus_on_pci
from tests.agent.records import (
    OBSERVED,
    fake_sysfs,
    h200_query_xml,
    h200_record,
    h200_topo_text,
    published_topo_text,
    record,
    replay,
    smi,
)
from tests.paths import shared_or_skip

NS = "ERR NVMLError_NotSupported(3)"


def gpuallocator_dgx1() -> tuple[list[list[int]], list[list[str]]]:
    """NVLink counts and PCIe relations of go-gpuallocator's DGX-1 Volta fixture (shared data)."""
    path = shared_or_skip("data/gpu-topologies/gpuallocator_test_topologies.json")
    fx = json.loads(path.read_text())["dgx1_volta_8x_v100"]
    n = fx["gpus"]
    links = [[0] * n for _ in range(n)]
    pcie = [["X"] * n for _ in range(n)]
    for p in fx["pairs"]:
        a, b = p["a"], p["b"]
        links[a][b] = links[b][a] = p["nvlinks"]
        pcie[a][b] = pcie[b][a] = p["pcie"]
    return links, pcie


# -- NVML alone ----------------------------------------------------------------------


def test_dgx1_nvlinks_and_pcie_equal_the_gpuallocator_fixture(sysfs):
    found = discover(replay("dgx1-v100"), None, sys_root=sysfs)
    links, pcie = gpuallocator_dgx1()
    assert found.topology.nvlink_matrix() == links
    assert found.topology.pcie_relation_matrix() == pcie
    assert found.topology.nvswitch is None
    assert found.source == "nvml"
    assert found.gpus[4].nvlink_peers == {0: 2, 5: 1, 6: 1, 7: 2}


def test_dgx_h100_equals_the_preset(sysfs):
    found = discover(replay("dgx-h100"), None, sys_root=sysfs)
    preset = presets.node_type("dgx-h100").topology
    topo = found.topology
    assert topo.gpus == preset.gpus  # NVIDIA-H100-80GB-HBM3, 81559 MiB, 8 GPUs
    assert topo.nvswitch is not None and topo.nvswitch.links_per_gpu == 18
    assert topo.nvlink_matrix() == preset.nvlink_matrix()
    assert topo.pcie_relation_matrix() == preset.pcie_relation_matrix()
    assert topo.gpu_numa() == preset.gpu_numa()
    assert topo.pcie_gen == 5
    assert [g.nvswitch_links for g in found.gpus] == [18] * 8
    assert "nvidia-smi topo -m: nvidia-smi not used; NICs unknown" in found.notes


def test_real_h200_guest_takes_numa_and_nvlink_from_nvidia_smi(sysfs):
    """On the real H200 guest NVML said NotSupported for NUMA and NVLink; topo -m says NUMA 0, no NVLink."""
    found = discover(replay(h200_record()), smi(h200_topo_text(), h200_query_xml()), sys_root=sysfs)
    topo = found.topology
    assert (topo.gpus.count, topo.gpus.model, topo.gpus.memory_mib) == (1, "NVIDIA-H200", 143771)
    assert topo.numa == (0,) and topo.nvlinks == () and topo.nvswitch is None
    assert topo.pcie_gen == 5  # from -q -x max_link_gen: this NVML answer set has no PCIe generation
    gpu = found.gpus[0]
    assert gpu.uuid == "GPU-60ca8147-127f-46f0-9366-eba40a41b09d"
    assert gpu.pci_bus_id == "0000:00:06.0" and gpu.mig_mode == "Disabled"
    assert gpu.fallbacks == ("numa (topo -m)",)
    assert found.source == "nvml+nvidia-smi"
    assert "NVLink from nvidia-smi topo -m (NVML had no NVLink state)" in found.notes
    assert found.gfd_labels() == {"nvidia.com/gpu.count": "1", "nvidia.com/gpu.product": "NVIDIA-H200",
                                  "nvidia.com/gpu.memory": "143771"}


def test_h200_from_nvidia_smi_alone_matches_nvml_plus_smi(sysfs):
    both = discover(replay(h200_record()), smi(h200_topo_text(), h200_query_xml()), sys_root=sysfs)
    alone = discover(None, smi(h200_topo_text(), h200_query_xml()), sys_root=sysfs)
    assert alone.topology == both.topology
    assert alone.gpus[0].uuid == both.gpus[0].uuid and alone.source == "nvidia-smi"


# -- NVML plus nvidia-smi ------------------------------------------------------------------


def test_nics_come_from_topo_m(tmp_path):
    """DGX-1 NVML answers plus the published DGX-1-class topo -m (one NIC, PIX to GPUs 2 and 3)."""
    sys_root = fake_sysfs(tmp_path, nic_rates={"mlx5_0": "100 Gb/sec (4X EDR)"})
    found = discover(replay("dgx1-v100"), smi(published_topo_text("dgx1_class_8x_v100_sxm2_16gb")),
                     sys_root=sys_root)
    (nic,) = found.topology.nics
    assert (nic.name, nic.gpus, nic.numa, nic.bandwidth_gbps) == ("mlx5_0", (2, 3), 0, 100.0)
    links, _ = gpuallocator_dgx1()
    assert found.topology.nvlink_matrix() == links  # NVML's links; the published matrix agrees


def test_nic_rate_unknown_is_assumed_and_noted(sysfs):
    found = discover(replay("dgx-h100"), smi(published_topo_text("hgx_h100_8gpu")), sys_root=sysfs, nic_gbps=200)
    nics = found.topology.nics
    assert [(n.name, n.gpus, n.numa) for n in nics[:8]] == [(f"NIC{i}", (i,), i // 4) for i in range(8)]
    assert {n.bandwidth_gbps for n in nics} == {200.0}
    assert any("not in sysfs; assumed 200 Gb/s" in n for n in found.notes)


def test_unsupported_nvlink_state_falls_back_to_topo_m(sysfs):
    doc = record("dgx1-v100")
    for gpu in doc["gpus"]:
        gpu["nvlinks"] = [{"link": 0, "err": "NVMLError_NotSupported(3)"}]
    found = discover(replay(doc), smi(published_topo_text("dgx1_class_8x_v100_sxm2_16gb")), sys_root=sysfs)
    links, pcie = gpuallocator_dgx1()
    assert found.topology.nvlink_matrix() == links
    assert found.topology.pcie_relation_matrix() == pcie  # still NVML's common ancestors
    assert "NVLink from nvidia-smi topo -m (NVML had no NVLink state)" in found.notes


def test_unsupported_common_ancestor_falls_back_per_pair(sysfs):
    """Pairs topo -m shows as PCIe take that cell; NV# pairs hide theirs and get NODE/SYS by NUMA."""
    doc = record("dgx1-v100")
    doc["topology"] = [[NS] * 8 for _ in range(8)]
    found = discover(replay(doc), smi(published_topo_text("dgx1_class_8x_v100_sxm2_16gb")), sys_root=sysfs)
    pcie = found.topology.pcie_relation_matrix()
    assert pcie[0][5] == "SYS"  # a PCIe cell of the published matrix
    assert pcie[0][1] == "NODE"  # NV1 in topo -m, same NUMA node
    assert pcie[0][4] == "SYS"  # NV2 in topo -m, across sockets
    assert any("PCIe relation of 12 GPU pair(s) from nvidia-smi topo -m" in n for n in found.notes)
    assert any("PCIe relation of 16 GPU pair(s) set to NODE/SYS by NUMA node" in n for n in found.notes)


def test_nvidia_smi_alone_reads_nvswitch_from_uniform_nv18(sysfs):
    found = discover(None, smi(published_topo_text("hgx_h100_8gpu")), sys_root=sysfs)
    assert found.topology.nvswitch is not None and found.topology.nvswitch.links_per_gpu == 18
    assert found.topology.numa == (0, 0, 0, 0, 1, 1, 1, 1)
    assert any("nvidia-smi -q -x: nvidia-smi not found" in n for n in found.notes)


def test_query_xml_is_not_run_when_nvml_says_everything(sysfs):
    doc = record("dgx-h100")
    for gpu in doc["gpus"]:
        gpu["fabric"] = {"cluster_uuid": "6f0b7c1e-2d3a-4b5c-9d8e-0123456789ab", "clique_id": 1}
    calls: list = []
    found = discover(replay(doc), smi(published_topo_text("hgx_h100_8gpu"), calls=calls), sys_root=sysfs)
    assert calls == [["nvidia-smi", "topo", "-m"]]
    assert found.clique == "6f0b7c1e-2d3a-4b5c-9d8e-0123456789ab.1"
    assert found.gfd_labels()["nvidia.com/gpu.clique"] == found.clique


def test_gpu_count_disagreement_is_an_error(sysfs):
    with pytest.raises(SpecError, match="NVML sees 8 GPUs but `nvidia-smi topo -m` shows 1"):
        discover(replay("dgx-h100"), smi(h200_topo_text()), sys_root=sysfs)


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("topo, message", [
    ("GPU0\tGPU1\tCPU Affinity\nGPU0\t X \tNV4\t0-7\nGPU1\tNV2\t X \t0-7\n", r"line 3: GPU1/GPU0 is NV2 but GPU0/GPU1 is NV4"),
    ("Failed to initialize NVML: Unknown Error\n", r"line 1: expected the `nvidia-smi topo -m` header"),
    ("\tGPU0\tCPU Affinity\nGPU0\t X \tbanana\n", r"CPU Affinity of GPU0: 'banana'"),
], ids=["asymmetric", "not-a-matrix", "bad-affinity"])
def test_garbled_topo_m_is_a_spec_error_naming_the_line(sysfs, topo, message):
    with pytest.raises(SpecError, match=message):
        discover(None, smi(topo), sys_root=sysfs)


def test_garbled_query_xml_is_a_spec_error(sysfs):
    with pytest.raises(SpecError, match=r"nvidia-smi -q -x: line \d+: malformed XML"):
        discover(None, smi(h200_topo_text(), h200_query_xml()[:2000]), sys_root=sysfs)


def test_cpu_only_node_is_an_empty_topology(sysfs):
    found = discover(None, smi(), sys_root=sysfs)
    assert found.topology.gpus.count == 0 and found.gpus == () and found.gfd_labels() == {}
    assert any("no NVIDIA GPU on the PCI bus: a CPU-only node" in n for n in found.notes)


def test_gpus_on_the_bus_without_a_driver_is_no_driver(tmp_path):
    sys_root = fake_sysfs(tmp_path, gpus=2)
    doc = record("dgx-h100")
    doc["init"] = "ERR NVMLError_DriverNotLoaded(9)"
    with pytest.raises(NoDriverError, match=r"2 NVIDIA GPU\(s\) are on the PCI bus \(0000:18:00.0, 0000:19:00.0\) "
                                            r"but no driver answers: NVML: the NVIDIA driver is not loaded"):
        discover(replay(doc), smi(), sys_root=sys_root)


def test_driver_that_sees_no_gpu_on_a_gpu_machine_is_no_driver(tmp_path):
    doc = record("dgx-h100")
    doc["gpus"] = []
    with pytest.raises(NoDriverError, match="the driver sees no GPU but 1 NVIDIA GPU"):
        discover(replay(doc), None, sys_root=fake_sysfs(tmp_path, gpus=1))


def test_broken_driver_and_unreadable_sysfs_is_no_driver(tmp_path):
    doc = record("dgx-h100")
    doc["init"] = "ERR NVMLError_DriverNotLoaded(9)"
    with pytest.raises(NoDriverError, match="installed but not working"):
        discover(replay(doc), None, sys_root=tmp_path / "absent")


def test_pci_scan_counts_gpus_not_nvswitches(tmp_path):
    assert nvidia_gpus_on_pci(fake_sysfs(tmp_path, gpus=3)) == ["0000:18:00.0", "0000:19:00.0", "0000:1a:00.0"]
    assert nvidia_gpus_on_pci(tmp_path / "absent") is None


def test_nic_speed_from_rdma_port_else_netdev(tmp_path):
    root = fake_sysfs(tmp_path, nic_rates={"mlx5_0": "400 Gb/sec (4X NDR)"})
    (root / "class" / "net" / "eth0").mkdir(parents=True)
    (root / "class" / "net" / "eth0" / "speed").write_text("25000\n")
    assert nic_speed_gbps(root, "mlx5_0") == 400.0
    assert nic_speed_gbps(root, "eth0") == 25.0
    assert nic_speed_gbps(root, "mlx5_9") is None


def test_published_matrix_round_trip_is_what_nvidia_smi_prints():
    """The helper that feeds published matrices as nvidia-smi output keeps every cell."""
    doc = json.loads(shared_or_skip(OBSERVED).read_text())
    m = load_published(doc["dgx1_class_8x_v100_sxm2_16gb"], "x")
    assert parse_topo_matrix(render_topo_matrix(m), "x").gpu_cells == m.gpu_cells
