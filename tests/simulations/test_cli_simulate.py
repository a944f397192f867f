"""``toposched simulate openb``: outputs in --out, the summary table, and user errors as exit 2."""

from __future__ import annotations

import json
import re

import pytest

from scheduler.cli import main
from scheduler.cli_simulate import parse_policies, parse_seeds

NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"n{i},64000,262144,4,T4\n" for i in range(6))
PODS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(
    f"p{i:03d},4000,8192,1,{(230, 470, 1000, 810)[i % 4]}\n" for i in range(40))


@pytest.fixture
def files(tmp_path):
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "openb_pod_list_tiny.csv"
    nodes.write_text(NODES)
    pods.write_text(PODS)
    return nodes, pods


def test_writes_summary_csvs_and_plots(files, tmp_path, capsys):
    nodes, pods = files
    out = tmp_path / "out"
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--policy", "BestFit,toposched",
               "--seeds", "1-2", "--inflate", "1.3", "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["trace"] == "openb_pod_list_tiny" and doc["seeds"] == [1, 2] and doc["inflate"] == 1.3
    for policy in ("BestFit", "toposched"):
        entry = doc["policies"][policy]
        assert set(entry["unallocated_gpu_pct"]) == {"100", "130"}
        assert set(entry["per_seed"]) == {"1", "2"}
        assert entry["unallocated_gpu_pct_sd"]["100"] is not None
        assert set(entry["first_failure_arrived_pct"]) == set(entry["failed_by_kind"])
        for first in entry["first_failure_arrived_pct"].values():
            assert 0 < first["min"] <= first["mean"] <= 130 and 1 <= first["runs"] <= 2
        for seed in (1, 2):
            assert (out / f"{policy}_seed{seed}.csv").read_text().startswith("event,pod,placed,node")
    for png in ("unallocated_vs_arrived.png", "fragmentation_vs_arrived.png", "unallocated_at_100.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "unalloc@100%" in table and "toposched" in table


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "Magic"], "--policy: unknown policy 'Magic'"),
    (["--seeds", "9-3"], "--seeds: bad seed list '9-3'"),
    (["--inflate", "0"], "--inflate: inflate 0.0 out of range"),
    (["--seeds=-3"], "--seeds: seed -3 is negative"),
    (["--seeds", "0-1000000000"], "--seeds: more than 10000 seeds"),
])
def test_bad_arguments_exit_2(files, tmp_path, capsys, args, message):
    nodes, pods = files
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--out", str(tmp_path), "--quiet", *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_bad_row_is_reported_with_file_and_line(files, tmp_path, capsys):
    nodes, pods = files
    pods.write_text(PODS + "bad,1,1,1,0\n")
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert f"{pods}:42: gpu_milli: 0 out of range" in capsys.readouterr().err


def test_argument_parsers():
    assert parse_seeds("42-45") == [42, 43, 44, 45]
    assert parse_seeds("42, 44,42") == [42, 44]
    assert parse_policies("all")[-1] == "toposched"
    assert parse_policies("fgd,BESTFIT") == ["FGD", "BestFit"]


def test_bound_is_in_the_summary_and_no_policy_beats_it(files, tmp_path, capsys):
    """--bound: the relaxed optimum per seed; the simulated policies leave at least that much unallocated."""
    nodes, pods = files
    out = tmp_path / "out"
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--policy", "all",
               "--seeds", "1-3", "--out", str(out), "--quiet", "--no-plots", "--bound"])
    assert rc == 0
    doc = json.loads((out / "summary.json").read_text())
    bound = doc["bound"]
    assert set(bound["per_seed"]) == {"1", "2", "3"}
    for seed, b in bound["per_seed"].items():
        assert b["status"] == "optimal" and b["point"] == 100
        assert 0 <= b["any"] <= b["all_shared_placed"] <= 100
        for policy, entry in doc["policies"].items():
            assert entry["per_seed"][seed]["100"] >= b["any"] - 0.005, (policy, seed)  # 2 decimals there
    assert "least possible @100%" in capsys.readouterr().out


def test_variant_runs_on_the_derived_list_and_is_recorded(files, tmp_path):
    nodes, pods = files
    out = tmp_path / "out"
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--policy", "FGD",
               "--seeds", "1", "--variant", "gpuspec50", "--variant-seed", "3", "--out", str(out), "--quiet",
               "--no-plots"])
    assert rc == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["trace"] == "openb_pod_list_tiny+gpuspec50"
    assert doc["variant"]["name"] == "gpuspec50" and doc["variant"]["seed"] == 3
    assert doc["variant"]["gpuspec_pct"] == 50.0 and doc["trace_pods"] == 40


def test_bad_variant_exits_2(files, tmp_path, capsys):
    nodes, pods = files
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--variant", "cpu50x",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "--variant: unknown variant 'cpu50x'" in capsys.readouterr().err


def test_a_pod_list_without_gpu_pods_is_refused_instead_of_inflated_forever(files, tmp_path, capsys):
    nodes, pods = files
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(f"c{i},4000,8192,0,0\n" for i in range(5)))
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "the pod list requests no GPU" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused_before_any_run(files, tmp_path, capsys, monkeypatch):
    import simulations.fillup as fillup

    nodes, pods = files
    out = tmp_path / "taken"
    out.write_text("not a folder")
    monkeypatch.setattr(fillup, "run_fillup", lambda *a, **k: pytest.fail("ran before checking --out"))
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--out", str(out), "--quiet"])
    assert rc == 2
    assert "--out: cannot write the report there" in capsys.readouterr().err


def test_a_point_some_seeds_never_reach_is_marked_in_the_table(files, tmp_path, capsys):
    nodes, pods = files
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"  # 24 GPUs; 3- and 4-GPU pods skip some points
                    + "".join(f"w{i},4000,8192,{3 + i % 2},1000\n" for i in range(5)))
    rc = main(["simulate", "openb", "--pods", str(pods), "--nodes", str(nodes), "--policy", "FGD", "--seeds", "1-6",
               "--out", str(tmp_path), "--quiet", "--no-plots"])
    assert rc == 0
    doc = json.loads((tmp_path / "summary.json").read_text())
    runs = doc["policies"]["FGD"]["unallocated_gpu_pct_runs"]
    assert 0 < runs["100"] < 6
    out = capsys.readouterr().out
    assert re.search(r"FGD +[0-9.]+ \+- *[0-9.]+\*", out) and "* over the seeds whose runs" in out
