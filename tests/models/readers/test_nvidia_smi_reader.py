"""nvidia-smi readers: ``topo -m`` matrix, ``-q -x`` XML and plain ``-q`` text."""

from __future__ import annotations

import pytest

from models.errors import SpecError
from models.readers.nvidia_smi import (
    GpuInfo,
    TopoMatrix,
    parse_query_text,
    parse_query_xml,
    parse_topo_matrix,
    render_topo_matrix,
    topology_from_matrix,
    topology_from_nvidia_smi,
)
from tests.paths import shared_or_skip

H200 = "fixtures/nvidia-smi/h200-x1"


def report_section(report: str, title: str) -> str:
    """One ``== title`` section of the captured node report."""
    return report.split(f"== {title}\n", 1)[1].split("\n== ", 1)[0]


def h200_topo() -> str:
    return report_section(shared_or_skip(f"{H200}/node-report.txt").read_text(), "topo -m")


# GPU0 =NV4= GPU1      NUMA 0: GPU0, GPU1, mlx5_0 (PIX to GPU0, PXB to GPU1)
#   |          |
#  NV4        NV4      NUMA 1: GPU2, GPU3, mlx5_1 (PIX to GPU2, PXB to GPU3)
#   |          |
# GPU2 =NV4= GPU3
RING4 = (
    "\t\x1b[4mGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tNIC1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
    "GPU0\t X \tNV4\tNV4\tSYS\tPIX\tSYS\t0-31\t0\t\tN/A\n"
    "GPU1\tNV4\t X \tSYS\tNV4\tPXB\tSYS\t0-31\t0\t\tN/A\n"
    "GPU2\tNV4\tSYS\t X \tNV4\tSYS\tPIX\t32-63\t1\t\tN/A\n"
    "GPU3\tSYS\tNV4\tNV4\t X \tSYS\tPXB\t32-63\t1\t\tN/A\n"
    "NIC0\tPIX\tPXB\tSYS\tSYS\t X \tSYS\n"
    "NIC1\tSYS\tSYS\tPIX\tPXB\tSYS\t X \n"
    "\n"
    "Legend:\n"
    "\n"
    "  X    = Self\n"
    "  NV#  = Connection traversing a bonded set of # NVLinks\n"
    "\n"
    "NIC Legend:\n"
    "\n"
    "  NIC0: mlx5_0\n"
    "  NIC1: mlx5_1\n"
)


def two_gpus(cell: str, cpu: tuple[str, str] = ("0-15", "0-15"), numa: tuple[str, str] = ("0", "0")) -> str:
    return (
        "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"
        f"GPU0\t X \t{cell}\t{cpu[0]}\t{numa[0]}\t\tN/A\n"
        f"GPU1\t{cell}\t X \t{cpu[1]}\t{numa[1]}\t\tN/A\n"
    )


def full(cell: str, n: int, numa: list[int] | None = None) -> str:
    """An n-GPU matrix with ``cell`` between every pair."""
    numa = numa or [0] * n
    head = "\t" + "\t".join(f"GPU{i}" for i in range(n)) + "\tCPU Affinity\tNUMA Affinity\n"
    rows = ["\t".join([f"GPU{i}", *(" X " if i == j else cell for j in range(n)), "0-7", str(numa[i])])
            for i in range(n)]
    return head + "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- the captured H200 node


def test_h200_topo_section_has_ansi_escapes_and_reads_as_one_gpu():
    text = h200_topo()
    assert "\x1b[4m" in text and "\t" in text
    m = parse_topo_matrix(text, "h200 topo -m")
    assert m.gpus == ("GPU0",)
    assert m.gpu_cells == (("X",),)
    assert m.cpu_affinity == ("0-15",)
    assert m.numa_affinity == (0,)
    assert m.gpu_numa_id == (None,)
    assert m.nics == () and m.nic_nic_cells is None


def test_h200_xml_gives_one_gpu_with_its_facts():
    gpus = parse_query_xml(shared_or_skip(f"{H200}/nvidia-smi-q.xml").read_text(), "h200 -q -x")
    assert gpus == [GpuInfo(index=0, uuid="GPU-60ca8147-127f-46f0-9366-eba40a41b09d", product_name="NVIDIA H200",
                            memory_total_mib=143771, pci_bus_id="00000000:00:06.0", numa_node=None,
                            mig_mode="Disabled", nvlink_active=None, fabric_clique_id=None,
                            fabric_cluster_uuid=None)]
    assert gpus[0].clique is None


def test_h200_plain_query_text_agrees_with_the_xml():
    xml = parse_query_xml(shared_or_skip(f"{H200}/nvidia-smi-q.xml").read_text(), "xml")
    text = parse_query_text(shared_or_skip(f"{H200}/nvidia-smi-q.txt").read_text(), "txt")
    assert text == xml


def test_h200_topology_takes_model_and_memory_from_the_xml():
    xml = shared_or_skip(f"{H200}/nvidia-smi-q.xml").read_text()
    topo = topology_from_nvidia_smi(h200_topo(), xml, source="h200")
    assert topo.gpus.count == 1
    assert topo.gpus.model == "NVIDIA-H200"
    assert topo.gpus.memory_mib == 143771
    assert topo.numa == (0,)
    assert topo.nvswitch is None and topo.nvlinks == () and topo.nics == ()


def test_query_xml_reads_numa_nvlink_and_fabric_when_present():
    xml = (
        "<nvidia_smi_log><gpu id=\"00000000:18:00.0\">"
        "<product_name>NVIDIA GB200</product_name><uuid>GPU-1</uuid>"
        "<mig_mode><current_mig>Enabled</current_mig></mig_mode>"
        "<fb_memory_usage><total>189471 MiB</total></fb_memory_usage>"
        "<pci><pci_bus_id>00000000:18:00.0</pci_bus_id></pci><numa_node>1</numa_node>"
        "<nvlink><link><state>Active</state></link><link><state>Active</state></link>"
        "<link><state>Inactive</state></link></nvlink>"
        "<fabric><cliqueId>32766</cliqueId><clusterUuid>c0ffee</clusterUuid></fabric>"
        "</gpu></nvidia_smi_log>"
    )
    (g,) = parse_query_xml(xml, "x")
    assert (g.numa_node, g.nvlink_active, g.mig_mode) == (1, 2, "Enabled")
    assert g.clique == "c0ffee.32766"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<nvidia_smi_log><gpu>\n<uuid>x</uuid>\n</nvidia_smi_log>",
         "q.xml: line 3: malformed XML at column 3: mismatched tag"),
        ("<other/>", "q.xml: line 1: root element is <other>, not <nvidia_smi_log>"),
        ("<nvidia_smi_log>\n<gpu id=\"a\"><uuid>U</uuid><product_name>P</product_name>"
         "<fb_memory_usage><total>lots</total></fb_memory_usage></gpu></nvidia_smi_log>",
         "q.xml: line 2: GPU 0: <fb_memory_usage/total> is not a size in MiB (got 'lots')"),
        ("<nvidia_smi_log><gpu id=\"a\"><uuid>N/A</uuid></gpu></nvidia_smi_log>",
         "q.xml: line 1: GPU 0: <uuid> is missing or N/A"),
    ],
    ids=["mismatched-tag", "wrong-root", "bad-memory", "missing-uuid"],
)
def test_query_xml_errors_name_source_and_line(text, message):
    with pytest.raises(SpecError) as exc:
        parse_query_xml(text, "q.xml")
    assert str(exc.value).startswith(message)


def test_query_text_error_names_line():
    with pytest.raises(SpecError, match=r"^q.txt: line 2: unexpected top-level line 'garbage here'"):
        parse_query_text("GPU 00000000:01:00.0\ngarbage here\n", "q.txt")


# --------------------------------------------------------------------------- topo -m forms


def test_ring_with_nics_reads_cells_nic_legend_and_nic_rows():
    m = parse_topo_matrix(RING4, "ring")
    assert m.gpus == ("GPU0", "GPU1", "GPU2", "GPU3")
    assert m.gpu_cells[0] == ("X", "NV4", "NV4", "SYS")
    assert m.nics == ("mlx5_0", "mlx5_1")
    assert m.nic_cells == (("PIX", "SYS"), ("PXB", "SYS"), ("SYS", "PIX"), ("SYS", "PXB"))
    assert m.nic_nic_cells == (("X", "SYS"), ("SYS", "X"))
    assert m.cpu_affinity == ("0-31", "0-31", "32-63", "32-63")
    assert m.numa_affinity == (0, 0, 1, 1)


def test_ring_topology_keeps_links_and_derives_hidden_pcie_from_numa():
    topo = topology_from_matrix(parse_topo_matrix(RING4, "ring"), model="NVIDIA-A100", nic_gbps=200)
    assert topo.nvswitch is None
    assert [(link.gpus, link.links) for link in topo.nvlinks] == [((0, 1), 4), ((0, 2), 4), ((1, 3), 4), ((2, 3), 4)]
    # NV pairs: 0-1 and 2-3 share a NUMA node (NODE), 0-2 and 1-3 do not (SYS).
    assert topo.pcie_matrix == (("X", "NODE", "SYS", "SYS"),
                                ("NODE", "X", "SYS", "SYS"),
                                ("SYS", "SYS", "X", "NODE"),
                                ("SYS", "SYS", "NODE", "X"))
    assert topo.numa == (0, 0, 1, 1)
    assert [(n.name, n.gpus, n.numa, n.bandwidth_gbps) for n in topo.nics] == [
        ("mlx5_0", (0, 1), 0, 200.0), ("mlx5_1", (2, 3), 1, 200.0)]


@pytest.mark.parametrize("ansi", [False, True], ids=["plain", "ansi"])
def test_render_then_parse_gives_the_same_matrix(ansi):
    m = parse_topo_matrix(RING4, "ring")
    text = render_topo_matrix(m, ansi=ansi)
    assert ("\x1b[4m" in text) == ansi
    assert parse_topo_matrix(text, "again") == m
    assert parse_topo_matrix(text.expandtabs(), "spaces") == m


def test_copied_text_with_spaces_and_an_old_style_nic_column():
    text = (
        "        GPU0    GPU1    mlx5_0  CPU Affinity\n"
        "GPU0     X      NV2     PIX     0-11,24-35\n"
        "GPU1    NV2      X      SOC     12-23,36-47\n"
        "mlx5_0  PIX     SOC      X\n"
        "\n"
        "Legend:\n"
    )
    m = parse_topo_matrix(text, "old")
    assert m.nics == ("mlx5_0",)
    assert m.nic_cells == (("PIX",), ("SYS",))
    assert m.cpu_affinity == ("0-11,24-35", "12-23,36-47")
    assert m.numa_affinity == (None, None)
    topo = topology_from_matrix(m)
    # NUMA from CPU affinity groups: the two GPUs differ, so the hidden PCIe relation is SYS.
    assert topo.numa == (0, 1)
    assert topo.pcie_matrix == (("X", "SYS"), ("SYS", "X"))
    assert topo.nics[0].gpus == (0,)


def test_blank_cpu_affinity_column_keeps_numa_in_place():
    text = (
        "\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
        "GPU0\t X \tNV18\t0-35\t0\t\tN/A\n"
        "GPU1\tNV18\t X \t\t1\t\tN/A\n"
    )
    m = parse_topo_matrix(text, "gb200")
    assert m.cpu_affinity == ("0-35", None)
    assert m.numa_affinity == (0, 1)


def test_old_single_gpu_layout_with_padding_tabs():
    text = "\t\tGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\nGPU0\t X \t0-7\t\tN/A\t\tN/A\n"
    m = parse_topo_matrix(text, "old1")
    assert (m.cpu_affinity, m.numa_affinity, m.gpu_numa_id) == (("0-7",), (None,), (None,))
    assert topology_from_matrix(m).numa == (0,)


@pytest.mark.parametrize("text", ["", "\n\n   \n"], ids=["empty", "blank-lines"])
def test_cpu_only_node_is_an_empty_topology(text):
    m = parse_topo_matrix(text, "cpu-node")
    assert m == TopoMatrix()
    topo = topology_from_matrix(m)
    assert topo.gpus.count == 0 and topo.nvlinks == () and topo.nics == () and topo.pcie_matrix is None


# --------------------------------------------------------------------------- NVSwitch heuristic


@pytest.mark.parametrize(
    ("text", "nvswitch", "nvlinks"),
    [
        (full("NV12", 8), 12, []),
        (full("NV4", 4), 4, []),
        (full("NV4", 3), None, [((0, 1), 4), ((0, 2), 4), ((1, 2), 4)]),
        (two_gpus("NV4"), None, [((0, 1), 4)]),
        (full("SYS", 4), None, []),
    ],
    ids=["8x-nv12-switch", "4x-nv4-switch", "3x-nv4-links", "2x-bridge", "4x-no-nvlink"],
)
def test_nvswitch_only_for_four_or_more_gpus_with_equal_counts(text, nvswitch, nvlinks):
    topo = topology_from_matrix(parse_topo_matrix(text, "t"))
    assert (topo.nvswitch.links_per_gpu if topo.nvswitch else None) == nvswitch
    assert [(link.gpus, link.links) for link in topo.nvlinks] == nvlinks


def test_nvswitch_node_pcie_splits_by_numa():
    topo = topology_from_matrix(parse_topo_matrix(full("NV18", 4, numa=[0, 0, 1, 1]), "t"))
    assert topo.pcie_matrix == (("X", "NODE", "SYS", "SYS"), ("NODE", "X", "SYS", "SYS"),
                                ("SYS", "SYS", "X", "NODE"), ("SYS", "SYS", "NODE", "X"))
    assert topo.nvlink_matrix()[0][3] == 18


def test_without_any_affinity_the_hidden_relation_is_node():
    text = "\tGPU0\tGPU1\nGPU0\t X \tNV2\nGPU1\tNV2\t X \n"
    topo = topology_from_matrix(parse_topo_matrix(text, "t"))
    assert topo.numa is None
    assert topo.pcie_matrix == (("X", "NODE"), ("NODE", "X"))


# --------------------------------------------------------------------------- garbled input


def _replace(old: str, new: str) -> str:
    assert old in RING4
    return RING4.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_replace("GPU1\tNV4\t X \tSYS", "GPU1\tNV4\t X \tFOO"),
         "ring.txt: line 3: column GPU2: 'FOO' is not a topology cell (X, NV#, PIX, PXB, PHB, NODE or SYS)"),
        (_replace("GPU3\tSYS\tNV4", "GPU3\tPIX\tNV4"),
         "ring.txt: line 5: GPU3/GPU0 is PIX but GPU0/GPU3 is SYS (line 2); the matrix must be symmetric"),
        (_replace("GPU2\tNV4\tSYS\t X ", "GPU2\tNV4\tSYS\tPIX"), "ring.txt: line 4: column GPU2: 'PIX' must be X (self)"),
        (_replace("GPU0\t X \tNV4", "GPU0\t X \t X "),
         "ring.txt: line 2: column GPU1: 'X' where X (self) is only allowed on the diagonal"),
        (_replace("GPU2\tNV4", "GPU7\tNV4"), "ring.txt: line 4: expected row GPU2, got 'GPU7'"),
        (_replace("GPU3\tSYS\tNV4\tNV4\t X \tSYS\tPXB\t32-63\t1\t\tN/A", "GPU3\tSYS\tNV4"),
         "ring.txt: line 5: row GPU3 has 2 cells, the header has 6 columns"),
        (_replace("GPU3\tSYS\tNV4\tNV4\t X \tSYS\tPXB", "GPU3\tSYS\tNV4\tNV4"),
         "ring.txt: line 5: column GPU3: '32-63' is not a topology cell"),
        (_replace("32-63\t1\t\tN/A\nGPU3", "32-63\tone\t\tN/A\nGPU3"),
         "ring.txt: line 4: NUMA Affinity of GPU2: 'one' is not a NUMA node number or N/A"),
        (_replace("0-31\t0\t\tN/A\nGPU1", "zero\t0\t\tN/A\nGPU1"),
         "ring.txt: line 2: CPU Affinity of GPU0: 'zero' is not a CPU list such as 0-11,24-35"),
        (_replace("0-31\t0\t\tN/A\nGPU1", "0-31\t0\t7\t8\t9\nGPU1"),
         "ring.txt: line 2: row GPU0: 5 values after the cells for 3 affinity columns"),
        (_replace("  NIC1: mlx5_1", "  NIC5: mlx5_1"),
         "ring.txt: line 17: the NIC legend names NIC5, which is not a column of the matrix"),
        ("Hello from the node\nGPU0 X\n",
         "ring.txt: line 1: expected the `nvidia-smi topo -m` header (GPU0 GPU1 ... CPU Affinity), got 'Hello from the node'"),
        ("\tCPU Affinity\tGPU0\nGPU0\t0-3\t X \n", "ring.txt: line 1: header columns out of order"),
        ("\n== topo -m\n\tGPU0\n", "ring.txt: line 2: expected the `nvidia-smi topo -m` header"),
        (RING4.split("\nGPU2\t")[0] + "\n\nLegend:\n", "ring.txt: line 4: the matrix ends after 2 of 4 GPU rows"),
        (_replace("32-63\t1\t\tN/A\nGPU3", "32-63\t\u00b2\t\tN/A\nGPU3"),
         "ring.txt: line 4: NUMA Affinity of GPU2: '\u00b2' is not a NUMA node number or N/A"),
        (_replace("GPU1\tNV4\t X \tSYS", "GPU1\tNV4\t X \tNV0"),
         "ring.txt: line 3: column GPU2: 'NV0' is not a topology cell"),
    ],
    ids=["bad-cell", "asymmetric", "diagonal-not-x", "x-off-diagonal", "wrong-row", "short-row", "row-missing-a-cell",
         "bad-numa", "bad-cpu-list", "extra-values", "legend-unknown-nic", "prose-not-header", "columns-out-of-order",
         "report-not-section",
         "missing-rows", "superscript-digit", "nv0"],
)
def test_garbled_topo_text_names_source_line_and_problem(text, message):
    with pytest.raises(SpecError) as exc:
        parse_topo_matrix(text, "ring.txt")
    assert str(exc.value).startswith(message)


def test_topo_matrix_checks_programmatic_input():
    with pytest.raises(SpecError, match=r"^m: gpu_cells\[0\]\[1\]: not symmetric \(NV1 vs SYS\)"):
        TopoMatrix(gpus=("GPU0", "GPU1"), gpu_cells=(("X", "NV1"), ("SYS", "X")), source="m")


# --------------------------------------------------------------------------- the product's limits


def _xml_gpus(n: int) -> str:
    gpu = ('<gpu id="00000000:{i:02X}:00.0"><uuid>GPU-{i}</uuid><product_name>P</product_name>'
           "<fb_memory_usage><total>1024 MiB</total></fb_memory_usage></gpu>")
    return "<nvidia_smi_log>\n" + "\n".join(gpu.format(i=i) for i in range(n)) + "\n</nvidia_smi_log>\n"


@pytest.mark.parametrize(("text", "message"), [
    (full("NV4", 65), "topo.txt: line 1: 65 GPU columns (GPU0 ... GPU64); toposched takes at most 64 GPUs per node"),
    (two_gpus("NV65"), "topo.txt: line 2: column GPU1: 'NV65' is more bonded NVLinks than toposched takes (at most NV64)"),
], ids=["65-gpus", "nv65"])
def test_topo_m_beyond_the_product_limits_is_named(text, message):
    """These ended in an internal error (a pydantic ValidationError) when the topology was built."""
    with pytest.raises(SpecError) as exc:
        parse_topo_matrix(text, "topo.txt")
    assert str(exc.value).startswith(message), str(exc.value)


def test_topo_m_at_the_product_limits_builds_a_topology():
    topo = topology_from_matrix(parse_topo_matrix(full("NV4", 64), "topo.txt"))
    assert topo.gpus.count == 64
    assert topology_from_matrix(parse_topo_matrix(two_gpus("NV64"), "topo.txt")).nvlink_matrix()[0][1] == 64


def test_query_xml_with_more_than_64_gpus_names_the_65th():
    assert len(parse_query_xml(_xml_gpus(64), "q.xml")) == 64
    with pytest.raises(SpecError) as exc:
        parse_query_xml(_xml_gpus(65), "q.xml")
    assert str(exc.value) == "q.xml: line 66: 65 GPUs (<gpu> elements); toposched takes at most 64 GPUs per node"
