"""PodDisruptionBudgets in the scheduling loop on the in-memory cluster: watched, read, passed to the planner.

One full 8-GPU node with two priority-1 pods of 4 GPUs (``p`` labelled app=db)::

    n0 [p p p p | q q q q]
"""

from __future__ import annotations

import logging

from scheduler.cache import PDB_RESOURCE
from tests.integration import objects as o
from tests.scheduler.rig import LoopRig


def pdb(name: str, selector, allowed) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
            "spec": {"selector": selector}, "status": {"disruptionsAllowed": allowed}}


class Rig(LoopRig):
    """One node holding two priority-1 pods of 4 GPUs: ``p`` (app=db) and ``q``."""

    def __init__(self) -> None:
        super().__init__(1, settle=True, steps=30)
        self.add(o.pod("p", 4, priority=1, labels={"app": "db"}), o.pod("q", 4, priority=1))

    def budgets(self, *objs) -> None:
        self.s.replace(PDB_RESOURCE, list(objs))
        self.run()

    def left(self) -> list[str]:
        return sorted(k for k in ("default/p", "default/q") if k in self.cluster.pods)


def test_without_a_budget_p_is_the_victim_with_one_q_is():
    plain = Rig()
    plain.add(o.pod("hi", 4, priority=100))
    assert plain.left() == ["default/q"]
    rig = Rig()
    rig.budgets(pdb("db", {"matchLabels": {"app": "db"}}, 0))
    rig.add(o.pod("hi", 4, priority=100))
    assert rig.left() == ["default/p"]
    note = rig.events.for_object("default/hi", "Preempting")[0].note
    assert "PodDisruptionBudget" not in note


def test_budget_events_update_and_delete_what_the_planner_sees():
    rig = Rig()
    rig.budgets(pdb("db", {"matchLabels": {"app": "db"}}, 0))
    rig.s.apply(PDB_RESOURCE, "MODIFIED", pdb("db", {"matchLabels": {"app": "db"}}, 3))
    rig.s.apply(PDB_RESOURCE, "ADDED", pdb("other", {}, 0))
    rig.run()
    assert {k: b.disruptions_allowed for k, b in rig.s.cache.budgets.items()} == {
        ("default", "db"): 3, ("default", "other"): 0}
    rig.s.apply(PDB_RESOURCE, "DELETED", pdb("other", {}, 0))
    rig.run()
    assert list(rig.s.cache.budgets) == [("default", "db")]


def test_a_plan_that_breaks_a_budget_says_how_many_in_the_event():
    rig = Rig()
    rig.budgets(pdb("all", {}, 1))
    rig.add(o.pod("hi", 8, priority=100))
    assert rig.left() == []
    note = rig.events.for_object("default/hi", "Preempting")[0].note
    assert note.endswith("; 1 of them break(s) a PodDisruptionBudget")


def test_a_malformed_budget_is_ignored_logged_and_counted(caplog):
    rig = Rig()
    with caplog.at_level(logging.WARNING, logger="toposched.cache"):
        rig.budgets(pdb("bad", {"matchExpressions": [{"key": "app", "operator": "Near"}]}, 0),
                    pdb("odd", {"matchLabels": {"app": "db"}}, "zero"),
                    pdb("db", {"matchLabels": {"app": "db"}}, 0))
    assert rig.s.metrics.invalid_budgets._value.get() == 2
    assert sorted(rig.s.cache.invalid_budgets) == ["default/bad", "default/odd"]
    assert any("PodDisruptionBudget default/odd: status.disruptionsAllowed" in r.getMessage() for r in caplog.records)
    rig.add(o.pod("hi", 4, priority=100))  # the good budget still counts and the loop goes on
    assert rig.left() == ["default/p"]
    rig.s.apply(PDB_RESOURCE, "MODIFIED", pdb("odd", {"matchLabels": {"app": "db"}}, 1))
    rig.run()
    assert rig.s.metrics.invalid_budgets._value.get() == 1
