"""Label selectors and PodDisruptionBudgets as preemption reads them (scheduler/workloads/disruption.py)."""

from __future__ import annotations

import pytest

from scheduler.workloads.disruption import (
    Budget,
    BudgetError,
    SelectorError,
    Tally,
    budget_from_k8s,
    covering,
    parse_label_selector,
)

WEB = {"app": "web", "tier": "front"}
DB = {"app": "db"}
NONE: dict[str, str] = {}


@pytest.mark.parametrize("selector,labels,expected", [
    ({}, WEB, True),  # empty: everything
    ({}, NONE, True),
    ({"matchLabels": {}, "matchExpressions": []}, WEB, True),
    ({"matchLabels": {"app": "web"}}, WEB, True),
    ({"matchLabels": {"app": "web"}}, DB, False),
    ({"matchLabels": {"app": "web", "tier": "back"}}, WEB, False),  # every label must match
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, DB, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, NONE, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, DB, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, WEB, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, NONE, True),  # absent: not in
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, WEB, True),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, DB, False),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, DB, True),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, WEB, False),
    ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, WEB, False),
    ({"matchLabels": {"example.com/team": "a"}}, {"example.com/team": "a"}, True),
])
def test_selector_matching(selector, labels, expected):
    assert parse_label_selector(selector).matches(labels) is expected


def test_a_null_selector_selects_nothing_and_an_empty_one_everything_in_the_namespace():
    assert parse_label_selector(None) is None
    null = Budget("ml", "none", None, 0)
    empty = Budget("ml", "all", parse_label_selector({}), 0)
    assert not null.selects("ml", WEB)
    assert empty.selects("ml", WEB) and empty.selects("ml", None)
    assert not empty.selects("web", WEB)  # another namespace


@pytest.mark.parametrize("selector,where", [
    ({"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}, "sel.matchExpressions[0].operator"),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}, "sel.matchExpressions[0].values"),
    ({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}, "sel.matchExpressions[0].values"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "sel.matchExpressions[0].key"),
    ({"matchExpressions": "app"}, "sel.matchExpressions"),
    ({"matchLabels": ["app"]}, "sel.matchLabels"),
    ({"matchLabels": {"app": 3}}, "sel.matchLabels[app]"),
    ({"matchLabels": {"bad key!": "x"}}, "sel.matchLabels"),
    ({"matchLabels": {"app": "not a value"}}, "sel.matchLabels[app]"),
    ("app=web", "sel"),
])
def test_malformed_selectors_name_the_field(selector, where):
    with pytest.raises(SelectorError) as err:
        parse_label_selector(selector, "sel")
    assert err.value.where == where


def pdb(name="db", ns="ml", selector=None, status=None) -> dict:
    obj = {"metadata": {"name": name, "namespace": ns}, "spec": {}}
    if selector is not None:
        obj["spec"]["selector"] = selector
    if status is not None:
        obj["status"] = status
    return obj


def test_budget_from_k8s_reads_selector_allowed_and_disrupted_pods():
    b = budget_from_k8s(pdb(selector={"matchLabels": DB}, status={
        "disruptionsAllowed": 2, "disruptedPods": {"db-0": "2026-07-01T12:00:00Z"}}))
    assert (b.key, b.disruptions_allowed, b.disrupted) == ("ml/db", 2, frozenset({"db-0"}))
    assert b.selects("ml", DB) and not b.selects("ml", WEB)
    assert budget_from_k8s(pdb(selector={})).disruptions_allowed == 0  # no status yet: nothing allowed
    assert budget_from_k8s(pdb()).selector is None


@pytest.mark.parametrize("obj,where", [
    (pdb(selector={"matchExpressions": [{"key": "a", "operator": "Bogus"}]}), "spec.selector.matchExpressions[0]"),
    (pdb(selector={}, status={"disruptionsAllowed": "1"}), "status.disruptionsAllowed"),
    (pdb(selector={}, status={"disruptionsAllowed": True}), "status.disruptionsAllowed"),
    (pdb(selector={}, status={"disruptedPods": ["x"]}), "status.disruptedPods"),
])
def test_malformed_budgets_raise_naming_budget_and_field(obj, where):
    with pytest.raises(BudgetError) as err:
        budget_from_k8s(obj)
    assert err.value.key == "ml/db" and err.value.where.startswith(where)
    assert str(err.value).startswith(f"PodDisruptionBudget ml/db: {where}")


def test_tally_counts_victims_against_their_budgets_and_skips_pods_already_disrupted():
    budgets = [Budget("ml", "db", parse_label_selector({"matchLabels": DB}), 1, frozenset({"db-9"})),
               Budget("ml", "all", parse_label_selector({}), 5)]
    assert covering(budgets, "ml/db-0", DB) == (0, 1)
    assert covering(budgets, "ml/web-0", WEB) == (1,)
    assert covering(budgets, "other/db-0", DB) == ()
    t = Tally(budgets)
    assert t.take("ml/db-9", (0, 1)) is False  # already counted by the controller for budget db
    assert t.take("ml/db-0", (0, 1)) is False  # db: 1 -> 0
    trial = t.copy()
    assert t.take("ml/db-1", (0, 1)) is True  # db: 0 -> -1
    assert trial.left == [0, 3] and t.left == [-1, 2]
