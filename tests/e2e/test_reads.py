"""The e2e tests' reads (``PodReads``), checked against the test API server: no cluster needed.

The e2e modules are skipped without ``TOPOSCHED_E2E_KUBECONFIG``, so a broken helper would
only show on a real cluster; these tests run everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.reads import PodReads
from tests.kube.apiserver import running_apiserver


def _event(name: str, namespace: str, kind: str, reason: str, message: str) -> dict[str, Any]:
    return {"metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"kind": kind, "name": name, "namespace": namespace if kind == "Pod" else ""},
            "reason": reason, "message": message, "type": "Warning"}


@pytest.fixture
def api() -> Iterator[Any]:
    from scheduler.adapters.kube import KubeApi

    with running_apiserver() as server:
        server.store.create("events", _event("llm-1", "ns-a", "Pod", "NodeFailed", "on the pod"))
        server.store.create("events", _event("gpu-7", "default", "Node", "NodeFailed", "on the node"))
        yield KubeApi(server.kube_config(), request_timeout_s=15.0)


def test_events_are_read_from_the_test_namespace_by_default(api):
    assert PodReads("ns-a").events(api, "llm-1", "NodeFailed") == ["on the pod"]
    assert PodReads("ns-a").events(api, "gpu-7", "NodeFailed") == []


def test_events_of_a_node_are_read_from_the_namespace_given(api):
    """Node events live in ``default``; test_failures_e2e.py reads them with a namespace argument."""
    assert PodReads("ns-a").events(api, "gpu-7", "NodeFailed", "default") == ["on the node"]
