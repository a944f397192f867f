"""Published ``topo -m`` matrices: load, render, parse back, and derive topologies."""

from __future__ import annotations

import json

import pytest

from models.errors import SpecError
from models.readers.nvidia_smi import parse_topo_matrix, render_topo_matrix, topology_from_matrix
from models.readers.published import load_published, load_published_file
from tests.paths import SHARED, shared_or_skip

OBSERVED = "data/gpu-topologies/nvidia_smi_topo_observed.json"
GPUALLOCATOR = "data/gpu-topologies/gpuallocator_test_topologies.json"


def _entry_names() -> list[str]:
    path = SHARED / OBSERVED
    if not path.exists():
        return ["(reference data absent)"]
    return [k for k in json.loads(path.read_text()) if not k.startswith("_")]


def observed() -> dict:
    return json.loads(shared_or_skip(OBSERVED).read_text())


def given(value) -> bool:
    """A value the source showed (null and cut-off text are not)."""
    return value is not None and not (isinstance(value, str) and "cut off" in value)


@pytest.mark.parametrize("name", _entry_names())
@pytest.mark.parametrize("form", ["tabs", "ansi", "spaces"])
def test_published_matrix_survives_render_and_parse(name, form):
    entry = observed()[name]
    m = load_published(entry, name)
    text = render_topo_matrix(m, ansi=form == "ansi")
    if form == "spaces":
        text = text.expandtabs()
    back = parse_topo_matrix(text, f"{name} rendered")
    n = len(entry["gpu_matrix"])
    assert back.n_gpus == n
    for i in range(n):
        for j in range(n):
            if entry["gpu_matrix"][i][j] is not None:
                assert back.gpu_cells[i][j] == entry["gpu_matrix"][i][j], (i, j)
    for nic, column in entry.get("nic", {}).items():
        k = back.nics.index(nic)
        assert [back.nic_cells[i][k] for i in range(n)] == column
    for i, cpus in enumerate(entry.get("cpu_affinity", [])):
        if given(cpus):
            assert back.cpu_affinity[i] == cpus
    for i, numa in enumerate(entry.get("numa_affinity", [])):
        if numa is not None:
            assert back.numa_affinity[i] == numa
    if entry.get("complete", True):
        assert back == m


def test_dgx1_nvlinks_equal_the_gpuallocator_volta_fixture():
    entry = observed()["dgx1_class_8x_v100_sxm2_16gb"]
    fixture = json.loads(shared_or_skip(GPUALLOCATOR).read_text())["dgx1_volta_8x_v100"]
    topo = topology_from_matrix(load_published(entry, "dgx1"), model="Tesla-V100-SXM2-16GB")
    assert topo.nvswitch is None
    want = [[0] * fixture["gpus"] for _ in range(fixture["gpus"])]
    for p in fixture["pairs"]:
        want[p["a"]][p["b"]] = want[p["b"]][p["a"]] = p["nvlinks"]
    assert topo.nvlink_matrix() == want
    # Pairs without NVLink show their PCIe relation, which must match the fixture's.
    pcie = topo.pcie_relation_matrix()
    for p in fixture["pairs"]:
        if p["nvlinks"] == 0:
            assert pcie[p["a"]][p["b"]] == p["pcie"], p
    # NUMA comes from the CPU affinity groups (the source shows no NUMA column).
    assert topo.numa == (0, 0, 0, 0, 1, 1, 1, 1)
    assert [(n.name, n.gpus, n.numa) for n in topo.nics] == [("mlx5_0", (2, 3), 0)]


@pytest.mark.parametrize(
    ("name", "links_per_gpu", "numa"),
    [
        ("dgx_a100_40gb", 12, None),
        ("hgx_a100_8gpu_epyc7763", 12, (3, 3, 1, 1, 7, 7, 5, 5)),
        ("aws_p4d_24xlarge_8x_a100_40gb", 12, (0, 0, 0, 0, 1, 1, 1, 1)),
        ("hgx_h100_8gpu", 18, (0, 0, 0, 0, 1, 1, 1, 1)),
        ("dgx2_16x_v100", 6, None),
        ("hgx_a100_4gpu", 4, (3, 2, 1, 0)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_uniform_nvlink_matrices_read_as_nvswitch(name, links_per_gpu, numa):
    topo = topology_from_matrix(load_published(observed()[name], name))
    assert topo.nvswitch is not None and topo.nvswitch.links_per_gpu == links_per_gpu
    assert topo.nvlinks == ()
    assert topo.numa == numa
    pcie = topo.pcie_relation_matrix()
    n = topo.gpus.count
    if numa is not None:
        for a in range(n):
            for b in range(n):
                if a != b:
                    assert pcie[a][b] == ("NODE" if numa[a] == numa[b] else "SYS")


def test_hgx_h100_has_one_pix_nic_per_gpu():
    topo = topology_from_matrix(load_published(observed()["hgx_h100_8gpu"], "h100"), nic_gbps=400)
    assert [(n.name, n.gpus, n.numa) for n in topo.nics] == [
        (f"NIC{i}", (i,), 0 if i < 4 else 1) for i in range(8)]


def test_incomplete_entries_do_not_guess_nics():
    m = load_published(observed()["dgx_a100_40gb"], "dgx_a100_40gb")
    assert m.nics == ()
    assert m.cpu_affinity[4] is None  # cut off in the source


def test_whole_file_loads():
    matrices = load_published_file(shared_or_skip(OBSERVED))
    assert set(matrices) == {k for k in observed() if not k.startswith("_")}


@pytest.mark.parametrize(
    ("entry", "message", "kwargs"),
    [
        ({"gpu_matrix": [["X", None], ["NV1", "X"]]},
         "published topology t: gpu_matrix[0][1]: cell not given; pass fill_unknown=", {}),
        ({"gpu_matrix": [["X", "NV1"], ["NV1"]]}, "published topology t: gpu_matrix[1]: row must have 2 cells", {}),
        ({"gpu_matrix": [["X", "NV1"], ["NV1", "X"]], "cpu_affinity": ["0-3", "4-... (cut off)"]},
         "published topology t: cpu_affinity[1]: not a CPU list such as 0-11,24-35", {}),
        ({"gpu_matrix": [["X", "NV1"], ["NV1", "X"]], "nic": {"mlx5_0": ["PIX"]}},
         "published topology t: nic.mlx5_0: needs one cell per GPU (2)", {}),
        ({"gpu_matrix": [["X", "QQ"], ["QQ", "X"]]}, "published topology t: gpu_cells[0][1]: not a GPU-GPU cell", {}),
        ({"nodes": []}, "published topology t: needs `gpu_matrix`", {}),
    ],
    ids=["null-cell", "short-row", "cut-off-in-complete-entry", "short-nic-column", "bad-cell", "no-matrix"],
)
def test_published_errors(entry, message, kwargs):
    with pytest.raises(SpecError) as exc:
        load_published(entry, "t", **kwargs)
    assert str(exc.value).startswith(message)


def test_fill_unknown_stands_in_for_cells_not_shown():
    m = load_published({"complete": False, "gpu_matrix": [["X", None], [None, "X"]]}, "t", fill_unknown="SYS")
    assert m.gpu_cells == (("X", "SYS"), ("SYS", "X"))
