"""Selector grammar and patch formats of the test apiserver, checked without HTTP."""

from __future__ import annotations

import pytest

from .patch import PatchError, json_patch, merge_patch, strategic_merge
from .selectors import (
    SelectorError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "train", "tier": "gpu", "rank": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=train", True),
        ("app==train", True),
        ("app!=train", False),
        ("missing!=x", True),
        ("app in (serve, train)", True),
        ("app notin (train)", False),
        ("missing notin (x)", True),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("rank>2,rank<4", True),
        ("rank>3", False),
        ("app=train,tier=cpu", False),
        ("", True),
    ],
    ids=lambda v: str(v),
)
def test_label_selector_matches_like_apiserver(selector: str, expected: bool) -> None:
    """Each operator of the label selector grammar, including absent-label semantics of != and notin."""
    assert labels_match(parse_label_selector(selector), LABELS) is expected


@pytest.mark.parametrize("selector", ["app in ()", "a b", "app=in valid!", "-bad=x", "rank>x"],
                         ids=["empty-set", "space", "bad-value", "bad-key", "gt-not-int"])
def test_label_selector_rejects_bad_syntax(selector: str) -> None:
    """Malformed selectors raise SelectorError (the server answers 400)."""
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selector_empty_value_and_not_equal() -> None:
    """``spec.nodeName=`` selects unassigned pods; ``!=`` with empty value selects assigned ones."""
    unassigned = parse_field_selector("spec.schedulerName=gpu,spec.nodeName=")
    assigned = parse_field_selector("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed")
    pending = {"spec.schedulerName": "gpu", "spec.nodeName": "", "status.phase": "Pending"}
    running = {"spec.schedulerName": "gpu", "spec.nodeName": "n1", "status.phase": "Running"}
    done = {"spec.schedulerName": "gpu", "spec.nodeName": "n1", "status.phase": "Succeeded"}
    assert [fields_match(unassigned, v) for v in (pending, running, done)] == [True, False, False]
    assert [fields_match(assigned, v) for v in (pending, running, done)] == [False, True, False]


def test_field_selector_escapes() -> None:
    """Backslash escapes keep commas and equals signs inside values."""
    (term,) = parse_field_selector(r"metadata.name=a\,b\=c")
    assert (term.field, term.op, term.value) == ("metadata.name", "=", "a,b=c")


def test_strategic_merge_merges_conditions_by_type() -> None:
    """status.conditions merge by ``type``; other entries stay, the patched one is updated in place."""
    pod = {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                     {"type": "PodScheduled", "status": "True", "reason": "x"}]}}
    patched = strategic_merge(pod, {"status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}})
    assert patched["status"]["conditions"] == [
        {"type": "Ready", "status": "False"},
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
    ]
    assert pod["status"]["conditions"][1]["status"] == "True", "input must not be mutated"


def test_strategic_merge_directives() -> None:
    """``$patch: delete`` removes a keyed element, finalizers union, unknown lists are replaced, null deletes."""
    obj = {"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
           "spec": {"tolerations": [{"key": "k1"}], "containers": [{"name": "c1", "image": "i1"},
                                                                   {"name": "c2", "image": "i2"}]}}
    patched = strategic_merge(obj, {
        "metadata": {"finalizers": ["b"], "labels": {"x": None}},
        "spec": {"tolerations": [{"key": "k2"}], "containers": [{"name": "c1", "$patch": "delete"},
                                                                {"name": "c2", "image": "new"}],
                 "$setElementOrder/containers": [{"name": "c2"}]},
    })
    assert patched["metadata"] == {"finalizers": ["a", "b"], "labels": {"y": "2"}}
    assert patched["spec"]["tolerations"] == [{"key": "k2"}]
    assert patched["spec"]["containers"] == [{"name": "c2", "image": "new"}]


def test_strategic_merge_requires_merge_key() -> None:
    """An element of a keyed list without its key is a 400."""
    with pytest.raises(PatchError) as info:
        strategic_merge({}, {"status": {"conditions": [{"status": "True"}]}})
    assert info.value.code == 400


def test_merge_patch_replaces_lists() -> None:
    """RFC 7386: lists are replaced wholesale, null removes keys."""
    obj = {"status": {"conditions": [{"type": "A"}, {"type": "B"}]}, "x": 1}
    assert merge_patch(obj, {"status": {"conditions": [{"type": "C"}]}, "x": None}) == {
        "status": {"conditions": [{"type": "C"}]}}


def test_json_patch_operations() -> None:
    """add/replace/remove/test/copy/move, the ``-`` append index, and a failing test."""
    doc = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2]}
    out = json_patch(doc, [
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "replace", "path": "/list/0", "value": 9},
        {"op": "add", "path": "/list/-", "value": 3},
        {"op": "copy", "from": "/list", "path": "/copy"},
        {"op": "move", "from": "/metadata/labels/a", "path": "/moved"},
        {"op": "remove", "path": "/list/1"},
    ])
    assert out == {"metadata": {"labels": {"b/c": "2"}}, "list": [9, 3], "copy": [9, 2, 3], "moved": "1"}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/list/0", "value": 5}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
