"""The extender's verbs driven as kube-scheduler and the pod watch drive them, in random order.

One ``ExtenderHandlers`` over a small cluster (rack r1: n1, n2 with 8 GPUs; rack r2: n3 with
8, n4 with 4) gets single GPU pods and gang members (added pending, as the watch delivers
them), then any order of: filter (every node or a subset), prioritize, bind (to a node filter
allowed, to another one, with a failing API call, or for a pod re-created since filter ran),
the watch showing a bound pod (late or never), pods finishing or being deleted (pending ones
re-created under the same name), the clock passing gang timeouts, tick.

After every step: the ledger's own checks, the cache's gang index, reserved slots that hold
distinct GPUs no bound pod holds, no gang with more bound members than its size, every bind
on a node the pod's filter allowed (a gang member on its slot's node, with its GPUs). At the
end, with every timeout passed: no reservation, hold or GPU left over from pods that are gone.

A modest number of examples in CI; ``TOPOSCHED_PROP_EXAMPLES=2000`` hunts longer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from scheduler.extender import wire
from scheduler.fakes import InMemoryBinder
from scheduler.ports import KubeApiError, ObjectRef
from tests.clock import ManualClock

from .conftest import filter_args, gang_pod, gpu_pod, k8s_node, make_handlers

ALL = ["n1", "n2", "n3", "n4"]
GPUS = {"n1": 8, "n2": 8, "n3": 8, "n4": 4}
GANG_TIMEOUT_S = 60.0
EXAMPLES = int(os.environ.get("TOPOSCHED_PROP_EXAMPLES", "25"))


def cluster() -> list[dict[str, Any]]:
    return [k8s_node("n1", rack="r1"), k8s_node("n2", rack="r1"), k8s_node("n3", rack="r2"),
            k8s_node("n4", 4, rack="r2")]


class ApiBinder(InMemoryBinder):
    """The in-memory binder plus the API server's uid precondition: a Binding for a pod that was
    deleted (and maybe re-created under its name) since kube-scheduler read it is a 409."""

    def __init__(self) -> None:
        super().__init__()
        self.live_uids: dict[str, str] = {}  # pod key -> uid of the pod the API server has now

    def bind(self, pod: ObjectRef, node: str, annotations: Mapping[str, str]) -> None:
        live = self.live_uids.get(pod.key)
        if live is None or (pod.uid and pod.uid != live):
            raise KubeApiError(409, "Conflict", f"pod {pod.key} uid {pod.uid} is not the live pod ({live})",
                               operation="bind")
        super().bind(pod, node, annotations)


def _gpus(notes: Mapping[str, str]) -> tuple[int, ...]:
    text = notes.get("toposched.io/gpus", "")
    return tuple(int(g) for g in text.split(",")) if text else ()


class ExtenderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.binder = ApiBinder()
        self.h = make_handlers(cluster(), clock=self.clock, binder=self.binder, gang_timeout_s=GANG_TIMEOUT_S)
        self.h.state.refresh()  # the topology and ledger are built on first use
        self.n = 0
        self.pods: dict[str, dict[str, Any]] = {}  # key -> the live pod as created (pending form)
        self.bound: dict[str, str] = {}  # key -> node, bound by our bind (the live incarnation)
        self.watched: set[str] = set()  # keys whose binding the watch has delivered
        self.unadded: dict[str, list[dict[str, Any]]] = {}  # gang -> members not created yet
        self.size: dict[str, int] = {}  # gang key -> size
        self.allowed: dict[str, set[str]] = {}  # uid -> nodes its last filter passed
        self.unresolvable: dict[str, set[str]] = {}  # uid -> nodes its last filter found unresolvable
        self.old_uids: dict[str, str] = {}  # key -> uid of a deleted incarnation filter had seen

    # --- helpers ---------------------------------------------------------------------------

    def _uid(self) -> str:
        self.n += 1
        return f"uid-{self.n}"

    def _create(self, pod: dict[str, Any]) -> None:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        pod["metadata"]["uid"] = self._uid()
        self.pods[key] = pod
        self.binder.live_uids[key] = pod["metadata"]["uid"]
        self.h.state.apply("pods", "ADDED", pod)

    def _gang(self, pod: Mapping[str, Any]) -> str | None:
        g = pod["metadata"]["annotations"].get("toposched.io/gang")
        return f"ml/{g}" if g else None

    def _pending(self) -> list[str]:
        return sorted(k for k in self.pods if k not in self.bound)

    def _bound_pod(self, key: str) -> dict[str, Any]:
        pod = {**self.pods[key], "spec": {**self.pods[key]["spec"], "nodeName": self.bound[key]},
               "status": {"phase": "Running"}}
        pod["metadata"] = {**pod["metadata"], "annotations": {**pod["metadata"]["annotations"],
                                                              **self.binder.annotations.get(key, {})}}
        return pod

    def _args(self, pod: dict[str, Any], names: list[str]) -> wire.ExtenderArgs:
        return wire.ExtenderArgs.model_validate(filter_args(pod, names))

    def _slot(self, key: str):
        gang = self._gang(self.pods[key])
        res = self.h.reservations.get(gang) if gang else None
        return None if res is None else next((s for s in res.slots if s.pod_key == key), None)

    # --- pods arrive ---------------------------------------------------------------------------

    @rule(gpus=st.integers(1, 8), priority=st.integers(0, 2))
    def add_pod(self, gpus, priority):
        self._create(gpu_pod(f"s-{self.n}", gpus, priority=priority))

    @rule(size=st.integers(2, 4), gpus=st.sampled_from([2, 4, 8]), rack=st.booleans(), now=st.integers(1, 4))
    def add_gang(self, size, gpus, rack, now):
        name = f"g-{self.n}"
        self.n += 1
        notes = {"toposched.io/required-level": "rack"} if rack else {}
        members = [gang_pod(f"{name}-w{i}", name, size, gpus, annotations=dict(notes)) for i in range(size)]
        self.size[f"ml/{name}"] = size
        for m in members[:now]:
            self._create(m)
        self.unadded[f"ml/{name}"] = members[now:]

    @precondition(lambda self: any(self.unadded.values()))
    @rule(data=st.data())
    def add_member(self, data):
        gang = data.draw(st.sampled_from(sorted(g for g, rest in self.unadded.items() if rest)))
        self._create(self.unadded[gang].pop(0))

    # --- kube-scheduler -------------------------------------------------------------------------

    def _names(self, data) -> list[str]:
        if data.draw(st.booleans()):
            return list(ALL)
        return data.draw(st.lists(st.sampled_from(ALL), unique=True, max_size=4))

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def filter(self, data, key=None):
        key = key or data.draw(st.sampled_from(self._pending()))
        pod = self.pods[key]
        names = self._names(data)
        res = self.h.filter(self._args(pod, names))
        passed = set(res.node_names or [])
        assert passed <= set(names), (names, res)
        assert not passed & (set(res.failed_nodes) | set(res.failed_and_unresolvable_nodes)), res
        assert passed | set(res.failed_nodes) | set(res.failed_and_unresolvable_nodes) == set(names), res
        event(f"filter {'gang' if self._gang(pod) else 'single'} passed {len(passed)}")
        if self._gang(pod):
            assert len(passed) <= 1, res
            slot = self._slot(key)
            if passed:
                assert slot is not None and passed == {slot.node}, (res, slot)
        uid = pod["metadata"]["uid"]
        self.allowed[uid] = passed
        self.unresolvable[uid] = set(res.failed_and_unresolvable_nodes)
        wanted = int(pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"])
        for n in passed:
            assert GPUS[n] >= wanted, (n, res)

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def prioritize(self, data):
        key = data.draw(st.sampled_from(self._pending()))
        self._prioritize(key, self._names(data))

    def _prioritize(self, key: str, names: list[str]) -> None:
        scores = self.h.prioritize(self._args(self.pods[key], names))
        if names:
            assert [s.host for s in scores] == names
        assert all(0 <= s.score <= 10 for s in scores), scores

    def _filtered(self) -> list[str]:
        return sorted(k for k in self._pending() if self.pods[k]["metadata"]["uid"] in self.allowed)

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def schedule(self, data):
        """kube-scheduler's whole cycle for one pod: filter, prioritize the passed nodes, bind the best."""
        key = data.draw(st.sampled_from(self._pending()))
        self.filter(data, key)
        passed = sorted(self.allowed[self.pods[key]["metadata"]["uid"]])
        if passed:
            self._prioritize(key, passed)
            self.bind(data, data.draw(st.booleans().map(lambda b: b and data.draw(st.booleans()))), key)

    @precondition(lambda self: self._filtered())
    @rule(data=st.data(), fail=st.booleans())
    def bind(self, data, fail, key=None):
        key = key or data.draw(st.sampled_from(self._filtered()))
        pod = self.pods[key]
        uid = pod["metadata"]["uid"]
        allowed = self.allowed[uid]
        stray = not allowed or data.draw(st.booleans())
        node = data.draw(st.sampled_from(sorted(set(ALL) - allowed) if stray and allowed != set(ALL) else sorted(allowed or ALL)))
        stray = node not in allowed
        slot = self._slot(key)
        held = slot is not None and slot.index not in self.h.reservations.get(self._gang(pod)).counted
        if fail:
            self.binder.fail(key, status=500)
        meta = pod["metadata"]
        res = self.h.bind(wire.ExtenderBindingArgs(pod_name=meta["name"], pod_namespace=meta["namespace"],
                                                   pod_uid=uid, node=node))
        if fail:
            self.binder._faults.pending.pop(f"bind:{key}", None)  # unused when the extender refused first
            assert res.error, res
        if stray and node in self.unresolvable[uid] and not self._gang(pod):
            assert res.error, f"{key} bound to {node}, which its filter found unresolvable"
        if held and node != slot.node:
            assert res.error, f"gang member {key} bound to {node}, its slot is on {slot.node}"
        event(f"bind {'gang' if self._gang(pod) else 'single'} {'stray' if stray else 'allowed'} "
              f"{'refused' if res.error else 'bound'}{' (slot held)' if held else ''}")
        if res.error:
            assert key not in self.binder.bound
            assert not self.h.state.holds(key), f"{key}: a refused bind left the pod in the ledger"
            return
        assert self.binder.bound[key] == node
        wanted = int(pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"])
        assert len(_gpus(self.binder.annotations[key])) == wanted, (key, wanted, self.binder.annotations[key])
        if held:
            assert node == slot.node and _gpus(self.binder.annotations[key]) == tuple(slot.gpus), (slot, res)
        if self._gang(pod):
            # a member binds only into its gang's placement: a slot reserved for it on that node
            assert held, f"gang member {key} bound to {node} without a reserved slot (filter allowed {allowed})"
        else:
            assert node not in self.unresolvable[uid]
        self.bound[key] = node
        assert self.h.state.holds(key)

    @precondition(lambda self: any(k in self.pods for k in self.old_uids))
    @rule(data=st.data())
    def bind_stale_uid(self, data):
        """kube-scheduler binds the incarnation it filtered, deleted and re-created since."""
        key = data.draw(st.sampled_from(sorted(k for k in self.old_uids if k in self.pods)))
        held_before = self.h.state.holds(key)
        meta = self.pods[key]["metadata"]
        node = data.draw(st.sampled_from(ALL))
        res = self.h.bind(wire.ExtenderBindingArgs(pod_name=meta["name"], pod_namespace=meta["namespace"],
                                                   pod_uid=self.old_uids[key], node=node))
        assert res.error, f"{key}: a bind for the deleted incarnation went through"
        assert self.h.state.holds(key) == held_before

    # --- the watch ------------------------------------------------------------------------------

    @precondition(lambda self: set(self.bound) - self.watched)
    @rule(data=st.data())
    def watch_bound(self, data):
        key = data.draw(st.sampled_from(sorted(set(self.bound) - self.watched)))
        self.h.state.apply("pods", "MODIFIED", self._bound_pod(key))
        self.watched.add(key)

    def _gone(self, key: str) -> None:
        del self.pods[key]
        self.bound.pop(key, None)
        self.watched.discard(key)
        self.binder.bound.pop(key, None)
        self.binder.annotations.pop(key, None)
        self.binder.live_uids.pop(key, None)

    @precondition(lambda self: self.bound)
    @rule(data=st.data(), finish=st.booleans())
    def bound_pod_ends(self, data, finish):
        key = data.draw(st.sampled_from(sorted(self.bound)))
        pod = self._bound_pod(key)
        if finish:
            pod["status"] = {"phase": "Succeeded"}
            self.h.state.apply("pods", "MODIFIED", pod)
        else:
            self.h.state.apply("pods", "DELETED", pod)
        self._gone(key)

    @precondition(lambda self: self._pending())
    @rule(data=st.data(), recreate=st.booleans(), gpus=st.integers(1, 8))
    def pending_pod_deleted(self, data, recreate, gpus):
        key = data.draw(st.sampled_from(self._pending()))
        pod = self.pods[key]
        self.h.state.apply("pods", "DELETED", pod)
        self._gone(key)
        if pod["metadata"]["uid"] in self.allowed:
            self.old_uids[key] = pod["metadata"]["uid"]
        if recreate:
            meta = pod["metadata"]
            if self._gang(pod):
                size = int(meta["annotations"]["toposched.io/gang-size"])
                same = int(pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"])
                new = gang_pod(meta["name"], meta["annotations"]["toposched.io/gang"], size,
                               same if data.draw(st.booleans()) else gpus,
                               annotations={k: v for k, v in meta["annotations"].items()
                                            if k == "toposched.io/required-level"})
            else:
                new = gpu_pod(meta["name"], gpus, priority=pod["spec"]["priority"])
            self._create(new)

    # --- time -----------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1.0, 20.0, 31.0, GANG_TIMEOUT_S + 1]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)
        self.h.tick()

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def ledger_and_reservations_agree(self):
        cache = self.h.state.cache
        ledger = cache.ledger
        ledger.check_invariants()
        cache.check_gang_index()
        taken: dict[tuple[str, int], str] = {}
        for key in list(cache.bound) + list(cache.assumed):
            a = ledger.get(key)
            if a is None:
                continue
            node = cache.arrays.node_names[a.node]
            for g in a.gpus:
                taken[(node, g)] = key
        held: dict[tuple[str, int], str] = {}
        for res in self.h.reservations:
            for s in res.held():
                assert len(set(s.gpus)) == len(s.gpus), s
                for g in s.gpus:
                    assert (s.node, g) not in held, f"{res.gang} slot {s.index} and {held[(s.node, g)]} share {s.node}:{g}"
                    held[(s.node, g)] = f"{res.gang} slot {s.index}"
                    owner = taken.get((s.node, g))
                    assert owner is None or owner == s.pod_key, \
                        f"{res.gang} slot {s.index} ({s.pod_key}) holds {s.node}:{g}, which {owner} has"

    @invariant()
    def gangs_bind_at_most_their_size(self):
        per_gang: dict[str, int] = {}
        for key in self.bound:
            gang = self._gang(self.pods[key])
            if gang:
                per_gang[gang] = per_gang.get(gang, 0) + 1
        for gang, n in per_gang.items():
            assert n <= self.size[gang], (gang, n)
            assert self.h.state.bound_gang_members(gang) <= self.size[gang]

    @invariant()
    def binder_and_model_agree(self):
        assert self.binder.bound == self.bound

    def teardown(self):
        # every bound pod seen by the watch, every timeout passed: what is left is what runs
        for key in sorted(set(self.bound) - self.watched):
            self.h.state.apply("pods", "MODIFIED", self._bound_pod(key))
        self.watched = set(self.bound)
        self.clock.advance(1000.0)
        self.h.tick()
        assert len(self.h.reservations) == 0, [r.describe() for r in self.h.reservations]
        assert not self.h._holds, self.h._holds
        snap = self.h._snapshot()
        for i, name in enumerate(snap.arrays.node_names):
            used = sum(len(_gpus(self.binder.annotations[k])) for k, n in self.bound.items() if n == name)
            free = int((snap.gpu_free[i, :GPUS[name]] == 1000).sum())
            assert free == GPUS[name] - used, (name, free, used)
        self.ledger_and_reservations_agree()


TestExtenderMachine = ExtenderMachine.TestCase
TestExtenderMachine.settings = settings(max_examples=EXAMPLES, stateful_step_count=50, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
