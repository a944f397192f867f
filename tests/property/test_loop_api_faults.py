"""The live loop when the API refuses: bindings and deletions that fail (server errors,
conflicts, forbidden), nodes that fail, a step on which the replica does not lead, and a
job controller that re-creates what is deleted.

Whatever the refusals, once they stop and time passes: no gang is bound short of its
minimum, no GPU is held by two pods (by the assignment annotations on the cluster and by the
ledger), nothing stays bound on a failed node, the cache's gang index matches its pods, and
every pending pod of ours is still known to the queue (nothing accepted is lost).
Cluster: two racks of three 8-GPU nodes, the in-memory cluster, bindings inline.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.failures import NodeFailureConfig
from scheduler.queue import gang_unit_key
from tests.integration import objects as o
from tests.scheduler.rig import LoopRig

ASSIGNMENT = "toposched.io/assignment"
NODES = [f"n{i}" for i in range(6)]


@st.composite
def _case(draw):
    gangs = []
    for g in range(draw(st.integers(1, 3))):
        size = draw(st.integers(2, 4))
        ann = {}
        minimum = draw(st.one_of(st.none(), st.integers(1, size - 1)))
        if minimum is not None:
            ann["gang_min_members"] = str(minimum)
        if draw(st.booleans()):
            ann["required_level"] = "rack"
        gangs.append((f"g{g}", size, draw(st.sampled_from([2, 4, 8])), ann, minimum or size))
    singles = [(f"s{i}", draw(st.sampled_from([1, 2, 4]))) for i in range(draw(st.integers(0, 3)))]
    names = [f"{name}-{i}" for name, size, *_ in gangs for i in range(size)] + [n for n, _ in singles]
    faults = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(["bind", "delete"]),
                                     st.sampled_from([500, 409, 403]), st.integers(1, 3)), max_size=6))
    fail = draw(st.one_of(st.none(), st.tuples(st.sampled_from(NODES), st.integers(0, 3))))
    follower = draw(st.one_of(st.none(), st.integers(0, 7)))  # a step on which this replica does not lead
    return gangs, singles, faults, fail, follower


def _gpus_held(rig: LoopRig) -> dict[tuple[str, int], list[str]]:
    held: dict[tuple[str, int], list[str]] = {}
    for key, pod in rig.cluster.pods.items():
        node = (pod.get("spec") or {}).get("nodeName")
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ASSIGNMENT)
        if node and raw:
            for g in json.loads(raw)["gpus"]:
                held.setdefault((node, g), []).append(key)
    return held


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_case())
def test_refused_bindings_and_deletions_never_leave_a_gang_short_or_a_gpu_held_twice(case):
    gangs, singles, faults, fail, follower = case
    rig = LoopRig(nodes=6, per_rack=3, node_failures=NodeFailureConfig())
    templates: dict[str, dict] = {}  # the job controller's pod templates, by current pod key
    for name, size, gpus, ann, _ in gangs:
        for pod in o.our_gang(name, size, gpus, **ann):
            templates[f"default/{pod['metadata']['name']}"] = pod
    for name, gpus in singles:
        templates[f"default/{name}"] = o.pod(name, gpus)
    for name, op, status, times in faults:
        rig.cluster.fail(f"default/{name}", status, times=times, operation=op)
    for pod in templates.values():
        rig.cluster.add_pod(pod)
    for step in range(12):  # the refusals are spent by step 8; then retries and backoffs run out
        if fail is not None and step == fail[1]:
            node = rig.cluster.nodes[fail[0]]
            rig.cluster.add_node({**node, "status": {**node["status"],
                                                      "conditions": [{"type": "Ready", "status": "False"}]}})
        rig.leading = step != follower
        rig.run()
        rig.leading = True
        rig.recreate(templates)
        rig.clock.now += 11 if step < 8 else 61
        rig.run()
        rig.s.cache.ledger.check_invariants()
        rig.s.cache.check_gang_index()
    for _ in range(3):  # quiet: whatever the last deletions took comes back and is placed
        rig.recreate(templates)
        rig.clock.now += 61
        rig.run()

    bound = rig.cluster.bound()
    for name, _, _, _, minimum in gangs:
        members = [k for k in bound if k.removeprefix("default/").split("-")[0] == name]
        assert not members or len(members) >= minimum, (name, members)
    held = _gpus_held(rig)
    assert all(len(keys) == 1 for keys in held.values()), {g: k for g, k in held.items() if len(k) > 1}
    if fail is not None:
        assert fail[0] not in bound.values()
    rig.s.cache.ledger.check_invariants()
    rig.s.cache.check_gang_index()
    queued = set(rig.s.queue.units)
    for key, pod in rig.cluster.pods.items():
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        gang = ((pod.get("metadata") or {}).get("annotations") or {}).get("toposched.io/gang")
        unit = gang_unit_key(f"default/{gang}") if gang else key
        assert unit in queued or key in rig.s._inflight, (key, unit, sorted(queued))
