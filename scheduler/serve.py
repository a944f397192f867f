"""``toposched serve --mode scheduler``: wire reflectors, loop, leader election and HTTP together.

Threads: one reflector per watched resource (nodes, pods, each PodGroup / job kind,
PodDisruptionBudgets), the scheduling loop, the leader elector, the binding pool, the
reporter and the HTTP server.
Every replica keeps a warm cache; only the lease holder binds. Readiness: nodes and pods
listed at least once. Liveness: the loop stepped within ``LIVENESS_S``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler.adapters import kube
from scheduler.leader import LeaderElector
from scheduler.loop import Scheduler
from scheduler.metrics import SchedulerMetrics
from scheduler.serve_config import ServeConfig
from scheduler.server import StatusServer

log = logging.getLogger("toposched.serve")

LIVENESS_S = 60.0


def default_identity() -> str:
    """``<hostname>_<uuid>``, as client-go names lease holders."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4()}"


@dataclass
class ServiceOptions:
    """What differs between a production start and a test start."""

    identity: str = ""
    serve_http: bool = True
    metrics_port: int | None = None  # None: the config's port
    on_bound: Callable[[str, str], None] | None = None


class SchedulerService:
    """A running scheduler: ``start()``, ``wait_ready()``, ``stop()``."""

    def __init__(self, config: ServeConfig, configuration: Any, options: ServiceOptions | None = None) -> None:
        opts = options or ServiceOptions()
        self.config = config
        self.identity = opts.identity or default_identity()
        self.metrics = SchedulerMetrics()
        self.api = kube.KubeApi(configuration, request_timeout_s=config.request_timeout_s,
                                limiter=kube.rate_limiter(config.api_qps, config.api_burst),
                                on_throttle=self.metrics.api_throttle.inc)
        self.binder = kube.KubeBinder(self.api)
        instance = f"{config.scheduler_name}-{self.identity.split('_')[0]}"
        self.events = kube.KubeEventSink(self.api, config.scheduler_name, instance)
        self.elector: LeaderElector | None = None
        le = config.leader_election
        if le.enabled:
            store = kube.KubeLeaseStore(self.api.unlimited(), le.lease_namespace, le.lease_name,
                                        timeout_s=max(1.0, le.renew_deadline_s / 2))
            self.elector = LeaderElector(store, self.identity, lease_duration_s=le.lease_duration_s,
                                         renew_deadline_s=le.renew_deadline_s, retry_period_s=le.retry_period_s,
                                         on_started=self._leading, on_stopped=self._not_leading)
        self.scheduler = Scheduler(config, self.binder, self.events, metrics=self.metrics,
                                   is_leader=lambda: self.is_leader, on_bound=opts.on_bound)
        resources = [kube.NODES, kube.PODS, *kube.GROUP_RESOURCES, kube.PDBS]
        self.reflectors = [kube.Reflector(self.api, r, self.scheduler, watch_timeout_s=config.watch_timeout_s,
                                          on_relist=self._relisted, on_error=self.scheduler._api_error)
                           for r in resources]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.http: StatusServer | None = None
        if opts.serve_http:
            port = config.metrics_port if opts.metrics_port is None else opts.metrics_port
            self.http = StatusServer(config.metrics_address, port, self._metrics, self.healthy, self.ready)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SchedulerService:
        for r in self.reflectors:
            r.start()
        self._spawn("toposched-loop", lambda: self.scheduler.run(self._stop))
        if self.elector is not None:
            # the lease is released in stop(), after the bindings in flight are done
            self._spawn("toposched-leader", lambda: self.elector.run(self._stop, release=False))  # type: ignore[union-attr]
        else:
            self.metrics.leader.set(1)
        if self.http is not None:
            self.http.start()
        log.info("started", extra={"identity": self.identity})
        return self

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready()[0]:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop deciding, let the bindings in flight finish, then release the lease (a standby
        that took over earlier could double-book their GPUs); close watches and the HTTP server."""
        self._stop.set()
        self.api.stop_limiting()  # requests queued on the rate limit finish now
        for t in self._threads:
            t.join(timeout=10)
        for r in self.reflectors:
            r.stop()
        self.scheduler.close()
        if self.elector is not None:
            self.elector.release()
        if self.http is not None:
            self.http.stop()
        self.api.close()
        log.info("stopped", extra={"identity": self.identity})

    def wait(self) -> None:
        """Block until ``stop()`` (or a signal handler setting it)."""
        while not self._stop.wait(1.0):
            pass

    # --- status ------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector is not None else True

    def healthy(self) -> tuple[bool, str]:
        age = self.scheduler.clock() - self.scheduler.last_step
        if age > LIVENESS_S:
            return False, f"scheduling loop stalled for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        missing = [r.res.name for r in self.reflectors[:2] if not r.synced.is_set()]
        if missing:
            return False, f"waiting for the first list of {', '.join(missing)}"
        if not self.scheduler.ready_to_schedule():
            return False, "cache not built yet"
        return True, "ok (leader)" if self.is_leader else "ok (standby)"

    def _metrics(self) -> tuple[bytes, str]:
        return self.metrics.render(), self.metrics.content_type

    def _leading(self) -> None:
        self.metrics.leader.set(1)

    def _not_leading(self) -> None:
        self.metrics.leader.set(0)

    def _relisted(self, resource: str, cause: str) -> None:
        self.metrics.relists.labels(resource=resource, cause=cause).inc()
        if cause not in ("start", "absent"):
            log.info("re-listed", extra={"resource": resource, "reason": cause})
