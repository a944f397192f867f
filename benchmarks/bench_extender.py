"""Extender verb latency over HTTP with 1,000 nodes in every request: p50 / p99 per verb.

Usage: python benchmarks/bench_extender.py [--nodes 1000] [--iterations 200] [--seed 0] [--gang-size 16]

The extender (``ExtenderServer`` + ``ExtenderHandlers`` + ``CacheState``) runs in this
process on 127.0.0.1; a keep-alive client sends pre-encoded bodies, so a sample is the
round trip: request bytes out, decode, verb, encode, reply bytes back. The cluster:
``--nodes`` DGX H100 nodes (8 GPUs on NVSwitch, topology annotation), racks of 16, about half
the GPUs held by bound pods. Cases:

- filter / prioritize, a 4-GPU pod, with ``NodeNames`` (nodeCacheCapable) and with full
  ``Nodes`` objects (the payload kube-scheduler sends otherwise);
- bind: filter (untimed) then bind of a fresh pod; the binder is in memory, so the API
  server round trip is not included;
- preempt: a priority-100 4-GPU pod on a full cluster (four 2-GPU pods per node), every node a
  candidate with no victims proposed: the extender picks the victims on all of them;
- gang: the first member's filter (places and reserves the whole ``--gang-size`` x 8-GPU
  gang, preferred within a rack) and a later member's filter (answers from the reservation).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import presets  # noqa: E402
from models.placement import Placement  # noqa: E402
from models.readers.annotation import ANNOTATION_KEY, encode_topology  # noqa: E402
from models.spec import LevelSpec  # noqa: E402
from scheduler.engine import Engine  # noqa: E402
from scheduler.extender.handlers import ExtenderHandlers  # noqa: E402
from scheduler.extender.http import ExtenderServer  # noqa: E402
from scheduler.extender.state import CacheState  # noqa: E402
from scheduler.fakes import InMemoryBinder  # noqa: E402
from scheduler.workloads import assignment_annotations  # noqa: E402

RACK = "example.com/rack"
LEVELS = [LevelSpec(name="rack", label=RACK)]


def node(i: int, topology: str) -> dict[str, Any]:
    name = f"gpu-{i:04d}"
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}",
                         "labels": {"kubernetes.io/hostname": name, RACK: f"rack-{i // 16:03d}",
                                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                         "annotations": {ANNOTATION_KEY: topology}},
            "spec": {},
            "status": {"allocatable": {"cpu": "192", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8"},
                       "capacity": {"cpu": "192", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def pod(name: str, gpus: int, *, node_name: str | None = None, on: tuple[int, ...] = (), priority: int = 0,
        annotations: dict[str, str] | None = None, scheduler: str = "toposched") -> dict[str, Any]:
    res = {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": str(gpus)}
    notes = dict(annotations or {})
    spec: dict[str, Any] = {"schedulerName": scheduler, "priority": priority,
                            "containers": [{"name": "main", "image": "registry.invalid/train:1",
                                            "resources": {"requests": res, "limits": res}}]}
    if node_name is not None:
        spec["nodeName"] = node_name
        notes.update(assignment_annotations(Placement(f"bench/{name}", node_name, 0, on, 1000, 0, 0)))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "bench", "uid": f"uid-{name}", "annotations": notes},
            "spec": spec, "status": {"phase": "Running" if node_name else "Pending"}}


def half_full(nodes: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """About half the GPUs held: each node gets 0-8 GPUs in 1-, 2- or 4-GPU pods."""
    pods = []
    for nd in nodes:
        name, used = nd["metadata"]["name"], 0
        target = int(rng.integers(0, 9))
        while used < target:
            k = int(min(rng.choice([1, 2, 4]), target - used))
            pods.append(pod(f"{name}-p{used}", k, node_name=name, on=tuple(range(used, used + k))))
            used += k
    return pods


def full(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [pod(f"{nd['metadata']['name']}-q{j}", 2, node_name=nd["metadata"]["name"], on=(2 * j, 2 * j + 1))
            for nd in nodes for j in range(4)]


class Client:
    def __init__(self, server: ExtenderServer) -> None:
        self.conn = http.client.HTTPConnection(*server.address, timeout=60)
        self.prefix = server.url_prefix

    def post(self, verb: str, body: bytes) -> tuple[float, Any]:
        t0 = time.perf_counter()
        self.conn.request("POST", f"{self.prefix}/{verb}", body=body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"{verb}: HTTP {resp.status}: {data[:300]!r}")
        return dt, json.loads(data)


def serve(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> tuple[ExtenderServer, ExtenderHandlers]:
    state = CacheState.from_objects(nodes, pods, scheduler_name="toposched", levels=LEVELS)
    state.refresh()
    handlers = ExtenderHandlers(state, Engine.from_config(), binder=InMemoryBinder())
    return ExtenderServer(handlers, url_prefix="/toposched").start(), handlers


def stats(samples: list[float]) -> tuple[float, float, float]:
    a = np.array(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gang-size", type=int, default=16)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    topo = encode_topology(presets.node_type("dgx-h100").topology, source="bench", generated_at="2026-01-01T00:00:00Z")
    nodes = [node(i, topo) for i in range(args.nodes)]
    names = [n["metadata"]["name"] for n in nodes]
    rows: list[tuple[str, str, int, list[float]]] = []

    server, handlers = serve(nodes, half_full(nodes, rng))
    client = Client(server)
    for mode, key, value in (("NodeNames", "NodeNames", names), ("Nodes", "Nodes", {"metadata": {}, "items": nodes})):
        for verb in ("filter", "prioritize"):
            samples = []
            for i in range(args.iterations):
                body = json.dumps({"Pod": pod(f"{verb}-{mode}-{i}", 4), key: value}).encode()
                samples.append(client.post(verb, body)[0])
            size = len(body)
            rows.append((verb, f"{mode} ({size / 1e6:.2f} MB)", args.nodes, samples))
    samples = []
    for i in range(args.iterations):
        p = pod(f"bind-{i}", 4)
        _, res = client.post("filter", json.dumps({"Pod": p, "NodeNames": names}).encode())
        target = res["NodeNames"][0]
        m = p["metadata"]
        body = json.dumps({"PodName": m["name"], "PodNamespace": "bench", "PodUID": m["uid"], "Node": target}).encode()
        dt, res = client.post("bind", body)
        assert res == {"Error": ""}, res
        samples.append(dt)
        handlers.state.apply("pods", "DELETED", p)  # keep the cluster as it was
    rows.append(("bind", "in-memory binder", 1, samples))
    samples_first, samples_next = [], []
    for i in range(max(args.iterations // 10, 5)):
        gang = [pod(f"g{i}-w{j}", 8, annotations={"toposched.io/gang": f"g{i}",
                                                   "toposched.io/gang-size": str(args.gang_size),
                                                   "toposched.io/preferred-level": "rack"})
                for j in range(args.gang_size)]
        for p in gang:
            handlers.state.apply("pods", "ADDED", p)
        dt, res = client.post("filter", json.dumps({"Pod": gang[0], "NodeNames": names}).encode())
        assert len(res["NodeNames"]) == 1, res["FailedNodes"].get(names[0])
        samples_first.append(dt)
        samples_next.append(client.post("filter", json.dumps({"Pod": gang[1], "NodeNames": names}).encode())[0])
        handlers.reservations.release(f"bench/g{i}")
        for p in gang:
            handlers.state.apply("pods", "DELETED", p)
    rows.append(("filter", f"gang first member ({args.gang_size}x8 GPUs)", args.nodes, samples_first))
    rows.append(("filter", "gang later member", args.nodes, samples_next))
    server.stop()

    server, handlers = serve(nodes, full(nodes))
    client = Client(server)
    samples = []
    victims = {n: {"Pods": [], "NumPDBViolations": 0} for n in names}
    for i in range(max(args.iterations // 4, 5)):
        body = json.dumps({"Pod": pod(f"vip-{i}", 4, priority=100), "NodeNameToMetaVictims": victims}).encode()
        dt, res = client.post("preempt", body)
        assert len(res["NodeNameToMetaVictims"]) == args.nodes
        samples.append(dt)
    rows.append(("preempt", "full cluster, victims chosen on every node", args.nodes, samples))
    server.stop()

    print(f"# bench_extender: {platform.platform()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"# {args.nodes} nodes x 8 GPUs, seed {args.seed}; milliseconds per HTTP round trip")
    print()
    print("| verb | request | nodes | samples | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for verb, what, n, s in rows:
        p50, p99, mx = stats(s)
        print(f"| {verb} | {what} | {n} | {len(s)} | {p50:.1f} | {p99:.1f} | {mx:.1f} |")


if __name__ == "__main__":
    main()
