"""``toposched serve --mode extender``: reflectors -> cache -> verbs -> HTTP(S), plus metrics and health.

Threads: one reflector per watched resource (nodes, all non-terminal pods, PodGroup / job
kinds, PodDisruptionBudgets) writing into ``CacheState``; the extender HTTP server (one thread per connection);
a ticker that expires gang reservations and holds and rebuilds the topology after node
changes; the status server (``/metrics``, ``/healthz``, ``/readyz``). No leader election:
each kube-scheduler replica calls its own sidecar and only the leading kube-scheduler
schedules, so every replica keeps a warm cache and answers.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram

from scheduler.adapters import kube
from scheduler.cache import ClusterCache
from scheduler.engine import Engine
from scheduler.extender.handlers import ExtenderHandlers
from scheduler.extender.http import DEFAULT_MAX_BODY_BYTES, ExtenderServer
from scheduler.extender.state import CacheState
from scheduler.metrics import ATTEMPT_BUCKETS, SchedulerMetrics
from scheduler.serve import default_identity
from scheduler.serve_config import ServeConfig
from scheduler.server import StatusServer

log = logging.getLogger("toposched.extender")

TICK_S = 1.0


@dataclass
class ExtenderOptions:
    """Where and how the extender listens."""

    host: str = "127.0.0.1"
    port: int = 8888
    url_prefix: str = "/toposched"
    ssl_context: ssl.SSLContext | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    bind: bool = True  # False: kube-scheduler binds (no bindVerb); our bind verb then refuses
    serve_status: bool = True
    status_port: int | None = None  # None: the config's metrics_port


class ExtenderService:
    """A running extender: ``start()``, ``wait_ready()``, ``stop()``."""

    def __init__(self, config: ServeConfig, configuration: Any, options: ExtenderOptions | None = None) -> None:
        opts = options or ExtenderOptions()
        self.config = config
        self.identity = default_identity()
        self.metrics = SchedulerMetrics()
        self.request_duration = Histogram(
            "toposched_extender_request_duration_seconds", "Extender verb latency by verb and HTTP status.",
            ["verb", "code"], buckets=ATTEMPT_BUCKETS, registry=self.metrics.registry)
        self.api = kube.KubeApi(configuration, request_timeout_s=config.request_timeout_s,
                                limiter=kube.rate_limiter(config.api_qps, config.api_burst),
                                on_throttle=self.metrics.api_throttle.inc)
        self.state = CacheState(ClusterCache(config.scheduler_name, config.levels))
        instance = f"toposched-extender-{self.identity.split('_')[0]}"
        events = kube.KubeEventSink(self.api, "toposched-extender", instance)
        binder = kube.KubeBinder(self.api) if opts.bind else None
        self.handlers = ExtenderHandlers(self.state, Engine.from_config(config.placement), binder=binder,
                                         events=events, gang_timeout_s=config.gang_timeout_s,
                                         arrivals=config.workload_mix.arrival_mix())
        resources = [kube.NODES, kube.PODS, *kube.GROUP_RESOURCES, kube.PDBS]
        self.reflectors = [kube.Reflector(self.api, r, self.state, watch_timeout_s=config.watch_timeout_s,
                                          on_relist=self._relisted) for r in resources]
        self.state.synced_when(*(r.synced for r in self.reflectors[:2]))
        self.server = ExtenderServer(self.handlers, host=opts.host, port=opts.port, url_prefix=opts.url_prefix,
                                     ssl_context=opts.ssl_context, max_body_bytes=opts.max_body_bytes,
                                     observer=self._observe)
        self.status: StatusServer | None = None
        if opts.serve_status:
            port = config.metrics_port if opts.status_port is None else opts.status_port
            self.status = StatusServer(config.metrics_address, port, self._render, self.healthy, self.ready)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> ExtenderService:
        for r in self.reflectors:
            r.start()
        self._ticker = threading.Thread(target=self._tick, name="toposched-extender-tick", daemon=True)
        self._ticker.start()
        self.server.start()
        if self.status is not None:
            self.status.start()
        log.info("extender serving at %s", self.server.url, extra={"identity": self.identity})
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        return self._stop.wait(0) or _wait(lambda: self.ready()[0], timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self.api.stop_limiting()  # requests queued on the rate limit finish now
        self.server.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        for r in self.reflectors:
            r.stop()
        if self.status is not None:
            self.status.stop()
        self.api.close()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.state.refresh()
                self.handlers.tick()
                self._gpu_gauges()
            except Exception:  # noqa: BLE001 - housekeeping must not die
                log.exception("extender housekeeping failed")

    def _gpu_gauges(self) -> None:
        with self.state._lock:
            stats = self.state.cache.gpu_stats()
            nodes = len(self.state.cache.nodes)
        for model, (used, free, frag) in stats.items():
            self.metrics.gpus.labels(model=model, state="allocated").set(used)
            self.metrics.gpus.labels(model=model, state="free").set(free)
            self.metrics.fragmentation.labels(model=model).set(frag)
        self.metrics.cache_nodes.set(nodes)

    def healthy(self) -> tuple[bool, str]:
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.state.is_synced():
            missing = [r.res.name for r in self.reflectors[:2] if not r.synced.is_set()]
            return False, f"waiting for the first list of {', '.join(missing) or 'the cache'}"
        return True, "ok"

    def _observe(self, verb: str, code: int, seconds: float) -> None:
        self.request_duration.labels(verb=verb, code=str(code)).observe(seconds)

    def _render(self) -> tuple[bytes, str]:
        return self.metrics.render(), self.metrics.content_type

    def _relisted(self, resource: str, cause: str) -> None:
        self.metrics.relists.labels(resource=resource, cause=cause).inc()


def _wait(check: Any, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False
