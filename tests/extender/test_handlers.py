"""Extender verbs on an in-memory cache: pass-through, filter reasons, prioritize order, holds, gangs, bind, preempt.

Cluster used unless a test says otherwise (rack label example.com/rack)::

    rack r1: n1 (8 GPUs)  n2 (8 GPUs)
    rack r2: n3 (8 GPUs)  n4 (4 GPUs)
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scheduler.cache import ClusterCache
from scheduler.engine import Engine, PlacementConfig, place
from scheduler.extender import wire
from scheduler.extender.handlers import ExtenderHandlers
from scheduler.extender.state import CacheState
from scheduler.fakes import InMemoryBinder, RecordingEvents
from scheduler.snapshot import PodShape
from scheduler.workloads import pod_request
from tests.clock import ManualClock as Clock

from .conftest import LEVELS, filter_args, gang_pod, gpu_pod, k8s_node, make_handlers

ALL = ["n1", "n2", "n3", "n4"]


def cluster() -> list[dict]:
    return [k8s_node("n1", rack="r1"), k8s_node("n2", rack="r1"), k8s_node("n3", rack="r2"),
            k8s_node("n4", 4, rack="r2")]


def run_filter(h, pod, names=ALL) -> wire.ExtenderFilterResult:
    return h.filter(wire.ExtenderArgs.model_validate(filter_args(pod, names)))


def run_prioritize(h, pod, names=ALL) -> dict[str, int]:
    return {hp.host: hp.score for hp in h.prioritize(wire.ExtenderArgs.model_validate(filter_args(pod, names)))}


def run_bind(h, pod, node) -> wire.ExtenderBindingResult:
    meta = pod["metadata"]
    return h.bind(wire.ExtenderBindingArgs(pod_name=meta["name"], pod_namespace=meta["namespace"],
                                           pod_uid=meta["uid"], node=node))


# --- pass-through ------------------------------------------------------------------------


def test_pod_without_gpus_passes_through_every_verb():
    h = make_handlers(cluster())
    pod = gpu_pod("cpu-only", gpus=0)
    res = run_filter(h, pod)
    assert res.node_names == ALL and res.failed_nodes == {} and res.failed_and_unresolvable_nodes == {}
    assert run_prioritize(h, pod) == {}
    given = {"n1": {"Pods": [{"UID": "x"}], "NumPDBViolations": 1}}
    out = h.preempt(wire.ExtenderPreemptionArgs.model_validate({"Pod": pod, "NodeNameToMetaVictims": given}))
    assert out.to_wire() == {"NodeNameToMetaVictims": given}


def test_opted_out_pod_passes_through():
    h = make_handlers(cluster())
    pod = gpu_pod("mine", gpus=8, annotations={"toposched.io/extender": "ignore"})
    assert run_filter(h, pod).node_names == ALL


def test_full_node_list_is_echoed_as_nodes_in_input_order():
    h = make_handlers(cluster())
    items = [k8s_node("n3", rack="r2"), k8s_node("n4", 4, rack="r2"), k8s_node("n1", rack="r1")]
    args = wire.ExtenderArgs.model_validate({"Pod": gpu_pod("p", 8), "Nodes": {"metadata": {}, "items": items}})
    res = h.filter(args)
    assert res.node_names is None
    assert [n["metadata"]["name"] for n in res.nodes.items] == ["n3", "n1"]
    assert res.nodes.items[0] == items[0]  # the objects come back untouched
    assert set(res.failed_and_unresolvable_nodes) == {"n4"}


# --- filter --------------------------------------------------------------------------------


def test_filter_separates_busy_nodes_from_too_small_ones():
    """n1 has 4 GPUs in use: preemption could help (failed). n4 has only 4: it never fits 8 (unresolvable)."""
    h = make_handlers(cluster(), [gpu_pod("busy", 4, node="n1", on_gpus=(0, 1, 2, 3))])
    res = run_filter(h, gpu_pod("big", 8))
    assert res.node_names == ["n2", "n3"]
    assert set(res.failed_nodes) == {"n1"}
    assert set(res.failed_and_unresolvable_nodes) == {"n4"}
    assert all(r.startswith("toposched: ") for r in [*res.failed_nodes.values(),
                                                     *res.failed_and_unresolvable_nodes.values()])
    assert res.error == ""


def test_filter_reports_nodes_the_cache_does_not_know():
    h = make_handlers(cluster())
    res = run_filter(h, gpu_pod("p", 1), ["n1", "ghost"])
    assert res.node_names == ["n1"]
    assert res.failed_nodes == {"ghost": "toposched: node is not in toposched's cache (yet)"}


def test_not_ready_node_is_unresolvable():
    h = make_handlers([k8s_node("n1", rack="r1"), k8s_node("n2", rack="r1", ready=False)])
    res = run_filter(h, gpu_pod("p", 1), ["n1", "n2"])
    assert res.node_names == ["n1"]
    assert "not ready" in res.failed_and_unresolvable_nodes["n2"]


def test_a_pod_we_cannot_read_fails_every_node_with_the_reason():
    h = make_handlers(cluster())
    pod = gpu_pod("bad", 1, annotations={"toposched.io/gpu-milli": "lots"})
    res = run_filter(h, pod, ["n1", "n2"])
    assert res.node_names == []
    assert set(res.failed_and_unresolvable_nodes) == {"n1", "n2"}
    assert "toposched.io/gpu-milli" in res.failed_and_unresolvable_nodes["n1"]


def test_constraints_kube_scheduler_enforces_are_not_refused():
    """Required pod anti-affinity is kube-scheduler's job in extender mode; we judge only the GPUs."""
    pod = gpu_pod("p", 2)
    pod["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "x"}}}]}}
    h = make_handlers(cluster())
    assert run_filter(h, pod).node_names == ALL


def test_extended_resources_are_judged_against_allocatable():
    """A gang's slots must land where its members' rdma devices are, so the extender counts them too."""
    nodes = cluster()
    for node in nodes[:2]:
        node["status"]["allocatable"]["example.com/fpga"] = "1"
    busy = gpu_pod("busy", 1, node="n1", on_gpus=(0,))
    busy["spec"]["containers"][0]["resources"]["limits"]["example.com/fpga"] = "1"
    busy["spec"]["containers"][0]["resources"]["requests"]["example.com/fpga"] = "1"
    h = make_handlers(nodes, [busy])
    pod = gpu_pod("p", 2)
    pod["spec"]["containers"][0]["resources"]["limits"]["example.com/fpga"] = "1"
    res = run_filter(h, pod)
    assert res.node_names == ["n2"]
    assert "Insufficient example.com/fpga" in res.failed_nodes["n1"]


# --- prioritize ------------------------------------------------------------------------------


def test_prioritize_ordering_follows_the_engine():
    """n1 has 6 GPUs in use: packing a 2-GPU pod there is what the engine picks, so it scores 10."""
    pods = [gpu_pod("six", 6, node="n1", on_gpus=(0, 1, 2, 3, 4, 5))]
    h = make_handlers(cluster(), pods)
    pod = gpu_pod("two", 2)
    scores = run_prioritize(h, pod)
    assert set(scores) == set(ALL)
    assert all(0 <= s <= 10 for s in scores.values())
    snap = h.state.snapshot()
    decision = place(snap, [pod_request(pod, LEVELS)], h.engine)
    best = decision.placements[0].node
    assert best == "n1"
    assert scores[best] == 10
    assert max(scores.values()) == 10
    # the order of our scores is the order of the engine's totals, node by node
    totals = engine_totals(h, pod)
    order_ours = sorted(ALL, key=lambda n: (-scores[n], n))
    order_engine = sorted(ALL, key=lambda n: (-totals[n], n))
    for a, b in zip(order_ours, order_ours[1:], strict=False):
        assert totals[a] >= totals[b] - 1e-9
    assert order_engine[0] == order_ours[0]


def engine_totals(h, pod) -> dict[str, float]:
    """Each node's best weighted plugin total for ``pod``, straight from the engine's plugins."""
    from scheduler.engine import build_candidates

    snap = h.state.snapshot()
    shape = PodShape.of(pod_request(pod, LEVELS))
    states = {p.name: p.prepare(shape, snap, h.ctx) for p in h.engine.all_plugins}
    ok = np.ones(snap.n_nodes, dtype=bool)
    for p in h.engine.all_plugins:
        res = p.filter(shape, snap, states.get(p.name))
        if res is not None:
            ok &= res.ok
    cand = build_candidates(snap, shape, ok)
    total = np.zeros(len(cand))
    for p, w in h.engine.scorers:
        s = p.score(shape, snap, cand, states.get(p.name))
        if s is not None:
            total += w * s
    out = {n: -1.0 for n in snap.arrays.node_names}
    for node, t in zip(cand.node, total, strict=True):
        name = snap.arrays.node_names[int(node)]
        out[name] = max(out[name], float(t))
    return out


def test_prioritize_gives_zero_to_nodes_that_cannot_host_the_pod():
    h = make_handlers(cluster())
    scores = run_prioritize(h, gpu_pod("big", 8))
    assert scores["n4"] == 0
    assert {scores["n1"], scores["n2"], scores["n3"]} <= set(range(1, 11))


# --- holds: GPUs kube-scheduler is about to use ------------------------------------------------


def test_the_only_admitted_node_is_held_until_the_watch_sees_the_pod(clock):
    h = make_handlers([k8s_node("n1", rack="r1")], clock=clock, hold_ttl_s=30)
    assert run_filter(h, gpu_pod("first", 8), ["n1"]).node_names == ["n1"]
    second = run_filter(h, gpu_pod("second", 1), ["n1"])
    assert second.node_names == [] and set(second.failed_nodes) == {"n1"}
    clock.advance(31)  # kube-scheduler never bound it: the hold lapses
    assert run_filter(h, gpu_pod("second", 1), ["n1"]).node_names == ["n1"]


def test_a_hold_ends_when_the_cache_counts_the_pod(clock):
    h = make_handlers([k8s_node("n1", rack="r1")], clock=clock)
    run_filter(h, gpu_pod("first", 2), ["n1"])
    h.state.apply("pods", "ADDED", gpu_pod("first", 2, node="n1", on_gpus=(6, 7)))
    # first is counted once (by the ledger), not twice (ledger + hold): 6 GPUs are left
    assert run_filter(h, gpu_pod("second", 4), ["n1"]).node_names == ["n1"]
    assert run_filter(h, gpu_pod("third", 2), ["n1"]).node_names == ["n1"]
    assert run_filter(h, gpu_pod("fourth", 1), ["n1"]).node_names == []


# --- gangs --------------------------------------------------------------------------------------


def test_gang_members_are_admitted_only_to_their_reserved_nodes():
    notes = {"toposched.io/required-level": "rack"}
    w0, w1 = (gang_pod(f"w-{i}", "llm", 2, annotations=notes) for i in range(2))
    h = make_handlers(cluster(), [w0, w1])  # the watch has shown both pending members
    r0 = run_filter(h, w0)
    assert len(r0.node_names) == 1
    n0 = r0.node_names[0]
    assert n0 in ("n1", "n2")  # the only rack with two free 8-GPU nodes
    assert set(r0.failed_and_unresolvable_nodes) == set(ALL) - {n0}
    assert "gang ml/llm reserved node" in r0.failed_and_unresolvable_nodes["n3"]
    r1 = run_filter(h, w1)
    assert r1.node_names == [({"n1", "n2"} - {n0}).pop()]
    # the reservation holds both nodes' GPUs: a stranger gets only n3
    assert run_filter(h, gpu_pod("other", 8)).node_names == ["n3"]
    # prioritize agrees with the reservation
    assert run_prioritize(h, w0) == {n: (10 if n == n0 else 0) for n in ALL}
    # asking again gives the same slot
    assert run_filter(h, w0).node_names == [n0]


def test_gang_slots_go_where_the_members_extended_resources_are():
    """Only n1 and n3 have an rdma device each: the gang's two slots are reserved there, not on n2."""
    nodes = cluster()
    for node in (nodes[0], nodes[2]):
        node["status"]["allocatable"]["rdma/ib"] = "1"
    members = [gang_pod(f"w-{i}", "ib", 2) for i in range(2)]
    for m in members:
        m["spec"]["containers"][0]["resources"]["limits"]["rdma/ib"] = "1"
    h = make_handlers(nodes, members)
    slots = {run_filter(h, m).node_names[0] for m in members}
    assert slots == {"n1", "n3"}


def test_a_partly_bound_gang_is_completed_next_to_its_bound_member():
    """w-0 is bound on n3 (rack r2) and the gang needs one rack: w-1 may only go to n4 in r2,
    never to the roomier rack r1; with n4 too small it waits and says why."""
    notes = {"toposched.io/required-level": "rack"}
    nodes = cluster()
    nodes[3] = k8s_node("n4", 8, rack="r2")
    w0 = gang_pod("w-0", "llm", 2, annotations=notes, node="n3", on_gpus=tuple(range(8)))
    w1 = gang_pod("w-1", "llm", 2, annotations=notes)
    h = make_handlers(nodes, [w0, w1])
    assert run_filter(h, w1).node_names == ["n4"]
    small = make_handlers(cluster(), [w0, w1])  # n4 has 4 GPUs
    res = run_filter(small, w1)
    assert res.node_names == []
    assert "gang ml/llm: 1 members are bound; the rest do not fit next to them (" in res.failed_nodes["n1"]


def test_an_elastic_gangs_later_pods_are_reserved_as_many_as_fit_next_to_its_bound_members():
    """A gang of four 4-GPU members, min 2, runs with w-0 and w-1 on n3 (rack r2); rack r2 has room
    for one more (n4): w-2 is reserved there, w-3 has no slot (all-or-nothing reserved neither)."""
    notes = {"toposched.io/required-level": "rack", "toposched.io/gang-min-members": "2"}
    bound = [gang_pod(f"w-{i}", "llm", 4, 4, annotations=notes, node="n3", on_gpus=tuple(range(4 * i, 4 * i + 4)))
             for i in range(2)]
    w2, w3 = (gang_pod(f"w-{i}", "llm", 4, 4, annotations=notes) for i in (2, 3))
    h = make_handlers(cluster(), [*bound, w2, w3])
    assert run_filter(h, w2).node_names == ["n4"]
    assert run_filter(h, w3).node_names == []


def test_a_member_bound_but_not_yet_seen_by_the_watch_is_counted_once(clock):
    """w-0 was bound by the extender (assumed; the watch has not shown it bound yet) when the
    reservation expired. The next reservation for w-1 counts w-0 as bound and gives it no slot
    (it was counted both as pending and as bound, and got a second slot of 4 GPUs)."""
    members = [gang_pod(f"w-{i}", "g", 2, 4) for i in range(2)]
    h = make_handlers(cluster(), members, clock=clock, gang_timeout_s=60)
    node = run_filter(h, members[0]).node_names[0]
    assert run_bind(h, members[0], node).error == ""
    clock.advance(61)
    h.tick()
    assert h.reservations.get("ml/g") is None
    names = run_filter(h, members[1]).node_names
    res = h.reservations.get("ml/g")
    assert res is not None and [s.pod_key for s in res.slots] == ["ml/w-1"], res.slots
    assert names


def test_a_member_deleted_after_its_filter_is_not_counted_when_the_gang_is_placed_again(clock):
    """w-1's filter reserved the gang; nothing bound before the reservation expired, and w-1 was then
    deleted for good. When w-0 is filtered, the gang has one member: it waits (it was placed
    with a slot for w-1, remembered from its filter, and w-0 would have run alone)."""
    members = [gang_pod(f"w-{i}", "g", 2, 4) for i in range(2)]
    h = make_handlers(cluster(), members, clock=clock, gang_timeout_s=60)
    assert run_filter(h, members[1]).node_names
    clock.advance(61)
    h.tick()
    h.state.apply("pods", "DELETED", members[1])
    res = run_filter(h, members[0])
    assert res.node_names == [] and h.reservations.get("ml/g") is None
    assert "waiting for members (1 of 2 exist)" in res.failed_nodes["n1"]


def test_gang_waits_until_its_members_exist():
    h = make_handlers(cluster(), [gang_pod("w-1", "big", 3)])
    res = run_filter(h, gang_pod("w-0", "big", 3))
    assert res.node_names == []
    assert set(res.failed_nodes) == set(ALL)
    assert "waiting for members (2 of 3 exist)" in res.failed_nodes["n1"]


def test_gang_that_does_not_fit_says_why():
    h = make_handlers(cluster())
    pods = [gang_pod(f"w-{i}", "huge", 5) for i in range(5)]
    for p in pods[:4]:  # members kube-scheduler asked about are remembered
        assert "waiting for members" in run_filter(h, p).failed_nodes["n1"]
    res = run_filter(h, pods[4])
    assert res.node_names == []
    why = res.failed_nodes["n1"]
    assert why.startswith("toposched: gang ml/huge") and "waiting" not in why
    assert h.reservations.get("ml/huge") is None


def test_member_bind_uses_the_slot_gpus_and_completes_the_reservation():
    members = [gang_pod(f"w-{i}", "pair", 2, gpus=4) for i in range(2)]
    h = make_handlers(cluster(), members)
    nodes = [run_filter(h, p).node_names[0] for p in members]
    res = h.reservations.get("ml/pair")
    assert res is not None
    for pod, node in zip(members, nodes, strict=True):
        assert run_bind(h, pod, node).error == ""
    bound = h.binder.annotations
    slots = {s.pod_key: s for s in res.slots}
    for pod in members:
        key = f"ml/{pod['metadata']['name']}"
        assert bound[key]["toposched.io/gpus"] == ",".join(str(g) for g in slots[key].gpus)
    h.tick()
    assert h.reservations.get("ml/pair") is None  # every member counted: the reservation is done


def test_a_gangs_own_timeout_wins_over_the_default(clock):
    members = [gang_pod(f"w-{i}", "quick", 2, annotations={"toposched.io/gang-timeout-seconds": "10"})
               for i in range(2)]
    h = make_handlers(cluster(), members, clock=clock, gang_timeout_s=60)
    run_filter(h, members[0])
    clock.advance(11)
    h.tick()
    assert h.reservations.get("ml/quick") is None


def test_a_member_without_a_named_slot_takes_a_free_one_of_its_shape():
    """The watch showed w-0 and w-1; w-1 was deleted and w-2 replaced it before binding."""
    members = [gang_pod(f"w-{i}", "pair", 2, gpus=4) for i in range(2)]
    h = make_handlers(cluster(), members)
    run_filter(h, members[0])
    h.state.apply("pods", "DELETED", members[1])
    newcomer = gang_pod("w-2", "pair", 2, gpus=4)
    res = run_filter(h, newcomer)
    assert len(res.node_names) == 1
    slot = next(s for s in h.reservations.get("ml/pair").slots if s.pod_key == "ml/w-2")
    assert res.node_names == [slot.node]
    # a member of another shape gets no slot
    odd = gang_pod("w-3", "pair", 2, gpus=2)
    assert run_filter(h, odd).node_names == []


def test_reservation_not_bound_in_time_is_released_with_an_event(clock):
    members = [gang_pod(f"w-{i}", "slow", 2) for i in range(2)]
    h = make_handlers(cluster(), members, clock=clock, gang_timeout_s=60)
    run_filter(h, members[0])
    assert run_filter(h, gpu_pod("other", 8), ["n1", "n2"]).node_names == []
    clock.advance(61)
    h.tick()
    assert h.reservations.get("ml/slow") is None
    events = h.events.for_object("ml/w-0", "GangReservationExpired")
    assert len(events) == 1 and events[0].type == "Warning"
    assert "released after 61 s with 0/2 bound" in events[0].note
    assert run_filter(h, gpu_pod("other", 8), ["n1", "n2"]).node_names == ["n1", "n2"]


def test_a_gang_member_without_a_reserved_slot_is_not_bound_alone(clock):
    """Found by tests/extender/test_props.py. A member binds only into its gang's placement: while
    the gang waits for members, or after its reservation expired between the member's filter and
    its bind, bind refuses (it bound the member on its own, outside any gang placement: one member
    of an all-or-nothing gang running alone, its required rack chosen by that one pod)."""
    members = [gang_pod(f"w-{i}", "pair", 2, gpus=4) for i in range(2)]
    h = make_handlers(cluster(), members[:1], clock=clock, gang_timeout_s=60)
    assert "waiting for members" in run_filter(h, members[0]).failed_nodes["n1"]
    res = run_bind(h, members[0], "n1")
    assert "no slot reserved for ml/w-0" in res.error
    assert h.binder.bound == {} and not h.state.holds("ml/w-0")
    h.state.apply("pods", "ADDED", members[1])
    node = run_filter(h, members[0]).node_names[0]
    clock.advance(61)
    h.tick()  # the reservation expires before kube-scheduler's bind arrives
    assert "no slot reserved for ml/w-0" in run_bind(h, members[0], node).error
    assert h.binder.bound == {}
    node = run_filter(h, members[0]).node_names[0]  # placed again, as a gang
    assert run_bind(h, members[0], node).error == ""


def test_a_member_recreated_with_another_shape_does_not_take_its_old_slot(clock):
    """Found by tests/extender/test_props.py. w-0 was reserved a 2-GPU slot, then deleted and
    re-created under its name asking for 1 GPU: it is not admitted to (nor bound into) the old
    slot, which would have given it 2 GPUs in its annotations and the ledger; once the
    reservation expires the gang is placed again for the pods as they are now."""
    members = [gang_pod(f"w-{i}", "pair", 2, gpus=2) for i in range(2)]
    h = make_handlers(cluster(), members, clock=clock, gang_timeout_s=60)
    node = run_filter(h, members[0]).node_names[0]
    h.state.apply("pods", "DELETED", members[0])
    smaller = gang_pod("w-0", "pair", 2, gpus=1)
    smaller["metadata"]["uid"] = "uid-new"
    h.state.apply("pods", "ADDED", smaller)
    assert run_filter(h, smaller).node_names == []
    assert run_bind(h, smaller, node).error
    assert h.binder.bound == {} and not h.state.holds("ml/w-0")
    clock.advance(61)
    h.tick()
    node = run_filter(h, smaller).node_names[0]
    assert run_bind(h, smaller, node).error == ""
    assert len(h.binder.annotations["ml/w-0"]["toposched.io/gpus"].split(",")) == 1


# --- bind ------------------------------------------------------------------------------------------


def test_bind_writes_the_assignment_and_the_ledger_counts_the_pod():
    h = make_handlers(cluster())
    pod = gpu_pod("p", 2)
    run_filter(h, pod)
    assert run_bind(h, pod, "n3").error == ""
    assert h.binder.bound == {"ml/p": "n3"}
    notes = h.binder.annotations["ml/p"]
    assert notes["toposched.io/gpus"] in ("0,1", "2,3", "4,5", "6,7")
    assert h.state.holds("ml/p")


def test_failed_binding_gives_the_gpus_back():
    h = make_handlers(cluster())
    pod = gpu_pod("p", 8)
    run_filter(h, pod, ["n1"])
    h.binder.fail("ml/p", status=500)
    res = run_bind(h, pod, "n1")
    assert "binding ml/p to n1 failed" in res.error
    assert not h.state.holds("ml/p")


def test_bind_of_a_pod_never_filtered_is_refused():
    h = make_handlers(cluster())
    res = run_bind(h, gpu_pod("stranger", 1), "n1")
    assert "was not filtered by this extender" in res.error
    assert h.binder.bound == {}


def test_bind_to_a_node_that_no_longer_fits_is_refused():
    h = make_handlers(cluster())
    pod = gpu_pod("p", 8)
    run_filter(h, pod, ["n1", "n2"])
    h.state.apply("pods", "ADDED", gpu_pod("squatter", 1, node="n1", on_gpus=(3,)))
    res = run_bind(h, pod, "n1")
    assert "no longer fits on n1" in res.error
    assert h.binder.bound == {}


def test_bind_for_a_recreated_pod_reads_the_new_pod_instead_of_the_old_decision():
    h = make_handlers(cluster())
    old = gpu_pod("p", 1)
    run_filter(h, old, ["n4"])
    new = gpu_pod("p", 8)
    new["metadata"]["uid"] = "uid-new"
    h.state.apply("pods", "DELETED", old)
    h.state.apply("pods", "ADDED", new)
    res = run_bind(h, new, "n4")  # n4 has 4 GPUs: the new pod asks for 8
    assert "no longer fits on n4" in res.error
    assert h.binder.bound == {}
    assert run_bind(h, new, "n1").error == ""
    assert len(h.binder.annotations["ml/p"]["toposched.io/gpus"].split(",")) == 8


def test_an_opted_out_pod_of_another_profile_is_bound_as_it_is():
    h = make_handlers(cluster())
    pod = gpu_pod("theirs", 1, scheduler="other-profile", annotations={"toposched.io/extender": "ignore"})
    h.state.apply("pods", "ADDED", pod)
    assert run_filter(h, pod).node_names == ALL
    assert run_bind(h, pod, "n2").error == ""
    assert h.binder.bound == {"ml/theirs": "n2"}
    assert "toposched.io/gpus" not in h.binder.annotations.get("ml/theirs", {})


def test_before_the_first_pod_list_no_gpu_pod_is_placed_bound_or_preempted_for():
    nodes_listed, pods_listed = threading.Event(), threading.Event()
    state = CacheState(ClusterCache("default-scheduler", LEVELS))
    state.synced_when(nodes_listed, pods_listed)  # as the service wires it to its reflectors
    state.replace("nodes", cluster())
    nodes_listed.set()  # the pod list is not in yet
    h = ExtenderHandlers(state, Engine.from_config(PlacementConfig(profile="toposched")), binder=InMemoryBinder(),
                         events=RecordingEvents(), clock=Clock())
    pod = gpu_pod("early", 8)
    res = run_filter(h, pod)
    assert res.node_names == [] and set(res.failed_nodes) == set(ALL)
    assert "not synced yet" in res.failed_nodes["n1"]
    assert set(run_prioritize(h, pod).values()) == {0}
    assert "not synced yet" in run_bind(h, pod, "n1").error
    given = {"n1": {"Pods": [{"UID": "x"}], "NumPDBViolations": 0}}
    out = h.preempt(wire.ExtenderPreemptionArgs.model_validate({"Pod": pod, "NodeNameToMetaVictims": given}))
    assert out.to_wire() == {"NodeNameToMetaVictims": {}}
    assert h.binder.bound == {}
    assert run_filter(h, gpu_pod("cpu", 0)).node_names == ALL  # not ours: passes through as always
    state.replace("pods", [gpu_pod("running", 8, node="n2", on_gpus=tuple(range(8)))])
    pods_listed.set()
    assert run_filter(h, pod).node_names == ["n1", "n3"]


def test_a_nominated_preemptors_room_is_kept_from_lower_priority_pods():
    victim = gpu_pod("victim", 8, node="n1", on_gpus=tuple(range(8)))
    h = make_handlers([k8s_node("n1", rack="r1"), k8s_node("n2", 4, rack="r1")], [victim])
    preemptor = gpu_pod("important", 8, priority=1000)
    assert run_filter(h, preemptor, ["n1"]).node_names == []
    h.state.apply("pods", "DELETED", victim)  # kube-scheduler evicted it and nominated the preemptor on n1
    nominated = {**preemptor, "status": {**preemptor["status"], "nominatedNodeName": "n1"}}
    h.state.apply("pods", "MODIFIED", nominated)
    lower = gpu_pod("lowly", 8, priority=-100)
    assert run_filter(h, lower, ["n1"]).node_names == []
    assert "no longer fits on n1" in run_bind(h, lower, "n1").error
    assert run_filter(h, gpu_pod("small", 2, priority=0), ["n1", "n2"]).node_names == ["n2"]
    assert run_filter(h, nominated, ["n1"]).node_names == ["n1"]
    assert run_bind(h, nominated, "n1").error == ""


def test_a_nominated_pods_room_is_not_kept_from_a_pod_of_higher_priority():
    h = make_handlers([k8s_node("n1", rack="r1")])
    nominated = gpu_pod("nominated", 8, priority=1000)
    nominated["status"]["nominatedNodeName"] = "n1"
    h.state.apply("pods", "ADDED", nominated)
    assert run_filter(h, gpu_pod("same", 8, priority=1000), ["n1"]).node_names == []
    assert run_filter(h, gpu_pod("higher", 8, priority=2000), ["n1"]).node_names == ["n1"]


def test_without_a_binder_bind_says_so():
    h = make_handlers(cluster(), binder=None)
    pod = gpu_pod("p", 1)
    run_filter(h, pod)
    h.binder = None
    assert "does not bind" in run_bind(h, pod, "n1").error


# --- preempt -------------------------------------------------------------------------------------


def preempt(h, pod, victims: dict[str, list[str]]) -> dict[str, list[str]]:
    body = {"Pod": pod, "NodeNameToMetaVictims": {
        n: {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": 0} for n, uids in victims.items()}}
    out = h.preempt(wire.ExtenderPreemptionArgs.model_validate(body)).to_wire()["NodeNameToMetaVictims"]
    return {n: [p["UID"] for p in v["Pods"]] for n, v in out.items()}


def test_preempt_adds_the_lowest_priority_gpu_pods_needed():
    """n1: four 2-GPU pods (priority 0, 0, 5, 5). A priority-10 pod asking 4 GPUs needs two of them."""
    pods = [gpu_pod("a", 2, node="n1", on_gpus=(0, 1), priority=5), gpu_pod("b", 2, node="n1", on_gpus=(2, 3)),
            gpu_pod("c", 2, node="n1", on_gpus=(4, 5)), gpu_pod("d", 2, node="n1", on_gpus=(6, 7), priority=5)]
    h = make_handlers(cluster(), pods)
    out = preempt(h, gpu_pod("vip", 4, priority=10), {"n1": []})
    assert sorted(out["n1"]) == ["uid-ml-b", "uid-ml-c"]


def test_preempt_keeps_kube_schedulers_victims_when_they_suffice():
    pods = [gpu_pod("a", 4, node="n4", on_gpus=(0, 1, 2, 3))]
    h = make_handlers(cluster(), pods)
    assert preempt(h, gpu_pod("vip", 4, priority=10), {"n4": ["uid-ml-a"]}) == {"n4": ["uid-ml-a"]}


def test_preempt_drops_nodes_where_no_victims_would_do():
    pods = [gpu_pod("high", 4, node="n4", on_gpus=(0, 1, 2, 3), priority=100)]
    h = make_handlers(cluster(), pods)
    out = preempt(h, gpu_pod("vip", 4, priority=10), {"n4": [], "ghost": ["u"]})
    assert out == {"ghost": ["u"]}  # n4 dropped; a node we do not know passes through


def test_a_gang_member_preempts_nothing_without_a_slot_and_only_on_its_slots_node_with_one():
    """kube-scheduler's per-pod victims cannot make room for a whole gang: a member of a gang that
    does not fit gets no victims (they would be evicted for nothing); a member with a reserved
    slot keeps kube-scheduler's victims on that node only."""
    busy = [gpu_pod(f"b{i}", 8, node=n, on_gpus=tuple(range(8))) for i, n in enumerate(("n1", "n2", "n3"))]
    h = make_handlers(cluster(), busy)
    huge = [gang_pod(f"w-{i}", "huge", 2, priority=10) for i in range(2)]
    assert run_filter(h, huge[0]).node_names == []
    assert preempt(h, huge[0], {"n1": ["uid-ml-b0"], "n2": ["uid-ml-b1"]}) == {}
    small = [gang_pod(f"s-{i}", "small", 2, 2, priority=10) for i in range(2)]
    h = make_handlers(cluster(), small)
    (node,) = run_filter(h, small[0]).node_names
    other = next(n for n in ALL if n != node)
    assert preempt(h, small[0], {node: ["x"], other: ["y"]}) == {node: ["x"]}
    assert preempt(h, small[0], {other: ["y"]}) == {}


# --- readiness --------------------------------------------------------------------------------------


def test_ready_once_the_state_synced():
    h = make_handlers(cluster())
    assert h.is_ready()


@pytest.mark.parametrize("names", [[], ["n1"]], ids=["no-nodes", "one-node"])
def test_empty_cluster_fails_nodes_with_a_reason(names):
    h = make_handlers([])
    res = run_filter(h, gpu_pod("p", 1), names)
    assert res.node_names == []
    assert set(res.failed_nodes) == set(names)


def test_preempt_decides_many_nodes_at_once():
    """n1: 2-GPU pods at priorities 5, 0, 0, 5; n2: one 8-GPU pod at 0; n3: one 8-GPU pod at 50 (above ours)."""
    pods = [gpu_pod("a", 2, node="n1", on_gpus=(0, 1), priority=5), gpu_pod("b", 2, node="n1", on_gpus=(2, 3)),
            gpu_pod("c", 2, node="n1", on_gpus=(4, 5)), gpu_pod("d", 2, node="n1", on_gpus=(6, 7), priority=5),
            gpu_pod("big", 8, node="n2", on_gpus=tuple(range(8))),
            gpu_pod("boss", 8, node="n3", on_gpus=tuple(range(8)), priority=50)]
    h = make_handlers(cluster(), pods)
    out = preempt(h, gpu_pod("vip", 4, priority=10), {"n1": [], "n2": [], "n3": []})
    assert {n: sorted(v) for n, v in out.items()} == {"n1": ["uid-ml-b", "uid-ml-c"], "n2": ["uid-ml-big"]}


def test_node_affinity_the_engine_understands_steers_a_gang():
    """Three 4-GPU members would pack into rack r2 (exactly its 12 GPUs); node affinity asks for r1."""
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "example.com/rack", "operator": "In", "values": ["r1"]}]}]}}}
    members = [gang_pod(f"w-{i}", "g", 3, gpus=4) for i in range(3)]
    h = make_handlers(cluster(), members)
    run_filter(h, members[0])
    assert sorted(s.node for s in h.reservations.get("ml/g").slots) == ["n3", "n3", "n4"]
    for m in members:
        m["spec"]["affinity"] = affinity
    h = make_handlers(cluster(), members)
    assert run_filter(h, members[0]).node_names[0] in ("n1", "n2")
    assert {s.node for s in h.reservations.get("ml/g").slots} <= {"n1", "n2"}


def test_node_affinity_the_engine_cannot_express_is_left_to_kube_scheduler():
    pod = gpu_pod("p", 1)
    pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["a"]}]}]}}}
    h = make_handlers(cluster())
    assert run_filter(h, pod).node_names == ALL


# --- the arriving mix ----------------------------------------------------------------------


def test_filter_counts_each_gpu_pod_once_and_prioritize_scores_against_the_mix():
    from models.placement import Placement
    from scheduler.workloads import assignment_annotations

    half = {"toposched.io/gpu-milli": "500"}
    running = gpu_pod("running", node="n2", annotations={
        **half, **assignment_annotations(Placement("ml/running", "n2", 0, (3,), 500, 0, 0))})
    h = make_handlers(cluster(), [running])
    assert h.arrivals.mix is None and h.ctx.mix is None
    whole = gpu_pod("whole")
    run_filter(h, whole)
    run_filter(h, whole)  # kube-scheduler retries the same pod: counted once
    run_filter(h, gpu_pod("cpu-only", gpus=0))  # not ours: passes through, not counted
    assert h.arrivals.observed == 1 and h.ctx.mix is h.arrivals.mix is not None
    pod = gpu_pod("half", annotations=half)
    run_filter(h, pod)
    assert h.arrivals.observed == 2 and {k.gpu_milli for k, _ in h.ctx.mix.typical} == {1000, 500}
    # a fresh GPU would leave 500m the whole-GPU kind cannot use; n2's half-used GPU 3 would not
    scores = run_prioritize(h, pod)
    assert scores["n2"] == max(scores.values()) and scores["n1"] < scores["n2"]


def test_a_failure_to_count_a_pod_does_not_fail_filter():
    h = make_handlers(cluster())

    def broken(shape):
        raise RuntimeError("mix is broken")

    h.arrivals.observe = broken
    assert run_filter(h, gpu_pod("whole")).node_names == ALL
