"""The cluster cache: which node changes rebuild the topology, level labels, bound-pod accounting."""

from __future__ import annotations

import copy
import io
import json
import logging

from models.spec import LevelSpec
from scheduler.cache import ClusterCache, bound_pod
from scheduler.logs import JsonFormatter
from tests.integration import objects as o

LEVELS = [LevelSpec(name="rack", label=o.RACK_LABEL)]


def cache_with(*nodes) -> ClusterCache:
    c = ClusterCache("toposched", LEVELS)
    c.replace_nodes(nodes)
    c.refresh()
    return c


def test_heartbeats_do_not_rebuild_the_topology_but_label_changes_do():
    n = o.node("n0", rack="r0")
    c = cache_with(n)
    version = c.version
    beat = copy.deepcopy(n)
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:00:10Z"
    beat["metadata"]["resourceVersion"] = "99"
    assert not c.upsert_node(beat)
    assert not c.refresh() and c.version == version
    moved = copy.deepcopy(n)
    moved["metadata"]["labels"][o.RACK_LABEL] = "r9"
    assert c.upsert_node(moved) and c.refresh() and c.version == version + 1
    assert c.arrays.node_domain(0, 0) == "r9"


def test_not_ready_and_cordon_reach_the_arrays():
    n = o.node("n0", rack="r0", ready=False)
    c = cache_with(n)
    assert not c.arrays.ready[0]
    n = o.node("n0", rack="r0")
    n["spec"]["unschedulable"] = True
    c.upsert_node(n)
    c.refresh()
    assert c.arrays.ready[0] and c.arrays.unschedulable[0]


def test_node_without_a_level_label_is_its_own_domain():
    c = cache_with(o.node("n0", rack="r0"), o.node("n1"), o.node("n2"))
    assert [c.arrays.node_domain(i, 0) for i in range(3)] == ["r0", "unlabelled-n1", "unlabelled-n2"]


def test_levels_are_inferred_when_the_config_names_none():
    labels = {"topology.kubernetes.io/zone": "z1", "network.topology.nvidia.com/spine": "s1",
              "network.topology.nvidia.com/leaf": "l1"}
    c = ClusterCache("toposched", None)
    c.replace_nodes([o.node("n0", labels=labels)])
    c.refresh()
    assert [lv.name for lv in c.levels] == ["zone", "spine", "leaf"]


def test_unreadable_node_is_left_out_with_the_problem():
    c = cache_with(o.node("bad", annotations={"toposched.io/topology": "not json"}), o.node("ok"))
    assert c.arrays.node_names == ("ok",)
    assert "bad" in c.invalid_nodes and "toposched.io/topology" in c.invalid_nodes["bad"]


def test_bound_pod_of_another_scheduler_with_unmodelled_resources_is_still_counted():
    p = o.pod("x", 2, scheduler="default-scheduler", node_name="n0")
    p["spec"]["containers"][0]["resources"]["requests"]["example.com/fpga"] = "1"
    rec, problem = bound_pod(p)
    assert (rec.cpu_milli, rec.memory_mib, rec.gpus, rec.assigned, problem) == (1000, 1024, 2, None, None)


def test_terminal_and_deleted_pods_free_their_gpus():
    c = cache_with(o.node("n0", rack="r0"))
    c.upsert_pod(o.pod("a", 4, node_name="n0"))
    c.upsert_pod(o.pod("b", 4, node_name="n0"))
    assert c.ledger.live.full_free_count()[0] == 0
    done = o.pod("a", 4, node_name="n0")
    done["status"]["phase"] = "Succeeded"
    assert c.upsert_pod(done) == "gone"
    c.delete_pod("default/b")
    assert c.ledger.live.full_free_count()[0] == 8
    c.ledger.check_invariants()


def test_pods_on_a_node_that_appears_later_are_counted_then():
    c = cache_with(o.node("n0", rack="r0"))
    c.upsert_pod(o.pod("early", 8, node_name="n1"))
    c.upsert_node(o.node("n1", rack="r0"))
    c.refresh()
    assert c.ledger.get("default/early").node == c.arrays.node_index["n1"]


def test_json_logs_carry_pod_and_gang_keys():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("toposched.test-json")
    log.addHandler(handler)
    log.propagate = False
    log.warning("bind failed: %s", "503", extra={"pod": "ml/w-0", "gang": "ml/llm", "node": "n3"})
    doc = json.loads(stream.getvalue())
    assert (doc["level"], doc["logger"], doc["msg"], doc["pod"], doc["gang"], doc["node"]) == (
        "warning", "toposched.test-json", "bind failed: 503", "ml/w-0", "ml/llm", "n3")
    assert doc["ts"].endswith("Z")


def _ib_node(name: str, amount: str = "8"):
    n = o.node(name, rack="r0")
    n["status"]["allocatable"] = {**n["status"]["allocatable"], "rdma/ib": amount}
    return n


def test_bound_pods_of_anyone_take_their_extended_resources_on_their_node():
    c = cache_with(_ib_node("n0"), o.node("n1", rack="r0"))
    assert c.arrays.ext_names == ("rdma/ib",) and c.arrays.ext_alloc.tolist() == [[8], [0]]
    mine = o.pod("mine", 1, node_name="n0")
    mine["spec"]["containers"][0]["resources"]["limits"]["rdma/ib"] = "2"
    other = o.pod("other", 1, scheduler="default-scheduler", node_name="n0")
    other["spec"]["containers"][0]["resources"]["limits"]["rdma/ib"] = "3"
    other["spec"]["containers"][0]["ports"] = [{"containerPort": 1, "hostPort": 1}]  # a constraint we do not model
    c.upsert_pod(mine)
    c.upsert_pod(other)
    assert bound_pod(other)[0].extended == (("rdma/ib", 3),)
    assert c.ledger.live.free_ext.tolist() == [[3], [0]]
    c.ledger.check_invariants()
    c.upsert_node(_ib_node("n0", "16"))  # allocatable grows: the rebuilt ledger replays both pods
    c.refresh()
    assert c.ledger.live.free_ext.tolist() == [[11], [0]]
    c.delete_pod("default/other")
    assert c.ledger.live.free_ext.tolist() == [[14], [0]]
    c.ledger.check_invariants()


def _brute_gang_members(c: ClusterCache, gang: str) -> list[str]:
    """What ``gang_members`` answers from its index, by a scan of every bound and assumed pod."""
    bound = [k for k, r in c.bound.items() if r.gang == gang and not r.terminating]
    return sorted(bound + [k for k, a in c.assumed.items() if a.gang == gang and k not in c.bound])


def test_gang_members_follow_binds_confirmations_terminations_deletions_and_relabels():
    from models.placement import Placement

    c = cache_with(o.node("n0", rack="r0"), o.node("n1", rack="r0"))
    pods = o.our_gang("g", 3, 2)
    c.upsert_pod(pods[0])
    assert c.gang_members("default/g") == []  # pending is not bound
    c.upsert_pod({**pods[0], "spec": {**pods[0]["spec"], "nodeName": "n0"}})  # bound by someone
    c.upsert_pod(pods[1])
    c.assume("default/g-1", Placement("default/g-1", "n1", 1, (0, 1), 1000, 1000, 1024, gang="default/g"),
             gang="default/g")
    assert c.gang_members("default/g") == ["default/g-0", "default/g-1"] == _brute_gang_members(c, "default/g")
    c.upsert_pod({**pods[1], "spec": {**pods[1]["spec"], "nodeName": "n1"}})  # the watch confirms our bind
    assert c.gang_members("default/g") == ["default/g-0", "default/g-1"]
    going = copy.deepcopy(c.bound["default/g-0"])
    pod0 = {**pods[0], "spec": {**pods[0]["spec"], "nodeName": "n0"}}
    c.upsert_pod({**pod0, "metadata": {**pod0["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z",
                                       "resourceVersion": "7"}})
    assert c.bound["default/g-0"].terminating and going is not None
    assert c.gang_members("default/g") == ["default/g-1"] == _brute_gang_members(c, "default/g")
    c.delete_pod("default/g-0")
    plain = o.pod("g-1", 2, node_name="n1")  # re-created under the name, in no gang
    plain["metadata"]["uid"] = "other"
    c.upsert_pod(plain)
    assert c.gang_members("default/g") == [] == _brute_gang_members(c, "default/g")
    c.check_gang_index()
    c.assume("default/g-2", Placement("default/g-2", "n0", 0, (4,), 1000, 1000, 1024, gang="default/g"),
             gang="default/g")
    c.forget("default/g-2")
    assert c.gang_members("default/g") == []
    c.check_gang_index()
