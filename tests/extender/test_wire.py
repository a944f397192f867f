"""The extender wire models: PascalCase out, any case in, null-tolerant, strict types, clear errors."""

from __future__ import annotations

import json

import pytest

from scheduler.extender import wire
from scheduler.extender.wire import WireError, decode


def test_filter_args_accept_pascal_case_with_node_names():
    args = decode("filter", b'{"Pod": {"metadata": {"name": "p"}}, "Nodes": null, "NodeNames": ["a", "b"]}')
    assert args.pod == {"metadata": {"name": "p"}}
    assert args.nodes is None
    assert args.candidate_names() == ["a", "b"]


def test_any_letter_case_is_accepted_like_go():
    """Go's decoder matches keys case-insensitively; so do we."""
    args = decode("bind", b'{"podname": "w-0", "PODNAMESPACE": "ml", "podUid": "u1", "node": "n1"}')
    assert (args.pod_name, args.pod_namespace, args.pod_uid, args.node) == ("w-0", "ml", "u1", "n1")


def test_duplicate_keys_in_different_case_last_wins():
    args = decode("bind", b'{"PodName": "first", "podname": "second", "PodNamespace": "ns", "Node": "n"}')
    assert args.pod_name == "second"


def test_full_nodes_give_candidate_names_in_order():
    body = {"Pod": {}, "Nodes": {"metadata": {}, "items": [{"metadata": {"name": "n2"}}, {"metadata": {"name": "n1"}}]},
            "NodeNames": None}
    args = decode("filter", json.dumps(body).encode())
    assert args.candidate_names() == ["n2", "n1"]


def test_unknown_keys_are_ignored():
    args = decode("filter", b'{"Pod": {}, "NodeNames": [], "FutureField": 1}')
    assert args.candidate_names() == []


def test_null_optional_maps_are_absent():
    args = decode("preempt", b'{"Pod": {}, "NodeNameToVictims": null, "NodeNameToMetaVictims": null}')
    assert args.meta_victims() == {}


def test_full_victims_convert_to_meta_form():
    body = {"Pod": {}, "NodeNameToVictims": {"n1": {"Pods": [{"metadata": {"uid": "u1"}}], "NumPDBViolations": 2}}}
    args = decode("preempt", json.dumps(body).encode())
    meta = args.meta_victims()
    assert meta["n1"].to_wire() == {"Pods": [{"UID": "u1"}], "NumPDBViolations": 2}


@pytest.mark.parametrize(("verb", "body", "status", "message"), [
    ("filter", b'{"Pod": {}, "NodeNames": ["a"', 400, "malformed JSON (truncated)"),
    ("filter", b'{"Pod": {} "x": 1}', 400, "malformed JSON (line 1 column 12)"),
    ("filter", b"\xff\xfe", 400, "not UTF-8"),
    ("filter", b"[1, 2]", 422, "the body must be a JSON object, not array"),
    ("filter", b"{}", 422, "Pod: required"),
    ("filter", b'{"Pod": null}', 422, "Pod: required"),
    ("filter", b'{"Pod": "x"}', 422, "Pod: expected an object, got string"),
    ("filter", b'{"Pod": {}, "NodeNames": [1]}', 422, "NodeNames[0]: expected a string, got number"),
    ("filter", b'{"Pod": {}, "Nodes": {"items": [{"metadata": {}}]}}', 422, "Nodes.items[0].metadata.name: a Node needs"),
    ("filter", b'{"Pod": {}, "Nodes": {"items": "no"}}', 422, "Nodes.items: expected an array, got string"),
    ("bind", b'{"PodName": "a", "PodNamespace": "b"}', 422, "Node: required"),
    ("bind", b'{"PodName": 7, "PodNamespace": "b", "Node": "n"}', 422, "PodName: expected a string, got number"),
    ("bind", b'{"PodName": "", "PodNamespace": "b", "Node": "n"}', 422, "PodName: must not be empty"),
    ("preempt", b'{"Pod": {}, "NodeNameToMetaVictims": {"n": {"Pods": [{"UID": 1}]}}}', 422,
     "NodeNameToMetaVictims.n.Pods[0].UID: expected a string, got number"),
    ("preempt", b'{"Pod": {}, "NodeNameToMetaVictims": {"n": {"NumPDBViolations": "1"}}}', 422,
     "NodeNameToMetaVictims.n.NumPDBViolations: expected an integer, got string"),
], ids=["truncated", "syntax", "binary", "array", "no-pod", "null-pod", "pod-string", "name-number",
        "nameless-node", "items-string", "bind-no-node", "bind-number", "bind-empty", "uid-number", "pdb-string"])
def test_bad_bodies_name_the_field_and_problem(verb, body, status, message):
    with pytest.raises(WireError) as err:
        decode(verb, body)
    assert err.value.status == status
    assert message in str(err.value)


def test_filter_result_serialises_every_key_pascal_case_with_nulls():
    out = wire.ExtenderFilterResult(node_names=["a"], failed_nodes={"b": "why"}).to_wire()
    assert out == {"Nodes": None, "NodeNames": ["a"], "FailedNodes": {"b": "why"},
                   "FailedAndUnresolvableNodes": {}, "Error": ""}


def test_host_priority_is_bounded_0_to_10():
    assert json.loads(wire.HostPriority(host="a", score=10).to_json_bytes()) == {"Host": "a", "Score": 10}
    with pytest.raises(ValueError):
        wire.HostPriority(host="a", score=11)


def test_preemption_result_uses_meta_form():
    res = wire.ExtenderPreemptionResult(node_name_to_meta_victims={
        "n1": wire.MetaVictims(pods=[wire.MetaPod(uid="u")], num_pdb_violations=0)})
    assert res.to_wire() == {"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "u"}], "NumPDBViolations": 0}}}
