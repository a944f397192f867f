"""Generated bodies to every verb: each answer is 200 with a valid result or a 4xx JSON error; never a 5xx.

Bodies: any JSON, near-valid documents (random key case, pods with odd quantities,
annotations and types), captured kube-scheduler requests cut short or with a subtree
replaced, raw bytes, and bodies over the size cap. ~300 examples in CI; the slow run
sends 10,000.
"""

from __future__ import annotations

import functools
import http.client
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.extender import wire
from scheduler.extender.http import ExtenderServer

from .conftest import fixture_json, gpu_pod, k8s_node, make_handlers

VERBS = ("filter", "prioritize", "bind", "preempt")
CAP = 64 * 1024
OK_ERRORS = {400, 413, 415, 422}
RESULT = {"filter": wire.ExtenderFilterResult, "bind": wire.ExtenderBindingResult,
          "preempt": wire.ExtenderPreemptionResult}

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
quantities = st.one_of(st.sampled_from(["1", "2", "4", "8", "500m", "1Gi", "0", "-1", "abc", "1e3", "9999999", "0.5"]),
                       st.integers(-3, 100), st.floats(allow_nan=False, allow_infinity=False), st.none(), st.booleans())
resource_maps = st.dictionaries(st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "example.com/fpga"]), quantities,
                                max_size=3)
containers = st.fixed_dictionaries({"name": st.text(max_size=4)}, optional={
    "resources": st.one_of(st.fixed_dictionaries({}, optional={"requests": resource_maps, "limits": resource_maps}),
                           json_values),
    "ports": st.lists(st.fixed_dictionaries({"hostPort": st.integers(0, 9)}), max_size=2),
    "restartPolicy": st.sampled_from(["Always", "Never"])})
annotation_keys = st.sampled_from(["toposched.io/gang", "toposched.io/gang-size", "toposched.io/gang-min-members",
                                   "toposched.io/gpu-milli", "toposched.io/required-level", "toposched.io/extender",
                                   "toposched.io/assignment", "toposched.io/gpus", "scheduling.k8s.io/group-name"])
annotation_values = st.one_of(st.sampled_from(["2", "1", "0", "-4", "rack", "host", "ignore", "true", "g", "{}",
                                               "500", "100000000"]), st.text(max_size=6))
pods = st.fixed_dictionaries({
    "metadata": st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(["p", "w-0", "w-1"]), st.text(max_size=6), json_values),
        "namespace": st.one_of(st.just("ml"), st.text(max_size=4)),
        "uid": st.one_of(st.sampled_from(["u1", "u2"]), json_values),
        "labels": st.one_of(st.dictionaries(st.text(max_size=6), st.text(max_size=4), max_size=2), json_values),
        "annotations": st.one_of(st.dictionaries(annotation_keys, annotation_values, max_size=4), json_values)}),
    "spec": st.one_of(st.fixed_dictionaries({}, optional={
        "containers": st.one_of(st.lists(containers, max_size=3), json_values),
        "initContainers": st.lists(containers, max_size=1),
        "priority": st.one_of(st.integers(-10, 10), json_values),
        "nodeSelector": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2), json_values),
        "tolerations": st.one_of(st.lists(st.dictionaries(st.sampled_from(["key", "operator", "effect", "value"]),
                                                          st.text(max_size=6)), max_size=2), json_values),
        "affinity": json_values}), json_values),
})
node_names = st.lists(st.one_of(st.sampled_from(["n1", "n2", "n3", "ghost"]), st.text(max_size=5)), max_size=5)


def _recase(key: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if (flips[i % len(flips)] if flips else False) else c for i, c in enumerate(key))


@st.composite
def near_valid(draw: Any, verb: str) -> dict[str, Any]:
    """A document with the verb's keys (random case), plausible or odd values, maybe extra keys."""
    flips = draw(st.lists(st.booleans(), max_size=6))
    if verb in ("filter", "prioritize"):
        doc: dict[str, Any] = {"Pod": draw(st.one_of(pods, json_values)),
                               "NodeNames": draw(st.one_of(node_names, st.none(), json_values))}
        if draw(st.booleans()):
            items = [k8s_node(n) for n in draw(st.lists(st.sampled_from(["n1", "n2", "n3", "n4"]), max_size=3))]
            doc["Nodes"] = draw(st.one_of(st.just({"metadata": {}, "items": items}), json_values, st.none()))
    elif verb == "bind":
        doc = {k: draw(st.one_of(st.sampled_from(["p", "ml", "n1", "u1", "ghost", ""]), json_values))
               for k in ("PodName", "PodNamespace", "PodUID", "Node") if draw(st.integers(0, 5))}
    else:
        victims = st.fixed_dictionaries({}, optional={
            "Pods": st.one_of(st.lists(st.fixed_dictionaries({"UID": st.one_of(st.text(max_size=3), json_values)}),
                                       max_size=3), json_values),
            "NumPDBViolations": st.one_of(st.integers(-(2**65), 2**65), json_values)})
        doc = {"Pod": draw(st.one_of(pods, json_values)),
               "NodeNameToMetaVictims": draw(st.one_of(st.dictionaries(st.sampled_from(["n1", "n2", "x"]), victims,
                                                                       max_size=3), json_values))}
    if draw(st.booleans()):
        doc[draw(st.text(max_size=6))] = draw(json_values)
    return {_recase(k, flips): v for k, v in doc.items()}


def _replace_subtree(doc: Any, path: list[int], value: Any) -> Any:
    """``doc`` with the node reached by following ``path`` (indices into keys/items) replaced."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    if isinstance(doc, dict):
        keys = list(doc)
        k = keys[path[0] % len(keys)]
        return {**doc, k: _replace_subtree(doc[k], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _replace_subtree(doc[i], path[1:], value), *doc[i + 1:]]


@functools.cache
def _captured(verb: str) -> tuple[Any, bytes]:
    doc = fixture_json(f"{verb}.json")
    return doc, json.dumps(doc).encode()


@st.composite
def mutated_fixture(draw: Any) -> tuple[str, bytes]:
    """A captured kube-scheduler request, cut short or with one subtree replaced."""
    verb = draw(st.sampled_from(["filter", "prioritize", "bind"]))
    doc, raw = _captured(verb)
    if draw(st.booleans()):
        return verb, raw[: draw(st.integers(0, len(raw) - 1))]
    path = draw(st.lists(st.integers(0, 50), max_size=8))
    return verb, json.dumps(_replace_subtree(doc, path, draw(json_values))).encode()


@st.composite
def requests(draw: Any) -> tuple[str, bytes]:
    verb = draw(st.sampled_from(VERBS))
    kind = draw(st.integers(0, 9))
    if kind <= 4:
        return verb, json.dumps(draw(near_valid(verb))).encode()
    if kind <= 6:
        return draw(mutated_fixture())
    if kind == 7:
        return verb, json.dumps(draw(json_values)).encode()
    if kind == 8:
        return verb, draw(st.binary(max_size=64))
    return verb, b'{"Pod": {"metadata": {"name": "' + b"x" * (CAP + draw(st.integers(1, 100))) + b'"}}}'


@pytest.fixture(scope="module")
def server():
    """One server for every example: real handlers over a small cache (the fixture's nodes plus n1-n3)."""
    nodes = [*fixture_json("filter.json")["Nodes"]["items"], k8s_node("n1"), k8s_node("n2"), k8s_node("n3", 4)]
    bound = [gpu_pod("busy", 2, node="n1", on_gpus=(0, 1))]
    with ExtenderServer(make_handlers(nodes, bound, levels=[]), url_prefix="/x", max_body_bytes=CAP,
                        read_timeout_s=2.0) as s:
        yield s


class Client:
    """A keep-alive connection that reconnects after the server closed it."""

    def __init__(self, server: ExtenderServer) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection(*server.address, timeout=30)

    def post(self, verb: str, body: bytes) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request("POST", f"/x/{verb}", body=body, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection") == "close":
                    self._reconnect()
                return resp.status, data
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
                self._reconnect()
        raise AssertionError("unreachable")

    def _reconnect(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(*self.server.address, timeout=30)


def check(client: Client, verb: str, body: bytes) -> None:
    status, data = client.post(verb, body)
    doc = json.loads(data)
    if status == 200:
        if verb == "prioritize":
            assert isinstance(doc, list)
            for h in doc:
                wire.HostPriority.model_validate(h)
        else:
            RESULT[verb].model_validate(doc)
        return
    assert status in OK_ERRORS, f"{verb} answered {status}: {doc}"
    assert isinstance(doc.get("Error"), str) and doc["Error"] and doc["Code"] == status


def _run(server: ExtenderServer, examples: int) -> None:
    client = Client(server)

    @settings(max_examples=examples, deadline=None, derandomize=examples < 1000, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(requests())
    def one(req: tuple[str, bytes]) -> None:
        check(client, *req)

    one()
    # still serving
    status, _ = client.post("filter", b'{"Pod": {}, "NodeNames": ["n1"]}')
    assert status == 200


def test_generated_bodies_never_get_a_5xx(server):
    _run(server, 300)


@pytest.mark.slow
def test_generated_bodies_never_get_a_5xx_10k(server):
    _run(server, 10_000)
