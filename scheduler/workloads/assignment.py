"""The GPU assignment annotations written at binding and read back after a restart.

``toposched.io/gpus``: GPU indices as ``NVIDIA_VISIBLE_DEVICES`` spells them (``0,1,2,3``;
``void`` for a pod without GPUs); the container reads it through the downward API.
``toposched.io/assignment``: the record the cache rebuilds its ledger from,
``{"node": ..., "gpus": [...], "gpu_milli": ..., "version": "toposched.io/v1"}``.
See docs/gpu-assignment.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from models.placement import Placement
from models.requests import GPU_MILLI

from .common import ASSIGNMENT_ANNOTATION, GPUS_ANNOTATION, WorkloadError, annotations_of, get, pod_key, quote

ASSIGNMENT_VERSION = "toposched.io/v1"
NO_GPUS = "void"  # NVIDIA container runtime: no GPU injected


def gpus_value(gpus: tuple[int, ...] | list[int]) -> str:
    """``0,1,2,3`` (``void`` when empty)."""
    return ",".join(str(g) for g in gpus) if gpus else NO_GPUS


def assignment_annotations(placement: Placement) -> dict[str, str]:
    """The annotations to merge into the pod when it is bound (the Binding carries them)."""
    record = {"node": placement.node, "gpus": list(placement.gpus), "gpu_milli": placement.gpu_milli,
              "version": ASSIGNMENT_VERSION}
    return {GPUS_ANNOTATION: gpus_value(placement.gpus),
            ASSIGNMENT_ANNOTATION: json.dumps(record, separators=(",", ":"))}


def parse_assignment(pod: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """``(gpus, gpu_milli)`` recorded on a bound pod, None when it carries no assignment."""
    key = pod_key(pod)
    annotations = annotations_of(pod)
    text = annotations.get(ASSIGNMENT_ANNOTATION)
    where = f"annotation {ASSIGNMENT_ANNOTATION}"
    if text is None:
        if GPUS_ANNOTATION in annotations:
            raise WorkloadError(key, where, f"missing next to annotation {GPUS_ANNOTATION}; toposched writes both")
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(key, where, f"malformed JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise WorkloadError(key, where, f"must be a JSON object, not {type(doc).__name__}")
    if doc.get("version") != ASSIGNMENT_VERSION:
        raise WorkloadError(key, f"{where}.version", f"{quote(doc.get('version'))} is not {ASSIGNMENT_VERSION}, "
                                                     "the version this toposched reads")
    unknown = sorted(set(doc) - {"node", "gpus", "gpu_milli", "version"})
    if unknown:
        raise WorkloadError(key, where, f"unknown keys {', '.join(unknown)}")
    gpus, milli, node = doc.get("gpus"), doc.get("gpu_milli"), doc.get("node")
    if not isinstance(gpus, list) or any(not isinstance(g, int) or isinstance(g, bool) or g < 0 for g in gpus) \
            or len(set(gpus)) != len(gpus):
        raise WorkloadError(key, f"{where}.gpus", f"{quote(gpus)} is not a list of distinct GPU indices")
    if not isinstance(milli, int) or isinstance(milli, bool) or not 1 <= milli <= GPU_MILLI:
        raise WorkloadError(key, f"{where}.gpu_milli", f"{quote(milli)} is not 1..{GPU_MILLI}")
    if milli < GPU_MILLI and len(gpus) != 1:
        raise WorkloadError(key, f"{where}.gpu_milli", f"a share ({milli}) needs exactly one GPU, not {len(gpus)}")
    if not isinstance(node, str) or not node:
        raise WorkloadError(key, f"{where}.node", f"{quote(node)} is not a node name")
    bound_to = get(pod, "spec", "nodeName")
    if bound_to and bound_to != node:
        raise WorkloadError(key, f"{where}.node", f"{quote(node)} but the pod is bound to {quote(bound_to)}")
    short = annotations.get(GPUS_ANNOTATION)
    if short is not None and short != gpus_value(gpus):
        raise WorkloadError(key, f"annotation {GPUS_ANNOTATION}", f"{quote(short)} disagrees with {where} "
                                                                   f"({quote(gpus_value(gpus))})")
    return tuple(gpus), milli
