"""Deletions toposched decides, when the watch and the API answers arrive in another order
than the inline rig gives them: the worker pool is held (``HeldPool``) and its jobs run when
a test says, as bind and delete workers finish in any order on a cluster."""

from __future__ import annotations

from scheduler.ports import ObjectRef
from tests.integration import objects as o
from tests.scheduler.rig import LoopRig


class HeldPool:
    """The loop's worker pool, run by hand: ``run(pred)`` runs the held jobs ``pred`` picks."""

    def __init__(self) -> None:
        self.jobs: list[tuple] = []

    def submit(self, fn, *args) -> None:
        self.jobs.append((fn, args))

    def run(self, pred=lambda fn, args: True) -> int:
        picked = [j for j in self.jobs if pred(*j)]
        self.jobs = [j for j in self.jobs if j not in picked]
        for fn, args in picked:
            fn(*args)
        return len(picked)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.jobs.clear()


def _bind_of(key: str):
    return lambda fn, args: bool(args) and getattr(args[0], "key", None) == key


def _held_rig() -> tuple[LoopRig, HeldPool]:
    rig = LoopRig()
    pool = HeldPool()
    rig.s._pool = pool
    return rig, pool


def test_a_rolled_back_member_deleted_and_recreated_under_its_name_meanwhile_is_left_alone():
    """g-0's binding went through; before g-1's failed, g-0 was deleted and re-created under
    its name (a StatefulSet's pod, say), pending. The rollback has nothing left to delete: the
    new g-0 is neither deleted nor told it was."""
    rig, pool = _held_rig()
    pods = o.our_gang("g", 2, 8)
    rig.cluster.fail("default/g-1", 403)
    rig.add(*pods)
    rig.s.step()
    assert pool.run(_bind_of("default/g-0")) == 1
    rig.s.step()
    assert "default/g-0" in rig.cluster.bound()
    rig.cluster.delete(ObjectRef.pod("default", "g-0"))
    new_uid = rig.cluster.add_pod(pods[0])["metadata"]["uid"]
    rig.s.step()
    assert pool.run(_bind_of("default/g-1")) == 1
    rig.s.step()  # g-1's binding refused: the gang is rolled back
    pool.run()
    rig.s.step()
    assert rig.cluster.pods["default/g-0"]["metadata"]["uid"] == new_uid
    assert not [e for e in rig.events.for_object("default/g-0", "GangRollback") if e.regarding.uid == new_uid]


def _bound_single(rig: LoopRig, pool: HeldPool, name: str = "a", gpus: int = 8) -> str:
    rig.add(o.pod(name, gpus))
    rig.s.step()
    pool.run()
    rig.s.step()
    key = f"default/{name}"
    assert key in rig.cluster.bound()
    return key


def _recreate(rig: LoopRig, key: str) -> str:
    """Someone deletes pod ``key`` and its controller re-creates it under the name (pending): the new uid."""
    old = rig.cluster.pods[key]
    ns, _, name = key.partition("/")
    rig.cluster.delete(ObjectRef.pod(ns, name))
    meta = {k: v for k, v in old["metadata"].items() if k not in ("uid", "resourceVersion")}
    spec = {k: v for k, v in old["spec"].items() if k != "nodeName"}
    return rig.cluster.add_pod({**old, "metadata": meta, "spec": spec, "status": {"phase": "Pending"}})["metadata"]["uid"]


def test_a_deletion_refused_after_the_pod_was_re_created_under_its_name_says_nothing_to_the_new_pod():
    """toposched deletes a; before its request reaches the API, a is deleted by someone else and
    re-created under its name. The API refuses toposched's deletion (the uid precondition, 409),
    and the answer comes after the watch showed the new pod: that pod is not the one toposched
    meant, so it gets no DeleteFailed, is not deleted on a retry, and is placed."""
    rig, pool = _held_rig()
    key = _bound_single(rig, pool)
    assert rig.s.failures.delete(rig.s, key, "a test")
    new_uid = _recreate(rig, key)
    pool.run()  # the held deletion: its precondition names the old uid
    rig.s.step()
    assert not [e for e in rig.events.for_object(key, "DeleteFailed") if e.regarding.uid == new_uid]
    for _ in range(3):
        rig.clock.now += 61
        rig.s.step()
        pool.run()
    rig.s.step()
    assert rig.cluster.pods[key]["metadata"]["uid"] == new_uid and key in rig.cluster.bound()


def test_a_refused_deletion_whose_answer_comes_after_the_watch_showed_the_pod_re_created_is_dropped():
    """As above with a refusal that is no conflict (403): the refused pod is gone anyway, and the
    DeleteFailed event would land on the new pod of the name."""
    rig, pool = _held_rig()
    key = _bound_single(rig, pool)
    assert rig.s.failures.delete(rig.s, key, "a test")
    new_uid = _recreate(rig, key)
    rig.cluster.fail(key, 403, operation="delete")
    pool.run()
    rig.s.step()
    assert not rig.notes(key, "DeleteFailed")
    assert key not in rig.s.failures.deleting
    assert rig.cluster.pods[key]["metadata"]["uid"] == new_uid
