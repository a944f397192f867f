"""Micro benchmark of scheduler.gpuset.choose_gpus: p50/p99 per call over random free masks.

Usage: python benchmarks/bench_gpuset.py [--calls 2000] [--seed 0] [--free-share 0.6]

Per topology and request size it reports the one-off cost of the first call (building
the per-node-type tables) and the p50/p99 of later calls, each on a fresh random free
mask (every GPU free with probability ``--free-share``), plus the machine it ran on.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.spec import GpuSpec, NicSpec, NodeTopologySpec, NvLinkSpec, NvSwitchSpec, PcieSpec
from models.topology import NodeTypeArrays, node_type_arrays
from scheduler import gpuset

# DGX-1 Volta hybrid cube-mesh: (a, b, bonded NVLinks); PCIe switch pairs 0-1, 2-3, 4-5, 6-7.
DGX1_NVLINKS = ((0, 1, 1), (0, 2, 1), (0, 3, 2), (0, 4, 2), (1, 2, 2), (1, 3, 1), (1, 5, 2), (2, 3, 2),
                (2, 6, 1), (3, 7, 1), (4, 5, 1), (4, 6, 1), (4, 7, 2), (5, 6, 2), (5, 7, 1), (6, 7, 2))


def dgx1_volta() -> NodeTypeArrays:
    pcie = tuple(PcieSpec(gpu=g, switch=f"pex{g // 2}", host_bridge=f"rc{g // 4}", numa=g // 4) for g in range(8))
    links = tuple(NvLinkSpec(gpus=(a, b), links=n) for a, b, n in DGX1_NVLINKS)
    return node_type_arrays(NodeTopologySpec(gpus=GpuSpec(count=8, model="V100"), nvlinks=links, pcie=pcie))


def nvswitch(n: int, links: int) -> NodeTypeArrays:
    return node_type_arrays(NodeTopologySpec(
        gpus=GpuSpec(count=n, model="H100"), nvswitch=NvSwitchSpec(links_per_gpu=links),
        numa=tuple(g * 2 // n for g in range(n)),
        nics=tuple(NicSpec(name=f"nic{g}", gpus=(g,), rail=g) for g in range(n))))


def pcie_bridged(n: int) -> NodeTypeArrays:
    """PCIe cards in NVLink-bridged pairs, 4 per switch (the last may hold fewer), switches split over two sockets."""
    per_socket = -(-n // 8)  # switches per socket, rounded up
    pcie = tuple(PcieSpec(gpu=g, switch=f"pex{g // 4}", upstream=f"up{g // 4 // per_socket}",
                          numa=g // 4 // per_socket) for g in range(n))
    links = tuple(NvLinkSpec(gpus=(g, g + 1), links=4) for g in range(0, n - 1, 2))
    return node_type_arrays(NodeTopologySpec(gpus=GpuSpec(count=n, model="A40"), nvlinks=links, pcie=pcie))


def pcie_tree(n: int) -> NodeTypeArrays:
    """PCIe only: 2 GPUs per switch, 4 per upstream switch, two sockets."""
    pcie = tuple(PcieSpec(gpu=g, switch=f"pex{g // 2}", upstream=f"up{g // 4}", host_bridge=f"rc{g // 4}",
                          numa=g * 2 // n) for g in range(n))
    return node_type_arrays(NodeTopologySpec(gpus=GpuSpec(count=n, model="L40S"), pcie=pcie))


TOPOLOGIES: tuple[tuple[str, str, Callable[[], NodeTypeArrays]], ...] = (
    ("dgx1-volta-8 (hybrid cube-mesh)", "exact", dgx1_volta),
    ("pcie-8 (switch pairs)", "exact", lambda: pcie_tree(8)),
    ("pcie-bridged-10", "exact", lambda: pcie_bridged(10)),
    ("hgx-h100-8 (NVSwitch)", "uniform", lambda: nvswitch(8, 18)),
    ("dgx2-16 (NVSwitch)", "uniform", lambda: nvswitch(16, 6)),
    ("pcie-bridged-16", "ranked", lambda: pcie_bridged(16)),
    ("pcie-24", "ranked/greedy", lambda: pcie_tree(24)),
)


def machine_info() -> list[str]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [f"platform: {platform.platform()}", f"cpu: {cpu}",
            f"python: {platform.python_version()} ({platform.python_implementation()})",
            f"numpy: {np.__version__}"]


def bench(t: NodeTypeArrays, size: int, calls: int, share: float, rng: np.random.Generator) -> tuple[float, ...]:
    start = time.perf_counter()
    gpuset.choose_gpus(t, np.ones(t.n_gpus, dtype=bool), size)
    first_us = (time.perf_counter() - start) * 1e6
    masks = rng.random((calls, t.n_gpus)) < share
    times = np.empty(calls)
    placed = 0
    for i in range(calls):
        start = time.perf_counter()
        got = gpuset.choose_gpus(t, masks[i], size)
        times[i] = time.perf_counter() - start
        placed += got is not None
    return first_us, float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6), placed / calls


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="random free masks per topology and size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--free-share", type=float, default=0.6, help="chance that each GPU is free")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for line in machine_info():
        print(line)
    print(f"calls per row: {args.calls}, free share: {args.free_share}, seed: {args.seed}\n")
    header = f"{'topology':<34} {'path':<14} {'size':>4} {'first µs':>10} {'p50 µs':>8} {'p99 µs':>8} {'placed':>7}"
    print(header)
    print("-" * len(header))
    for name, path, make in TOPOLOGIES:
        t = make()
        for size in (1, 2, 3, 4, 8, 12):
            if size > t.n_gpus:
                continue
            first, p50, p99, placed = bench(t, size, args.calls, args.free_share, rng)
            print(f"{name:<34} {path:<14} {size:>4} {first:>10.0f} {p50:>8.1f} {p99:>8.1f} {placed:>7.0%}")


if __name__ == "__main__":
    main()
