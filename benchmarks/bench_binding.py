"""Binding throughput of the live scheduler against the test API server (real HTTP, the official client).

Usage: python benchmarks/bench_binding.py [--nodes 500] [--pods 2000] [--gang-size 8] [--repeat 1]

The test API server (tests/kube) runs in its own process, preloaded with ``--nodes`` 8-GPU
nodes (4 racks' worth of labels) and ``--pods`` pending single-GPU pods. The scheduler
(``SchedulerService``: reflectors, loop, leader election, binding pool, event writer) runs in
this process. Throughput = pods / time from the first to the last successful binding.

Cases: single pods with Scheduled events (the default), single pods without them, and the
same pods as gangs of ``--gang-size`` (coscheduling label + PodGroup). With 2+ CPUs the
server is pinned to the last CPU and the scheduler to the others, so they do not share one.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.spec import LevelSpec  # noqa: E402
from scheduler.serve import SchedulerService, ServiceOptions  # noqa: E402
from scheduler.serve_config import LeaderElectionConfig, ServeConfig  # noqa: E402

RACK = "example.com/rack"


def _node(i: int) -> dict[str, Any]:
    name = f"gpu-{i:04d}"
    alloc = {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, RACK: f"rack-{i // 32}",
                                                  "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "status": {"allocatable": alloc, "capacity": alloc, "conditions": [{"type": "Ready", "status": "True"}]}}


def _pod(i: int, gang: int | None) -> dict[str, Any]:
    labels = {} if gang is None else {"scheduling.x-k8s.io/pod-group": f"job-{gang}"}
    res = {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "1"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{i:05d}", "namespace": "bench", "labels": labels},
            "spec": {"schedulerName": "toposched",
                     "containers": [{"name": "main", "image": "registry.example/app:1",
                                     "resources": {"requests": res, "limits": {"nvidia.com/gpu": "1"}}}]}}


def _serve(conn: Any, nodes: int, pods: int, gang_size: int, cpu: int | None) -> None:
    """Child process: preload the store, serve until told to stop, report the bound count."""
    sys.path.insert(0, str(ROOT))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from tests.kube.apiserver import running_apiserver
    from tests.kube.store import ApiStore

    store = ApiStore(history_window=200_000, bookmark_interval_s=5.0)
    for i in range(nodes):
        store.create("nodes", _node(i))
    for g in range(pods // gang_size if gang_size > 1 else 0):
        store.create("podgroups.scheduling.x-k8s.io", {
            "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": f"job-{g}", "namespace": "bench"}, "spec": {"minMember": gang_size}})
    for i in range(pods):
        store.create("pods", _pod(i, i // gang_size if gang_size > 1 else None))
    with running_apiserver(store) as server:
        conn.send(server.url)
        conn.recv()  # "stop"
        bound = sum(1 for p in store.list("pods", "bench") if p["spec"].get("nodeName"))
        conn.send(bound)


def run_case(nodes: int, pods: int, gang_size: int, scheduled_events: bool, timeout_s: float,
             bind_workers: int = 16, api_qps: float = 0.0, api_burst: int = 100) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, nodes, pods, gang_size, server_cpu), daemon=True)
    proc.start()
    url = parent.recv()
    if server_cpu is not None:
        os.sched_setaffinity(0, set(cpus[:-1]))
    from kubernetes import client

    times: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def on_bound(key: str, node: str) -> None:
        with lock:
            times.append(time.perf_counter())
            if len(times) >= pods:
                done.set()

    config = ServeConfig(levels=[LevelSpec(name="rack", label=RACK)], scheduled_events=scheduled_events,
                         bind_workers=bind_workers, api_qps=api_qps, api_burst=api_burst,
                         leader_election=LeaderElectionConfig(lease_namespace="default"), metrics_port=0)
    cfg = client.Configuration(host=url)
    cfg.connection_pool_maxsize = config.bind_workers + 8
    svc = SchedulerService(config, cfg, ServiceOptions(identity="bench_0", serve_http=False, on_bound=on_bound))
    t_start = time.perf_counter()
    svc.start()
    done.wait(timeout_s)
    svc.scheduler.reporter.flush(30)
    svc.stop()
    os.sched_setaffinity(0, set(cpus))
    parent.send("stop")
    bound = parent.recv()
    proc.join(10)
    span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return {"case": (f"gangs of {gang_size}" if gang_size > 1 else "single pods")
            + ("" if scheduled_events else ", no Scheduled events"),
            "bound": bound, "startup_s": (times[0] - t_start) if times else float("nan"),
            "span_s": span, "pods_per_s": (len(times) - 1) / span if len(times) > 1 else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--gang-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--bind-workers", type=int, default=16, help="concurrent binding calls (config bind_workers)")
    ap.add_argument("--api-qps", type=float, default=0.0, help="client-side request rate limit (config api_qps; 0: off)")
    ap.add_argument("--api-burst", type=int, default=100, help="config api_burst")
    ap.add_argument("--single-only", action="store_true", help="only the single pods with events case")
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("toposched").setLevel(logging.ERROR)
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={len(os.sched_getaffinity(0))} "
          f"python={platform.python_version()} {platform.system()} {platform.release()}")
    print(f"nodes={args.nodes} pods={args.pods} (1 GPU each), bind_workers={args.bind_workers}, "
          f"api_qps={args.api_qps:g} api_burst={args.api_burst}\n")
    print(f"{'case':<34} {'bound':>6} {'startup s':>10} {'first->last s':>14} {'pods/s':>8}")
    cases = [(1, True)] if args.single_only else [(1, True), (1, False), (args.gang_size, True)]
    for gang, events in cases:
        for _ in range(args.repeat):
            r = run_case(args.nodes, args.pods, gang, events, args.timeout, args.bind_workers, args.api_qps,
                         args.api_burst)
            print(f"{r['case']:<34} {r['bound']:>6} {r['startup_s']:>10.2f} {r['span_s']:>14.2f} "
                  f"{r['pods_per_s']:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
