"""Builders for extender tests: Node and Pod API dicts, a state built from them, handlers with fakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.placement import Placement
from models.spec import LevelSpec
from scheduler.engine import Engine, PlacementConfig
from scheduler.extender.handlers import ExtenderHandlers
from scheduler.extender.state import CacheState
from scheduler.fakes import InMemoryBinder, RecordingEvents
from scheduler.workloads import assignment_annotations
from tests.clock import ManualClock as Clock
from tests.kube.conftest import apiserver  # noqa: F401 - the local API server fixture, re-exported
from tests.paths import shared_or_skip

RACK_LABEL = "example.com/rack"
LEVELS = [LevelSpec(name="rack", label=RACK_LABEL)]


def k8s_node(name: str, gpus: int = 8, *, rack: str | None = None, ready: bool = True, cpu: str = "64",
             memory: str = "512Gi", labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node as the API serves it: allocatable, Ready condition, optional rack label."""
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if rack is not None:
        all_labels[RACK_LABEL] = rack
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": all_labels},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus), "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def gpu_pod(name: str, gpus: int = 1, *, ns: str = "ml", node: str | None = None, on_gpus: tuple[int, ...] = (),
            priority: int = 0, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
            cpu: str = "1", memory: str = "1Gi", scheduler: str = "default-scheduler") -> dict[str, Any]:
    """A pod asking for ``gpus`` nvidia.com/gpu; bound to ``node`` (GPUs ``on_gpus`` recorded) when given."""
    resources = {"cpu": cpu, "memory": memory}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    notes = dict(annotations or {})
    spec: dict[str, Any] = {"schedulerName": scheduler, "priority": priority,
                            "containers": [{"name": "c", "image": "registry.invalid/cuda:1",
                                            "resources": {"requests": resources, "limits": dict(resources)}}]}
    if node is not None:
        spec["nodeName"] = node
        if on_gpus:
            notes.update(assignment_annotations(Placement(f"{ns}/{name}", node, 0, on_gpus, 1000, 0, 0)))
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": dict(labels or {}),
                     "annotations": notes},
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


def gang_pod(name: str, gang: str, size: int, gpus: int = 8, **kw: Any) -> dict[str, Any]:
    """A member of a toposched.io/gang of ``size`` members."""
    notes = {"toposched.io/gang": gang, "toposched.io/gang-size": str(size), **kw.pop("annotations", {})}
    return gpu_pod(name, gpus, annotations=notes, **kw)


def filter_args(pod: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def make_handlers(nodes: list[dict[str, Any]], pods: list[dict[str, Any]] = (), *, clock: Clock | None = None,
                  levels: list[LevelSpec] | None = None, profile: str = "toposched",
                  **kw: Any) -> ExtenderHandlers:
    """Handlers over a synced state of ``nodes`` and ``pods``, an in-memory binder and event recorder."""
    state = CacheState.from_objects(nodes, pods, levels=LEVELS if levels is None else levels)
    engine = Engine.from_config(PlacementConfig(profile=profile))
    return ExtenderHandlers(state, engine, binder=kw.pop("binder", InMemoryBinder()),
                            events=kw.pop("events", RecordingEvents()), clock=clock or Clock(), **kw)


def fixture_path(name: str) -> Path:
    return shared_or_skip(f"fixtures/extender/{name}")


def fixture_json(name: str) -> Any:
    return json.loads(fixture_path(name).read_text())


@pytest.fixture
def clock() -> Clock:
    return Clock()
