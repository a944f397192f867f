"""Fixtures: the test apiserver (real HTTP on 127.0.0.1) and schedulers started against it with short timings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from models.spec import LevelSpec
from scheduler.engine import GangConfig, PlacementConfig
from scheduler.serve import SchedulerService, ServiceOptions
from scheduler.serve_config import BackoffConfig, LeaderElectionConfig, ServeConfig
from tests.kube.apiserver import ApiServer, running_apiserver
from tests.kube.store import ApiStore
from tests.polling import wait_for  # noqa: F401 - re-exported to the integration tests

from . import objects


@pytest.fixture
def apiserver() -> Iterator[ApiServer]:
    """A running test apiserver with an empty store and a short bookmark interval."""
    store = ApiStore(history_window=100_000, bookmark_interval_s=0.2)
    with running_apiserver(store) as server:
        yield server


def fast_config(**overrides: Any) -> ServeConfig:
    """Short lease, backoff and watch timings so every scenario takes seconds."""
    base: dict[str, Any] = {
        "levels": [LevelSpec(name="rack", label=objects.RACK_LABEL)],
        "leader_election": LeaderElectionConfig(lease_namespace="default", lease_duration_s=1.0,
                                                renew_deadline_s=0.6, retry_period_s=0.2),
        "backoff": BackoffConfig(initial_s=0.05, max_s=0.2, unschedulable_retry_s=5.0),
        "placement": PlacementConfig(gang=GangConfig(time_limit_s=0.2)),
        "watch_timeout_s": 5, "bind_workers": 4, "metrics_port": 0, "metrics_address": "127.0.0.1",
        "request_timeout_s": 5.0,
    }
    base.update(overrides)
    return ServeConfig(**base)


class Schedulers:
    """Starts schedulers against one apiserver and stops them at the end of the test."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.running: list[SchedulerService] = []
        self.bound_by: dict[str, list[str]] = {}

    def start(self, name: str = "a", config: ServeConfig | None = None, serve_http: bool = False,
              wait_ready: bool = True) -> SchedulerService:
        cfg = self.server.kube_config()
        cfg.connection_pool_maxsize = 16
        log = self.bound_by.setdefault(name, [])
        svc = SchedulerService(config or fast_config(), cfg,
                               ServiceOptions(identity=f"{name}_test", serve_http=serve_http,
                                              on_bound=lambda key, node: log.append(key)))
        svc.start()
        self.running.append(svc)
        if wait_ready:
            assert svc.wait_ready(10), svc.ready()[1]
        return svc

    def stop(self, svc: SchedulerService) -> None:
        svc.stop()
        self.running.remove(svc)

    def stop_all(self) -> None:
        for svc in list(self.running):
            self.stop(svc)


@pytest.fixture
def schedulers(apiserver: ApiServer) -> Iterator[Schedulers]:
    s = Schedulers(apiserver)
    yield s
    s.stop_all()


def bound_pods(server: ApiServer, namespace: str = "default") -> dict[str, str]:
    """pod name -> node for every bound pod."""
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in server.store.list("pods", namespace)
            if p["spec"].get("nodeName")}


def events_for(server: ApiServer, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    """Stored events (core/v1 form) about object ``name``."""
    out = []
    for e in server.store.list("events"):
        obj = e.get("involvedObject") or e.get("regarding") or {}
        if obj.get("name") == name and (reason is None or e.get("reason") == reason):
            out.append(e)
    return out
