"""``toposched cluster show|draw|presets`` and the CLI's error contract, through ``main([...])``."""

from __future__ import annotations

import importlib
import json

import pytest
import yaml

from models import presets
from models.topology import build_arrays
from scheduler import cli, cli_cluster
from scheduler.cluster_draw import _count_leaves, _domain_tree
from tests.builders import make_cluster, make_group, make_node, make_topology

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    """Two racks: a custom 4-GPU node with two NVLink pairs in r1, three DGX H100 in r2."""
    pairs = make_topology(4, "A100", nvlinks=[(0, 1, 4), (2, 3, 4)], numa=[0, 0, 1, 1],
                          nics=[{"name": "ib0", "bandwidth_gbps": 200, "gpus": [0, 1], "rail": 0}])
    spec = make_cluster(make_node("big-0", topology=pairs, rack="r1"),
                        groups=[make_group("gpu-{i}", 3, rack="r2")], name="two-racks")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# -- the top level ------------------------------------------------------------------------


def test_help_lists_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "usage: toposched" in out and "cluster" in out


def test_no_command_prints_usage_and_fails(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: toposched" in err


def test_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "cluster", "show")
    assert code == 2 and "SPEC_OR_PRESET" in err


def test_every_registered_command_module_has_the_interface(capsys):
    for name, module_name in cli.COMMANDS:
        module = importlib.import_module(module_name)
        assert callable(module.add_parser) and callable(module.run), module_name
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and out.startswith(f"usage: toposched {name}"), name


# -- errors: a message, never a traceback ---------------------------------------------------


def test_bad_spec_exits_2_with_the_spec_error(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - {name: a, type: dgx-h100, colour: red}\n")
    code, out, err = run(capsys, "cluster", "show", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"toposched: error: {path}: nodes[0].colour: unknown key 'colour'")
    assert "Traceback" not in err


def test_unknown_preset_exits_2(capsys):
    code, _, err = run(capsys, "cluster", "show", "superpod-9su")
    assert code == 2
    assert err.startswith("toposched: error: 'superpod-9su' is neither a spec file nor a preset; use a path, a cluster preset (")
    assert "superpod-4su" in err and err.count("\n") == 1


def test_unexpected_error_exits_1_in_one_line(capsys, monkeypatch):
    def boom(_spec):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_cluster, "load_cluster", boom)
    monkeypatch.delenv("TOPOSCHED_DEBUG", raising=False)
    code, _, err = run(capsys, "cluster", "show", "superpod-su")
    assert code == 1
    assert err.startswith("toposched: internal error: RuntimeError: boom")
    assert "Traceback" not in err and err.count("\n") == 1


# -- show ---------------------------------------------------------------------------------


def test_show_text(capsys, spec_file):
    code, out, _ = run(capsys, "cluster", "show", str(spec_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "cluster two-racks"
    assert "  4 nodes, 28 GPUs" in lines
    assert "  rack: 2 domains, 1-3 nodes  (label topology.toposched.io/rack)" in lines
    assert "    r1 (1), r2 (3)" in lines
    assert "  custom: 1 node, 4x A100" in lines
    assert "    NVLink3 mesh, up to 4 links/pair; NVLink islands [0-1] [2-3]; NUMA 0,1; 1 NIC (200 Gb/s)" in lines
    assert "  dgx-h100: 3 nodes, 8x NVIDIA-H100-80GB-HBM3" in lines
    assert lines[-1] == "NVLink cliques: none"


def test_show_keeps_node_types_with_the_same_gpus_but_other_resources_apart(capsys, tmp_path):
    """Types were grouped by topology alone: `big` (more CPU, memory, rdma/ib) showed as `small`."""
    four = make_topology(4, "A100")
    spec = make_cluster(
        make_node("s-0", type="small"), make_node("b-0", type="big"), make_node("b-1", type="big"),
        {**make_node("b-2", type="big"), "cpu_milli": 96000},  # a node that overrides its type
        node_types={"small": {"cpu_milli": 32000, "memory_mib": 262144, "topology": four},
                    "big": {"cpu_milli": 128000, "memory_mib": 1048576, "extended_resources": {"rdma/ib": 4},
                            "topology": four}})
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out, _ = run(capsys, "cluster", "show", str(path))
    assert code == 0
    types = out.split("node types:\n")[1].split("\n\n")[0].splitlines()
    assert [line for line in types if not line.startswith("    ") or "per node" in line] == [
        "  small: 1 node, 4x A100", "    per node: 32 CPUs, 256 GiB memory, 110 pods",
        "  big: 2 nodes, 4x A100", "    per node: 128 CPUs, 1024 GiB memory, 110 pods, rdma/ib 4",
        "  big: 1 node, 4x A100", "    per node: 96 CPUs, 1024 GiB memory, 110 pods, rdma/ib 4",
    ]
    code, out, _ = run(capsys, "cluster", "show", str(path), "--json")
    got = [(t["name"], t["nodes"], t["cpu_milli"], t["memory_mib"], t["extended_resources"])
           for t in json.loads(out)["node_types"]]
    assert got == [("small", 1, 32000, 262144, {}), ("big", 2, 128000, 1048576, {"rdma/ib": 4}),
                   ("big", 1, 96000, 1048576, {"rdma/ib": 4})]


def test_show_json_preset(capsys):
    code, out, _ = run(capsys, "cluster", "show", "nvl72-rack", "--json")
    assert code == 0
    s = json.loads(out)
    assert (s["nodes"], s["gpus"], s["rail_level"]) == (144, 576, "su")
    assert s["gpus_by_model"] == {"NVIDIA-GB200": {"nodes": 144, "gpus": 576}}
    assert [(lv["name"], len(lv["domains"])) for lv in s["levels"]] == [("su", 1), ("rack", 8)]
    assert s["levels"][1]["domains"][0] == {"name": "su0/rack0", "nodes": 18}
    assert s["cliques"]["count"] == 8 and set(s["cliques"]["sizes"].values()) == {18}
    (t,) = s["node_types"]
    assert (t["name"], t["nvswitch"], t["nvlink_generation"], t["islands"]) == ("gb200-nvl72", True, 5, [[0, 1, 2, 3]])


def test_show_large_preset_folds_the_domain_list(capsys):
    code, out, _ = run(capsys, "cluster", "show", "fabric-4096")
    assert code == 0
    assert "  rack: 128 domains, 32 nodes each  (label topology.toposched.io/rack)" in out
    assert "... 120 more" in out
    assert "  block: 8 domains, 512 nodes each, 2:1 above" in out


# -- presets ------------------------------------------------------------------------------


def test_presets_lists_node_types_and_clusters(capsys):
    code, out, _ = run(capsys, "cluster", "presets")
    assert code == 0
    for name in presets.node_type_names() + presets.cluster_names():
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name


def test_presets_json(capsys):
    code, out, _ = run(capsys, "cluster", "presets", "--json")
    listing = json.loads(out)
    assert code == 0
    assert [t["name"] for t in listing["node_types"]] == presets.node_type_names()
    by_name = {c["name"]: c["description"] for c in listing["clusters"]}
    assert by_name["openb"].startswith("Alibaba openb")
    assert "32 x dgx-h100" in by_name["superpod-su"]


# -- draw ---------------------------------------------------------------------------------


def test_draw_writes_a_png(capsys, spec_file, tmp_path):
    out_png = tmp_path / "c.png"
    code, out, _ = run(capsys, "cluster", "draw", str(spec_file), "-o", str(out_png), "--node", "big-0")
    assert code == 0 and out == f"wrote {out_png} (node big-0)\n"
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_draw_unknown_node_exits_2(capsys, spec_file, tmp_path):
    code, _, err = run(capsys, "cluster", "draw", str(spec_file), "-o", str(tmp_path / "c.png"), "--node", "nope")
    assert code == 2
    assert err.startswith("toposched: error: node 'nope' is not in cluster 'two-racks' (nodes: big-0, gpu-0,")


def test_draw_missing_folder_exits_2(capsys, spec_file, tmp_path):
    target = tmp_path / "no" / "c.png"
    code, _, err = run(capsys, "cluster", "draw", str(spec_file), "-o", str(target))
    assert code == 2 and "does not exist" in err and not target.exists()


def test_draw_rejects_unknown_image_type(capsys, spec_file, tmp_path):
    code, _, err = run(capsys, "cluster", "draw", str(spec_file), "-o", str(tmp_path / "c.bmp"))
    assert code == 2 and "unsupported image type '.bmp'" in err


def test_large_tree_is_folded_around_the_drawn_node():
    """fabric-4096: the path to the node stays open, siblings fold into '+k more' boxes."""
    cluster = presets.cluster("fabric-4096")
    arrays = build_arrays(cluster)
    tree = _domain_tree(cluster, arrays, arrays.node_index["node-1000"])
    path, item = [], tree
    while item.children:
        (item,) = [c for c in item.children if c.highlight]
        path.append(item.label)
    assert path == ["block block1", "rack rack031", "node-1000"]
    assert _count_leaves(tree) <= 3 * 5
    folded = [c.label for c in tree.children if c.folded]
    assert folded == ["+4 more blocks"]


def test_small_tree_is_drawn_whole(spec_file):
    from models.cluster import load_cluster

    cluster = load_cluster(spec_file)
    tree = _domain_tree(cluster, build_arrays(cluster), 0)
    assert [c.label for c in tree.children] == ["rack r1", "rack r2"]
    assert [n.label for n in tree.children[1].children] == ["gpu-0", "gpu-1", "gpu-2"]
