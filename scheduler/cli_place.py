"""``toposched place``: answer one placement question from files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from models.cluster import load_cluster
from models.errors import SpecError
from models.placement import Decision
from models.requests import RequestFile
from models.spec import parse_document, read_text, validate_model
from models.state import StateFile
from models.topology import build_arrays
from plugins.base import Context
from scheduler.engine import Engine, PlacementConfig, place
from scheduler.ledger import Ledger, load_state
from scheduler.snapshot import PodShape
from scheduler.workload_mix import WorkloadMix

NAME = "place"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="decide placements for a request file",
                       description="Decide where pods, gangs and replica sets go on a cluster (optionally already in use).")
    p.add_argument("--cluster", required=True, help="cluster spec file or preset name")
    p.add_argument("--state", help="allocations already in place (YAML/JSON)")
    p.add_argument("--request", required=True, help="request file (YAML/JSON): pods, gangs, replica_sets")
    p.add_argument("--config", help="placement config (YAML/JSON): profile, plugins and weights, gang solver")
    p.add_argument("--profile", help="placement profile (overrides the config's)")
    p.add_argument("--time-limit", type=float, help="gang solver time limit in seconds")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")


def load_request(path: str) -> RequestFile:
    return validate_model(RequestFile, parse_document(read_text(path), path), path)


def load_config(path: str | None) -> PlacementConfig:
    if path is None:
        return PlacementConfig()
    return validate_model(PlacementConfig, parse_document(read_text(path), path), path)


def _check_levels(request: RequestFile, arrays: Any, source: str) -> None:
    """Every level a request names is one of the cluster's (a typo is an input error, not "unplaced")."""
    has_clique = bool(len(arrays.clique) and int(arrays.clique.max()) >= 0)
    known = [*arrays.level_names, *(["clique"] if has_clique else []), "host"]
    refs = [(f"pods[{i}].spread_level", p.spread_level) for i, p in enumerate(request.pods)]
    refs += [(f"replica_sets[{i}].spread_level", r.spread_level) for i, r in enumerate(request.replica_sets)]
    refs += [(f"gangs[{i}].{what}", getattr(g, what)) for i, g in enumerate(request.gangs)
             for what in ("required_level", "preferred_level", "slice_level")]
    for path, name in refs:
        if name is not None and name not in known and name != "node":
            raise SpecError(f"unknown level {name!r}", source=source, path=path, fix=f"use one of {', '.join(known)}")


def _check_not_allocated(request: RequestFile, ledger: Ledger, source: str, state: str) -> None:
    """A pod the request places is not one the state file already holds (it would hold GPUs twice)."""
    for name, _, what in request.pod_names():
        if ledger.get(name) is not None:
            path, _, rest = what.partition(": ")
            raise SpecError(f"{rest} is already allocated in {state}", source=source, path=path,
                            fix="drop it from the request, or from the state file's allocations to place it anew")


def decide(args: argparse.Namespace) -> Decision:
    cluster = load_cluster(args.cluster)
    arrays = build_arrays(cluster)
    ledger = Ledger(arrays)
    if args.state:
        state = validate_model(StateFile, parse_document(read_text(args.state), args.state), args.state)
        load_state(ledger, state, args.state)
    config = load_config(args.config)
    updates = {}
    if args.profile is not None:  # the named profile replaces the file's plugins list, as --help says
        updates["profile"] = args.profile
        updates["plugins"] = None
    if args.time_limit is not None:
        updates["gang"] = config.gang.model_copy(update={"time_limit_s": args.time_limit})
    if updates:
        # validate the overrides like the file (a negative --time-limit is an error, not a default)
        data = {**config.model_dump(), **{k: v.model_dump() if hasattr(v, "model_dump") else v
                                          for k, v in updates.items()}}
        config = validate_model(PlacementConfig, data, "--profile/--time-limit")
    try:
        engine = Engine.from_config(config)
    except KeyError as exc:
        raise SpecError(str(exc.args[0]), source=args.config or "--profile") from None
    request = load_request(args.request)
    _check_levels(request, arrays, args.request)
    if args.state:
        _check_not_allocated(request, ledger, args.request, args.state)
    rng = np.random.default_rng(config.seed)
    return place(ledger.snapshot(), request, engine, Context(mix=file_mix(request), rng=rng))


def file_mix(request: RequestFile) -> WorkloadMix:
    """The request file's own pods as the mix the fragmentation score packs against."""
    pods = [(PodShape.of(p), 1) for p in request.pods]
    pods += [(PodShape.of(r.pod), r.replicas) for r in request.replica_sets]
    pods += [(PodShape.of(role), role.count) for g in request.gangs for role in g.roles]
    return WorkloadMix.from_shapes(pods)


def render_table(decision: Decision) -> str:
    lines = []
    for o in decision.outcomes:
        r = o.report
        head = f"{o.kind} {o.request}: {r.status.value} ({r.solver}, {r.time_s * 1000:.1f} ms)"
        if r.gap is not None:
            head += f", gap {r.gap:.3g}"
        lines.append(head)
        if not o.placed:
            lines.append(f"  unplaced: {o.reason}")
            continue
        if r.objective:
            terms = ", ".join(f"{k}={v:g}" for k, v in r.objective.items())
            lines.append(f"  objective: {terms}")
        width = max((len(p.pod) for p in o.placements), default=3)
        for p in o.placements:
            gpus = ",".join(map(str, p.gpus)) or "-"
            share = f" ({p.gpu_milli}m)" if p.gpu_milli < 1000 and p.gpus else ""
            ext = "".join(f", {name} {amount}" for name, amount in p.extended)
            lines.append(f"  {p.pod:<{width}}  {p.node:<16} GPUs {gpus}{share}{ext}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    decision = decide(args)
    if args.json:
        json.dump(decision.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_table(decision))
    return 0



