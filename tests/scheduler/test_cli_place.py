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


@pytest.mark.parametrize(("request_text", "message"), [
    ("pods: [{name: ml/a, gpus: 1}, {name: ml/b, gpus: 1}, {name: ml/a, gpus: 1}]\n",
     "pods[2].name: 'ml/a' is already used by pods[0]"),
    ("pods: [{name: ml/job/worker-1, gpus: 1}]\ngangs: [{name: ml/job, roles: [{name: worker, count: 2, gpus: 1}]}]\n",
     "pods[0].name: 'ml/job/worker-1' is already used by gangs[0] as member 1 of role 'worker'"),
    ("pods: [{name: ml/chat-1, gpus: 1}]\nreplica_sets: [{owner: ml/chat, replicas: 2, pod: {gpus: 1}}]\n",
     "pods[0].name: 'ml/chat-1' is already used by replica_sets[0] as replica 1"),
    ("gangs: [{name: ml/job, roles: [{name: w, gpus: 1}]}, {name: ml/job, roles: [{name: x, gpus: 1}]}]\n",
     "gangs[1].name: 'ml/job' is already used by gangs[0]"),
    ("gangs: [{name: a, roles: [{name: b/c, gpus: 1}]}, {name: a/b, roles: [{name: c, gpus: 1}]}]\n",
     "gangs[1].roles[0]: member 'a/b/c-0' is already used by gangs[0] as member 0 of role 'b/c'"),
    ("replica_sets: [{owner: ml/chat, replicas: 1, pod: {gpus: 1}}, {owner: ml/chat, replicas: 2, pod: {gpus: 1}}]\n",
     "replica_sets[1].owner: 'ml/chat' is already used by replica_sets[0]"),
    ("replica_sets: [{owner: ml/job/w, replicas: 1, pod: {gpus: 1}}]\ngangs: [{name: ml/job, roles: [{name: w, gpus: 1}]}]\n",
     "replica_sets[0].owner: replica 'ml/job/w-0' is already used by gangs[0] as member 0 of role 'w'"),
], ids=["pod-pod", "pod-gang-member", "pod-replica", "gang-gang", "gang-member-member", "replica-set-owner",
        "replica-gang-member"])
def test_a_name_used_twice_in_a_request_file_names_both_places(tmp_path, capsys, request_text, message):
    """Two requests under one name were both placed; each pod, gang and replica set has its own name."""
    path = tmp_path / "request.yaml"
    path.write_text(request_text)
    assert main(["place", "--cluster", "superpod-su", "--request", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"toposched: error: {path}: {message}")


def test_a_request_may_reuse_a_name_across_kinds_that_place_no_pod_of_that_name(tmp_path, capsys):
    """A gang named like a pod places `<gang>/<role>-<i>`, not the pod's name: no clash."""
    path = tmp_path / "request.yaml"
    path.write_text("pods: [{name: ml/job, gpus: 1}]\ngangs: [{name: ml/job, roles: [{name: w, gpus: 1}]}]\n")
    assert main(["place", "--cluster", "superpod-su", "--request", str(path), "--json"]) == 0
    outcomes = json.loads(capsys.readouterr().out)["outcomes"]
    assert [p["pod"] for o in outcomes for p in o["placements"]] == ["ml/job/w-0", "ml/job"]


def test_a_pod_listed_twice_in_the_state_file_is_still_refused(tmp_path, capsys):
    state = tmp_path / "state.yaml"
    state.write_text("allocations:\n  - {pod: ml/a, node: dgx-000, gpus: [0]}\n  - {pod: ml/a, node: dgx-001, gpus: [0]}\n")
    rc = main(["place", "--cluster", "superpod-su", "--state", str(state), "--request", str(EX / "inference-8gpu.yaml")])
    assert rc == 2
    assert f"{state}: allocations[1].pod: pod listed twice (got 'ml/a')" in capsys.readouterr().err


def test_prefer_island_is_not_a_replica_set_key(tmp_path, capsys):
    """`prefer_island` was accepted and read by nothing; a strict model refuses it as unknown."""
    path = tmp_path / "request.yaml"
    path.write_text("replica_sets: [{owner: ml/chat, replicas: 2, prefer_island: false, pod: {gpus: 2}}]\n")
    assert main(["place", "--cluster", "superpod-su", "--request", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"toposched: error: {path}: replica_sets[0].prefer_island: unknown key 'prefer_island'"), err


@pytest.mark.parametrize(("request_text", "path", "what"), [
    ("pods:\n  - {name: ml/a, gpus: 1}\n", "pods[0].name", "'ml/a'"),
    ("gangs:\n  - {name: ml/g, roles: [{name: w, count: 2, gpus: 1}]}\n", "gangs[0].roles[0]", "member 'ml/g/w-1'"),
    ("replica_sets:\n  - {owner: ml/r, replicas: 2, pod: {gpus: 1}}\n", "replica_sets[0].owner", "replica 'ml/r-0'"),
])
def test_a_pod_the_state_file_already_holds_is_not_placed_again(tmp_path, capsys, request_text, path, what):
    """Placing it anew would give it a second set of GPUs while the first stays allocated."""
    state = tmp_path / "state.yaml"
    state.write_text("allocations:\n  - {pod: ml/a, node: dgx-000, gpus: [0]}\n  - {pod: ml/g/w-1, node: dgx-001, gpus: [0]}\n"
                     "  - {pod: ml/r-0, node: dgx-002, gpus: [0]}\n")
    req = tmp_path / "req.yaml"
    req.write_text(request_text)
    rc = main(["place", "--cluster", "superpod-su", "--state", str(state), "--request", str(req)])
    assert rc == 2
    assert f"{req}: {path}: {what} is already allocated in {state}" in capsys.readouterr().err
