"""Real kube-scheduler traffic (../shared/fixtures/extender): it parses, and our replies have the accepted shape.

The fixtures: three Nodes (8 GPUs each; gpu-node-c NotReady) and one pod asking 4 GPUs,
sent by kube-scheduler with nodeCacheCapable false (full Nodes, NodeNames null).
"""

from __future__ import annotations

import http.client
import json

import pytest

from scheduler.extender import wire
from scheduler.extender.http import ExtenderServer

from .conftest import fixture_json, fixture_path, make_handlers


def request_line_and_headers(verb: str) -> tuple[str, str, dict[str, str]]:
    lines = fixture_path(f"{verb}.request-line-and-headers.txt").read_text().splitlines()
    method, path, _ = lines[0].split(" ")
    headers = dict(line.split(": ", 1) for line in lines[1:] if line.strip())
    return method, path, headers


@pytest.fixture
def served():
    """Our server at the captured urlPrefix (/scheduler), over a cache of the captured nodes."""
    nodes = fixture_json("filter.json")["Nodes"]["items"]
    handlers = make_handlers(nodes, levels=[])
    with ExtenderServer(handlers, url_prefix="/scheduler") as server:
        yield server, handlers


def send(server: ExtenderServer, verb: str) -> tuple[int, object]:
    """Replay the captured request: same method, path, headers and body bytes."""
    method, path, headers = request_line_and_headers(verb)
    body = fixture_path(f"{verb}.json").read_bytes()
    headers = {k: v for k, v in headers.items() if k not in ("Host", "Content-Length")}
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data)


@pytest.mark.parametrize("verb", ["filter", "prioritize", "bind"])
def test_captured_requests_parse(verb):
    args = wire.decode(verb, fixture_path(f"{verb}.json").read_bytes())
    if verb == "bind":
        assert (args.pod_name, args.pod_namespace, args.node) == ("gpu-pod", "default", "gpu-node-a")
        assert args.pod_uid == "f39556a2-3920-4532-b9d5-6e1a45a88b89"
    else:
        assert args.node_names is None  # nodeCacheCapable false
        assert args.pod["metadata"]["name"] == "gpu-pod"
        assert set(args.candidate_names()) <= {"gpu-node-a", "gpu-node-b", "gpu-node-c"}


@pytest.mark.parametrize("verb", ["filter", "prioritize", "bind"])
def test_captured_replies_parse_as_our_result_models(verb):
    """The stub's replies, which kube-scheduler accepted, are valid results by our models too."""
    doc = fixture_json(f"{verb}.response.json")
    if verb == "prioritize":
        assert [wire.HostPriority.model_validate(h).to_wire() for h in doc] == doc
    elif verb == "filter":
        assert wire.ExtenderFilterResult.model_validate(doc).to_wire() == doc
    else:
        assert wire.ExtenderBindingResult.model_validate(doc).to_wire() == doc


def _shape(value):
    """A JSON value's skeleton: key sets of objects, element shape of arrays, type names of scalars."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()} if len(value) < 20 else "object"
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_filter_reply_to_the_captured_request(served):
    server, _ = served
    status, reply = send(server, "filter")
    accepted = fixture_json("filter.response.json")
    assert status == 200
    assert set(reply) == set(accepted)
    assert reply["NodeNames"] is None  # not nodeCacheCapable: kube-scheduler reads Nodes
    assert [n["metadata"]["name"] for n in reply["Nodes"]["items"]] == ["gpu-node-a", "gpu-node-b"]
    assert reply["Nodes"]["items"] == accepted["Nodes"]["items"]  # node objects returned verbatim
    failed = {**reply["FailedNodes"], **reply["FailedAndUnresolvableNodes"]}
    assert set(failed) == {"gpu-node-c"}
    assert "not ready" in failed["gpu-node-c"]
    assert reply["Error"] == ""
    assert wire.ExtenderFilterResult.model_validate(reply)


def test_prioritize_reply_to_the_captured_request(served):
    server, _ = served
    send(server, "filter")
    status, reply = send(server, "prioritize")
    accepted = fixture_json("prioritize.response.json")
    assert status == 200
    assert _shape(reply) == _shape(accepted)
    assert {h["Host"] for h in reply} == {h["Host"] for h in accepted}
    assert all(isinstance(h["Score"], int) and 0 <= h["Score"] <= 10 for h in reply)


def test_bind_reply_to_the_captured_request(served):
    server, handlers = served
    send(server, "filter")
    status, reply = send(server, "bind")
    assert status == 200
    assert reply == fixture_json("bind.response.json") == {"Error": ""}
    assert handlers.binder.bound == {"default/gpu-pod": "gpu-node-a"}
    gpus = handlers.binder.annotations["default/gpu-pod"]["toposched.io/gpus"]
    assert len(gpus.split(",")) == 4
