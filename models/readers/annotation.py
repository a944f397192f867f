"""The node annotation that carries a node's intra-node topology.

Key ``toposched.io/topology``; value compact JSON: a ``NodeTopologySpec`` dump plus
``version`` (``toposched.io/v1``), ``source`` (what measured it: ``nvml``,
``nvidia-smi``, ...) and ``generated_at`` (ISO 8601 UTC). The format is described in
docs/node-annotation.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from models.errors import SpecError
from models.spec import NodeTopologySpec, validate_model

ANNOTATION_KEY = "toposched.io/topology"
VERSION = "toposched.io/v1"
# Kubernetes caps the total size of a node's annotations at 256 KiB.
MAX_ANNOTATION_BYTES = 256 * 1024
_ENVELOPE = ("version", "source", "generated_at")


@dataclass(frozen=True)
class TopologyAnnotation:
    """A decoded annotation: the topology and where it came from."""

    topology: NodeTopologySpec
    source: str
    generated_at: str | None


def encode_topology(spec: NodeTopologySpec, *, source: str, generated_at: datetime | str | None = None) -> str:
    """The annotation value for ``spec`` (compact JSON, envelope keys first)."""
    if not source or not isinstance(source, str):
        raise SpecError("the annotation needs a `source` (nvml, nvidia-smi, ...)", source=ANNOTATION_KEY)
    if generated_at is None:
        generated_at = datetime.now(UTC)
    if isinstance(generated_at, datetime):
        generated_at = generated_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    # only what was given: a default written out would read back as given (pcie[].numa: 0 would
    # then contradict a numa list)
    body = spec.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    try:
        text = json.dumps({"version": VERSION, "source": source, "generated_at": generated_at, **body},
                          separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise SpecError("a number is not finite (NaN or infinity); JSON cannot carry it",
                        source=ANNOTATION_KEY) from None
    size = len(text.encode())
    if size > MAX_ANNOTATION_BYTES:
        raise SpecError(f"the annotation would be {size} bytes, over the {MAX_ANNOTATION_BYTES}-byte limit",
                        source=ANNOTATION_KEY, fix="drop measured_p2p_gbps or round its numbers")
    return text


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def decode_annotation(text: str, where: str) -> TopologyAnnotation:
    """Read an annotation value; ``where`` names the node (for messages)."""
    size = len(text.encode())
    if size > MAX_ANNOTATION_BYTES:
        raise SpecError(f"annotation is {size} bytes, over the {MAX_ANNOTATION_BYTES}-byte limit",
                        source=where, path=ANNOTATION_KEY)
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        if not isinstance(exc, json.JSONDecodeError):
            raise SpecError(str(exc), source=where, path=ANNOTATION_KEY,
                            fix="numbers must be finite (JSON has no NaN or Infinity)") from None
        raise SpecError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=where,
                        path=ANNOTATION_KEY, fix="rewrite the annotation with `encode_topology`") from None
    if not isinstance(doc, dict):
        raise SpecError(f"must be a JSON object, not {type(doc).__name__}", source=where, path=ANNOTATION_KEY)
    version = doc.get("version")
    if version != VERSION:
        problem = "no `version`" if version is None else f"unknown version {version!r}"
        raise SpecError(f"{problem}; this toposched reads {VERSION}", source=where, path=f"{ANNOTATION_KEY}.version",
                        fix="regenerate the annotation with this release's agent")
    src = doc.get("source")
    if not isinstance(src, str) or not src:
        raise SpecError("`source` must be a non-empty string", source=where, path=f"{ANNOTATION_KEY}.source", value=src)
    generated = doc.get("generated_at")
    if generated is not None and not isinstance(generated, str):
        raise SpecError("`generated_at` must be an ISO 8601 string", source=where,
                        path=f"{ANNOTATION_KEY}.generated_at", value=generated)
    body = {k: v for k, v in doc.items() if k not in _ENVELOPE}
    try:
        topo = validate_model(NodeTopologySpec, body, where)
    except SpecError as exc:
        path = f"{ANNOTATION_KEY}.{exc.path}" if exc.path else ANNOTATION_KEY
        raise SpecError(exc.problem, source=where, path=path, value=exc.value, fix=exc.fix,
                        has_value=exc.value is not None) from None
    return TopologyAnnotation(topology=topo, source=src, generated_at=generated)


def decode_topology(text: str, where: str) -> NodeTopologySpec:
    """The ``NodeTopologySpec`` of an annotation value; ``where`` names the node."""
    return decode_annotation(text, where).topology
