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
