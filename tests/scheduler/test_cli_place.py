"""`toposched place`: the examples run, JSON has per-member node and GPUs, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.cli import main

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def test_busy_superpod_gets_the_free_node_for_an_8_gpu_pod(capsys):
    rc = main(["place", "--cluster", "superpod-su", "--state", str(EX / "state-superpod-busy.yaml"),
               "--request", str(EX / "inference-8gpu.yaml"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    (o,) = out["outcomes"]
    assert o["placed"] and o["solver"]["status"] == "GREEDY"
    (p,) = o["placements"]
    # the state leaves dgx-004, dgx-017 and dgx-029 wholly free (dgx-011 has failed)
    assert p["node"] in {"dgx-004", "dgx-017", "dgx-029"} and p["gpus"] == list(range(8))


def test_gang_example_reports_solver_status_and_one_rack(capsys):
    rc = main(["place", "--cluster", "fabric-4096", "--request", str(EX / "gang-32x8-rack.yaml"), "--json"])
    assert rc == 0
    (o,) = json.loads(capsys.readouterr().out)["outcomes"]
    assert o["solver"]["status"] in ("OPTIMAL", "FEASIBLE")
    assert len(o["placements"]) == 32
    assert len({p["node"] for p in o["placements"]}) == 32  # one member per node
    assert all(p["gpus"] == list(range(8)) for p in o["placements"])
    # fabric-4096 names nodes node-0000.. with 32 nodes per rack
    assert len({int(p["node"].split("-")[1]) // 32 for p in o["placements"]}) == 1


def test_replica_example_spreads_over_scalable_units(capsys):
    assert main(["place", "--cluster", "superpod-4su", "--request", str(EX / "inference-replicas.yaml")]) == 0
    nodes = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("  serving/chat-")]
    assert len(nodes) == 4 and len(set(nodes)) == 4


def test_malformed_request_names_file_and_path(tmp_path, capsys):
    req = tmp_path / "r.yaml"
    req.write_text("pods:\n  - {name: a, gpus: 2, gpu_milli: 300}\n")
    assert main(["place", "--cluster", "superpod-su", "--request", str(req)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"toposched: error: {req}: pods[0]: a shared GPU request")


def test_unknown_key_points_at_the_request_docs(tmp_path, capsys):
    req = tmp_path / "r.yaml"
    req.write_text("pod: []\n")
    assert main(["place", "--cluster", "superpod-su", "--request", str(req)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'pod'" in err and "see docs/requests.md" in err


def test_negative_time_limit_is_refused(capsys):
    rc = main(["place", "--cluster", "superpod-su", "--request", str(EX / "inference-8gpu.yaml"), "--time-limit", "-1"])
    assert rc == 2
    assert "gang.time_limit_s" in capsys.readouterr().err


def test_state_gpu_out_of_range(tmp_path, capsys):
    state = tmp_path / "s.yaml"
    state.write_text("allocations:\n  - {pod: x, node: dgx-000, gpus: [9]}\n")
    rc = main(["place", "--cluster", "superpod-su", "--state", str(state), "--request", str(EX / "inference-8gpu.yaml")])
    assert rc == 2
    assert "allocations[0].gpus: GPU 9 out of range" in capsys.readouterr().err


def test_the_request_file_is_the_mix_fragmentation_packs_against(tmp_path, capsys):
    from models.cluster import load_cluster
    from models.spec import parse_document, read_text, validate_model
    from models.state import StateFile
    from models.topology import build_arrays
    from scheduler.cli_place import file_mix, load_request
    from scheduler.engine import place
    from scheduler.ledger import Ledger, load_state

    state = tmp_path / "state.yaml"
    state.write_text("allocations:\n  - {pod: lab/running, node: dgx-005, gpus: [3], gpu_milli: 500}\n")
    req = tmp_path / "r.yaml"
    req.write_text("pods:\n  - {name: lab/whole, gpus: 1}\n  - {name: lab/half, gpus: 1, gpu_milli: 500}\n")
    assert main(["place", "--cluster", "superpod-su", "--state", str(state), "--request", str(req), "--json"]) == 0
    whole, half = json.loads(capsys.readouterr().out)["outcomes"]
    # a fresh GPU would leave 500m the whole-GPU pod's kind cannot use: the half-used one is filled
    assert (half["placements"][0]["node"], half["placements"][0]["gpus"]) == ("dgx-005", [3])
    mix = file_mix(load_request(str(req)))
    assert {(k.gpus, k.gpu_milli): f for k, f in mix.typical} == {(1, 1000): 0.5, (1, 500): 0.5}
    # the control: the engine without a mix sends it to the first node's lowest free GPU
    ledger = Ledger(build_arrays(load_cluster("superpod-su")))
    load_state(ledger, validate_model(StateFile, parse_document(read_text(str(state)), "s"), "s"), "s")
    plain = place(ledger.snapshot(), load_request(str(req)))
    assert plain.outcomes[1].placements[0].node != "dgx-005"


@pytest.mark.parametrize(("config", "message"), [
    ("seed: -1\n", "seed: Input should be greater than or equal to 0"),
    ("tie_break: sideways\n", "tie_break: Input should be 'first', 'random' or 'ranked'"),
    ("gang: {solver: magic}\n", "gang.solver: Input should be 'cpsat' or 'greedy'"),
    ("plugins: [{name: binpack, args: {bogus: 1}}]\n", "plugin arguments not accepted"),
], ids=["negative-seed", "tie-break", "solver", "plugin-args"])
def test_config_values_the_engine_cannot_use_are_refused(tmp_path, capsys, config, message):
    path = tmp_path / "placement.yaml"
    path.write_text(config)
    assert main(["place", "--cluster", "superpod-su", "--request", str(EX / "inference-8gpu.yaml"),
                 "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_profile_replaces_the_plugins_of_the_config_file(tmp_path, capsys):
    path = tmp_path / "placement.yaml"
    path.write_text("plugins: [{name: binpack}]\n")
    assert main(["place", "--cluster", "superpod-su", "--request", str(EX / "inference-8gpu.yaml"),
                 "--config", str(path), "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(("request_text", "where"), [
    ("pods: [{name: a, gpus: 1, spread_level: rack}]\n", "pods[0].spread_level"),
    ("replica_sets: [{owner: ml/chat, replicas: 2, spread_level: rack, pod: {gpus: 1}}]\n",
     "replica_sets[0].spread_level"),
    ("gangs: [{name: g, roles: [{name: w, count: 2, gpus: 8}], required_level: rack}]\n", "gangs[0].required_level"),
], ids=["pod-spread", "replica-spread", "gang-required"])
def test_a_level_the_cluster_does_not_have_is_an_input_error(tmp_path, capsys, request_text, where):
    path = tmp_path / "request.yaml"
    path.write_text(request_text)
    assert main(["place", "--cluster", "superpod-su", "--request", str(path)]) == 2
    assert f"{where}: unknown level 'rack'; use one of pod, su, host" in capsys.readouterr().err
