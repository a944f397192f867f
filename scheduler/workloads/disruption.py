"""PodDisruptionBudgets (policy/v1) as preemption reads them: label selectors, budgets, violations.

Pure, no I/O. The cache turns each PodDisruptionBudget object into a ``Budget`` with
``budget_from_k8s`` (a malformed one raises ``BudgetError`` and is left out); the
preemption planner and the extender count, with a ``Tally``, which victims' eviction would
take a budget's ``status.disruptionsAllowed`` below zero.

Label selectors follow metav1.LabelSelector: ``matchLabels`` AND ``matchExpressions``
(``In``, ``NotIn``, ``Exists``, ``DoesNotExist``). An empty selector (``{}``) selects every
pod of the budget's namespace and an absent (null) one selects none, as policy/v1 defines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.errors import ToposchedError

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# label keys and values (apimachinery validation: qualified names, DNS subdomain prefixes)
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A label selector that cannot be read; ``where`` is the field, ``problem`` what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class BudgetError(ToposchedError):
    """A PodDisruptionBudget that cannot be read: ``PodDisruptionBudget ns/name: field: problem``."""

    def __init__(self, key: str, where: str, problem: str) -> None:
        self.key = key
        self.where = where
        self.problem = problem
        super().__init__(f"PodDisruptionBudget {key}: {where}: {problem}")


@dataclass(frozen=True)
class Requirement:
    """One term of a selector: ``key`` ``operator`` ``values``."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present  # DoesNotExist


@dataclass(frozen=True)
class LabelSelector:
    """A parsed metav1.LabelSelector: every requirement must hold (none: selects everything)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        got = labels or {}
        return all(r.matches(got) for r in self.requirements)


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise SelectorError(where, f"label key {key!r} must be a non-empty string")
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        raise SelectorError(where, f"label key {key!r}: the prefix must be a DNS subdomain")
    if len(name) > 63 or not _NAME.match(name):
        raise SelectorError(where, f"label key {key!r}: the name must be at most 63 characters, alphanumerics, "
                                   "'-', '_' or '.', starting and ending with an alphanumeric")
    return key


def _check_value(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SelectorError(where, f"label value {value!r} must be a string")
    if value and (len(value) > 63 or not _NAME.match(value)):
        raise SelectorError(where, f"label value {value!r} must be at most 63 characters, alphanumerics, '-', "
                                   "'_' or '.', starting and ending with an alphanumeric")
    return value


def parse_label_selector(raw: Any, where: str = "selector") -> LabelSelector | None:
    """A metav1.LabelSelector dict -> ``LabelSelector``; None (absent) -> None, which selects nothing."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SelectorError(where, f"must be an object, not {type(raw).__name__}")
    reqs: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"{where}.matchLabels", "must be an object of label key -> value")
    for key in sorted(match_labels, key=str):
        value = _check_value(match_labels[key], f"{where}.matchLabels[{key}]")
        reqs.append(Requirement(_check_key(key, f"{where}.matchLabels"), "In", frozenset((value,))))
    exprs = raw.get("matchExpressions") or []
    if not isinstance(exprs, Sequence) or isinstance(exprs, str):
        raise SelectorError(f"{where}.matchExpressions", "must be a list")
    for i, expr in enumerate(exprs):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise SelectorError(at, "must be an object with key, operator and values")
        key = _check_key(expr.get("key"), f"{at}.key")
        op = expr.get("operator")
        if op not in OPERATORS:
            raise SelectorError(f"{at}.operator", f"{op!r} is not a valid label selector operator "
                                                  f"(one of {', '.join(OPERATORS)})")
        values = expr.get("values") or []
        if not isinstance(values, Sequence) or isinstance(values, str):
            raise SelectorError(f"{at}.values", "must be a list of strings")
        checked = frozenset(_check_value(v, f"{at}.values") for v in values)
        if op in ("In", "NotIn") and not checked:
            raise SelectorError(f"{at}.values", f"must not be empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and checked:
            raise SelectorError(f"{at}.values", f"must be empty for operator {op}")
        reqs.append(Requirement(key, op, checked))
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True)
class Budget:
    """What preemption needs of one PodDisruptionBudget."""

    namespace: str
    name: str
    selector: LabelSelector | None  # None: selects nothing
    disruptions_allowed: int
    disrupted: frozenset[str] = frozenset()  # status.disruptedPods: names already counted by the controller

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        return self.selector is not None and namespace == self.namespace and self.selector.matches(labels)


def budget_from_k8s(obj: Mapping[str, Any]) -> Budget:
    """A policy/v1 PodDisruptionBudget dict -> ``Budget`` (``BudgetError`` naming the field when unreadable)."""
    meta = obj.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    key = f"{ns}/{name}"
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, Mapping) or not isinstance(status, Mapping):
        raise BudgetError(key, "spec" if not isinstance(spec, Mapping) else "status", "must be an object")
    try:
        selector = parse_label_selector(spec.get("selector"), "spec.selector")
    except SelectorError as exc:
        raise BudgetError(key, exc.where, exc.problem) from None
    allowed = status.get("disruptionsAllowed", 0)  # an int32 the API always writes; 0 before the controller ran
    if not isinstance(allowed, int) or isinstance(allowed, bool):
        raise BudgetError(key, "status.disruptionsAllowed", f"{allowed!r} is not an integer")
    disrupted = status.get("disruptedPods") or {}
    if not isinstance(disrupted, Mapping):
        raise BudgetError(key, "status.disruptedPods", "must be an object of pod name -> time")
    return Budget(ns, name, selector, allowed, frozenset(str(k) for k in disrupted))


def covering(budgets: Sequence[Budget], pod_key: str, labels: Mapping[str, str] | None) -> tuple[int, ...]:
    """Indices of the ``budgets`` that select pod ``pod_key`` (``namespace/name``) with ``labels``."""
    ns = pod_key.partition("/")[0]
    return tuple(i for i, b in enumerate(budgets) if b.selects(ns, labels))


class Tally:
    """The disruptions each budget still allows while victims are taken one by one (kube-scheduler's walk)."""

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self.budgets = budgets
        self.left = [b.disruptions_allowed for b in budgets]

    def copy(self) -> Tally:
        out = Tally(self.budgets)
        out.left = list(self.left)
        return out

    def take(self, pod_key: str, covered: Iterable[int]) -> bool:
        """Count evicting ``pod_key`` against the budgets ``covered`` selects; True when one goes below zero.

        A pod the controller already lists in ``disruptedPods`` is not counted again."""
        name = pod_key.partition("/")[2]
        violates = False
        for i in covered:
            if name in self.budgets[i].disrupted:
                continue
            self.left[i] -= 1
            if self.left[i] < 0:
                violates = True
        return violates
