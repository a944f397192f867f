"""``toposched discover``: the node agent. Discover this node's GPU topology, print it, publish it.

One round: discover (NVML, then nvidia-smi per field), optionally measure copy bandwidth
(once per process), print, and with ``--publish`` patch the node. ``--interval S``
repeats rounds (the DaemonSet); a failed round is logged and the next one tries again.

Exit status: 0 done (also a CPU-only node: empty topology); 2 bad input (garbled
nvidia-smi output, bad arguments, API errors, no torch for ``--measure``); 3 NVIDIA GPUs
present but no driver answers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.errors import SpecError, ToposchedError
from models.readers.annotation import ANNOTATION_KEY, VERSION, decode_annotation, encode_topology
from scheduler.agent.discover import DEFAULT_NIC_GBPS, Discovery, NoDriverError, discover
from scheduler.agent.measure import DEFAULT_BUDGET_S, BandwidthReport, MeasureError
from scheduler.agent.nvml_source import GpuSource, NvmlSource, ReplaySource
from scheduler.agent.smi_source import DEFAULT_TIMEOUT_S, SmiSource, run_command, saved_outputs

NAME = "discover"
PROG = "toposched"
BANDWIDTH_ANNOTATION = "toposched.io/bandwidth"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="discover this node's GPU topology (the node agent)",
                       description="Discover this node's GPU topology from NVML (nvidia-ml-py), falling back to "
                                   "nvidia-smi per field; print it, optionally measure copy bandwidth and publish "
                                   "it on the node. See docs/agent.md.")
    p.add_argument("--json", action="store_true", help="print the discovery as JSON")
    p.add_argument("--publish", action="store_true",
                   help="patch this node: the toposched.io/topology annotation and missing GPU Feature Discovery "
                        "labels")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), metavar="NAME",
                   help="the node to publish on (default: $NODE_NAME, from the downward API in the DaemonSet)")
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig for --publish (default: in-cluster service account, else ~/.kube/config)")
    p.add_argument("--measure", action="store_true",
                   help="measure host<->device, on-device and GPU<->GPU copy bandwidth with torch (once per "
                        "process); P2P numbers go into the topology")
    p.add_argument("--measure-budget", type=float, default=DEFAULT_BUDGET_S, metavar="S",
                   help=f"total seconds for --measure (default {DEFAULT_BUDGET_S:g})")
    p.add_argument("--interval", type=float, metavar="S",
                   help="repeat every S seconds until stopped (the DaemonSet mode)")
    p.add_argument("--rounds", type=int, metavar="N", help="with --interval: stop after N rounds")
    src = p.add_argument_group("sources")
    src.add_argument("--replay", metavar="FILE", help="play back recorded NVML answers (JSON) instead of NVML")
    src.add_argument("--record", metavar="FILE",
                     help="write what NVML answered to FILE (JSON), to replay it elsewhere with --replay")
    src.add_argument("--no-nvml", action="store_true", help="do not use NVML (nvidia-smi only)")
    src.add_argument("--nvidia-smi", default="nvidia-smi", metavar="PATH", help="the nvidia-smi binary")
    src.add_argument("--smi-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                     help=f"seconds each nvidia-smi call may take (default {DEFAULT_TIMEOUT_S:g})")
    src.add_argument("--smi-topo", metavar="FILE", help="read saved `nvidia-smi topo -m` output instead of running it")
    src.add_argument("--smi-query", metavar="FILE", help="read saved `nvidia-smi -q -x` output instead of running it")
    src.add_argument("--no-nvidia-smi", action="store_true", help="do not use nvidia-smi (NVML only; no NICs)")
    src.add_argument("--sys-root", default="/sys", metavar="DIR",
                     help="where sysfs is mounted (PCI devices, NIC rates; default /sys)")
    src.add_argument("--nic-gbps", type=float, default=DEFAULT_NIC_GBPS, metavar="G",
                     help=f"NIC line rate to assume when sysfs does not say (default {DEFAULT_NIC_GBPS:g})")


@dataclass
class _State:
    """What survives between rounds: the API client, the one measurement, the last topology."""

    api: Any = None
    measured: BandwidthReport | None = None
    measure_failed: bool = False
    last_topology: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)


def _check_args(args: argparse.Namespace) -> None:
    if args.interval is not None and not (math.isfinite(args.interval) and args.interval > 0):
        raise SpecError("must be a positive number of seconds", source="--interval", value=args.interval)
    if not (math.isfinite(args.nic_gbps) and args.nic_gbps > 0):
        raise SpecError("must be a positive bandwidth in Gbit/s", source="--nic-gbps", value=args.nic_gbps)
    if args.rounds is not None and (args.rounds < 1 or args.interval is None):
        raise SpecError("needs --interval and a count of at least 1", source="--rounds", value=args.rounds)
    if args.measure_budget <= 0:
        raise SpecError("must be a positive number of seconds", source="--measure-budget", value=args.measure_budget)
    if args.smi_timeout <= 0:
        raise SpecError("must be a positive number of seconds", source="--smi-timeout", value=args.smi_timeout)
    if args.publish and not args.node_name:
        raise SpecError("--publish needs the node's name", source="--node-name",
                        fix="set NODE_NAME (downward API: fieldRef spec.nodeName) or pass --node-name")
    if args.replay and args.no_nvml:
        raise SpecError("--replay and --no-nvml exclude each other", source="--replay")
    if args.record and (args.replay or args.no_nvml):
        raise SpecError("records what NVML answers: it excludes --replay and --no-nvml", source="--record")
    for flag, path in (("--smi-topo", args.smi_topo), ("--smi-query", args.smi_query), ("--replay", args.replay)):
        if path and not Path(path).is_file():  # a saved output that cannot be read is an error, not "no GPU"
            raise SpecError("no such file", source=flag, value=path)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    state = _State()
    if args.interval is None:
        try:
            return _round(args, state, 1)
        except NoDriverError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return NoDriverError.exit_status
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: state.stop.set())
    try:
        return _loop(args, state)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop(args: argparse.Namespace, state: _State) -> int:
    """Rounds every ``--interval`` seconds until stopped (SIGTERM) or ``--rounds`` are done."""
    status, n = 0, 0
    while not state.stop.is_set():
        n += 1
        try:
            status = _round(args, state, n)
        except ToposchedError as exc:
            status = getattr(exc, "exit_status", 2)
            _log(f"round {n} failed: {exc}; next try in {args.interval:g} s")
        if args.rounds is not None and n >= args.rounds:
            break
        state.stop.wait(args.interval)
    return status


def _log(line: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    print(f"{stamp} {line}", file=sys.stderr, flush=True)


def _sources(args: argparse.Namespace) -> tuple[GpuSource | None, SmiSource | None]:
    nvml: GpuSource | None = None
    if args.replay:
        nvml = ReplaySource.from_file(args.replay)
    elif not args.no_nvml:
        nvml = NvmlSource(record=bool(args.record))
    smi = None
    if not args.no_nvidia_smi:
        saved = args.smi_topo or args.smi_query
        runner = saved_outputs(args.smi_topo, args.smi_query) if saved else run_command
        files = {"topo": args.smi_topo, "query": args.smi_query} if saved else {}
        smi = SmiSource(run=runner, binary=args.nvidia_smi, timeout_s=args.smi_timeout, files=files)
    return nvml, smi


def _round(args: argparse.Namespace, state: _State, n: int) -> int:
    """Discover, measure (once), print, publish."""
    nvml, smi = _sources(args)
    try:
        found = discover(nvml, smi, sys_root=Path(args.sys_root), nic_gbps=args.nic_gbps)
    finally:
        if args.record and isinstance(nvml, NvmlSource):
            _write_record(args.record, nvml)
    if args.measure:
        found = _with_measurement(found, args, state)
    text = json.dumps(found.topology.model_dump(mode="json"), sort_keys=True)
    changed = text != state.last_topology
    state.last_topology = text
    if args.json:
        doc = found.to_json()
        if state.measured is not None:
            doc["bandwidth"] = state.measured.to_json()
        print(json.dumps(doc, indent=None if args.interval else 2), flush=True)
    elif changed:
        print(render(found, state.measured), flush=True)
    else:
        _log(f"round {n}: topology unchanged")
    if args.publish:
        _publish(found, args, state)
    return 0


def _write_record(path: str, nvml: NvmlSource) -> None:
    """Save NVML's answers (also those of a round that failed: that is when a record helps most)."""
    doc = nvml.recording()
    if doc is None:  # NVML could not even be imported: nothing was asked
        _log(f"--record: no record written to {path}: nvidia-ml-py is not installed, so NVML was never asked "
             "(pip install 'toposched[agent]')")
        return
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    about = f"NVML answers recorded by `toposched discover --record` at {stamp}; replay with --replay (docs/agent.md)"
    try:
        Path(path).write_text(json.dumps({"_about": about, **doc}, indent=1) + "\n")
    except OSError as exc:
        raise SpecError(f"cannot write the record: {exc}", source="--record", value=path) from None


def _with_measurement(found: Discovery, args: argparse.Namespace, state: _State) -> Discovery:
    n = found.topology.gpus.count
    if n == 0:
        return found
    if state.measured is not None and state.measured.n_gpus != n:
        _log(f"the node has {n} GPUs now, {state.measured.n_gpus} when measured: measuring again")
        state.measured, state.measure_failed = None, False
    if state.measured is None and not state.measure_failed:
        try:
            state.measured = measure_node(found, args.measure_budget)
        except Exception as exc:  # noqa: BLE001 - a CUDA error (ECC, lost device) must not end the agent's loop
            if args.interval is None:
                if isinstance(exc, MeasureError):
                    raise
                raise MeasureError(f"measurement failed: {type(exc).__name__}: {exc}") from exc
            state.measure_failed = True
            _log(f"measurement skipped for this process: {type(exc).__name__}: {exc}")
    report = state.measured
    if report is None or not report.has_p2p():
        return found
    return found.with_measured_p2p(report.p2p_matrix(), "measured_p2p_gbps from torch copies (see bandwidth)")


def measure_node(found: Discovery, budget_s: float) -> BandwidthReport:
    """Measure with torch, lined up with the discovered GPU order."""
    from scheduler.agent.measure import TorchTimer, device_order, measure, reorder

    timer = TorchTimer()
    try:
        order = device_order(timer.bus_ids(), [g.pci_bus_id for g in found.gpus])
        return reorder(measure(timer, found.topology.gpus.count, budget_s=budget_s), order)
    finally:
        timer.close()


def _same_topology(old: str | None, new: str) -> bool:
    """Equal annotations but for ``generated_at``."""
    if old is None:
        return False
    try:
        a, b = decode_annotation(old, "node"), decode_annotation(new, "node")
    except ToposchedError:
        return False
    return a.topology == b.topology and a.source == b.source


def _same_but_time(old: str | None, new: str) -> bool:
    """Equal JSON documents but for ``generated_at``."""
    try:
        a, b = json.loads(old or ""), json.loads(new)
    except ValueError:
        return False
    return isinstance(a, dict) and isinstance(b, dict) and \
        {k: v for k, v in a.items() if k != "generated_at"} == {k: v for k, v in b.items() if k != "generated_at"}


def _publish(found: Discovery, args: argparse.Namespace, state: _State) -> None:
    from scheduler.agent.publish import core_api, publish

    if state.api is None:
        state.api = core_api(args.kubeconfig)
    source = found.source + ("+torch" if found.topology.measured_p2p_gbps is not None else "")
    annotations = {ANNOTATION_KEY: encode_topology(found.topology, source=source)}
    if state.measured is not None:
        doc = {"version": VERSION, "generated_at": datetime.now(UTC).isoformat(timespec="seconds")
               .replace("+00:00", "Z"), **state.measured.to_json()}
        annotations[BANDWIDTH_ANNOTATION] = json.dumps(doc, separators=(",", ":"))
    result = publish(state.api, args.node_name, annotations, found.gfd_labels(),
                     same={ANNOTATION_KEY: _same_topology, BANDWIDTH_ANNOTATION: _same_but_time})
    if not result.changed:
        _log(f"node {result.node}: already up to date")
        return
    written = ", ".join(f"{k}={v}" for k, v in sorted(result.labels_written.items())) or "none"
    kept = ", ".join(sorted(result.labels_kept)) or "none"
    _log(f"published on node {result.node}: {', '.join(result.annotations)}; labels written: {written}; "
         f"left as they were: {kept}")


# --------------------------------------------------------------------------- text


def render(found: Discovery, measured: BandwidthReport | None = None) -> str:
    """The discovery as text: a GPU table, the PCIe matrix, NICs, bandwidth and notes."""
    topo = found.topology
    n = topo.gpus.count
    driver = f", driver {found.driver_version}" if found.driver_version else ""
    if n == 0:
        lines = [f"no GPUs ({found.source}{driver}): empty topology"]
    else:
        mem = f", {topo.gpus.memory_mib} MiB each" if topo.gpus.memory_mib else ""
        lines = [f"{n}x {topo.gpus.model or 'unknown model'}{mem} ({found.source}{driver})"]
        if topo.nvswitch is not None:
            lines.append(f"NVSwitch: {topo.nvswitch.links_per_gpu} NVLinks per GPU")
        rows = [("GPU", "PCI bus id", "NUMA", "MIG", "NVLink peers (links)", "UUID")]
        for g in found.gpus:
            peers = " ".join(f"{p}({k})" for p, k in sorted(g.nvlink_peers.items()))
            if g.nvswitch_links:
                peers = (peers + " " if peers else "") + f"NVSwitch({g.nvswitch_links})"
            rows.append((str(g.index), g.pci_bus_id or "?", "?" if g.numa is None else str(g.numa),
                         g.mig_mode or "-", peers or "-", g.uuid or "?"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if n > 1:
            lines.append("PCIe:")
            pcie = topo.pcie_relation_matrix()
            lines.append(("      " + " ".join(f"GPU{b:<3d}" for b in range(n))).rstrip())
            lines += [f"GPU{a:<3d}" + " ".join(f"{c:<6s}" for c in row).rstrip() for a, row in enumerate(pcie)]
        for nic in topo.nics:
            near = ",".join(str(g) for g in nic.gpus) or "none"
            numa = f", NUMA {nic.numa}" if nic.numa is not None else ""
            lines.append(f"NIC {nic.name}: {nic.bandwidth_gbps:g} Gb/s{numa}, GPUs {near}")
        if found.clique:
            lines.append(f"NVLink clique: {found.clique}")
    if measured is not None:
        lines.append(f"bandwidth (Gbit/s, {measured.elapsed_s:.1f} of {measured.budget_s:g} s):")

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        for g in range(measured.n_gpus):
            p2p = " ".join(fmt(v) for v in measured.p2p_gbps[g])
            lines.append(f"  GPU {g}: h2d {fmt(measured.h2d_gbps[g])}  d2h {fmt(measured.d2h_gbps[g])}  "
                         f"d2d {fmt(measured.d2d_gbps[g])}  p2p [{p2p}]")
    for note in found.notes + (measured.notes if measured is not None else ()):
        lines.append(f"note: {note}")
    return "\n".join(lines)
