"""Kubernetes workloads (plain API dicts) -> the engine's requests, and placements -> pod annotations.

Pure translation, no I/O: the driver (scheduler/adapters, scheduler/loop.py) lists and
watches objects, calls these functions, and turns a ``WorkloadError`` into a Warning event
on the pod named in it. Sources, precedence and every annotation: docs/workloads.md.

  pod_key, is_ours, is_terminal, pod_resources, pod_request     one pod
  owner_of, spread_level_of                                     inference replicas
  group_of -> GroupRef, gang_policy -> GangPolicy,
  build_gang_request -> (GangRequest, members)                  gangs
  assignment_annotations, parse_assignment                      GPU assignment at binding
"""

from __future__ import annotations

from .assignment import ASSIGNMENT_VERSION, assignment_annotations, parse_assignment
from .common import (
    ASSIGNMENT_ANNOTATION,
    GPUS_ANNOTATION,
    HOST_LEVEL,
    MissingGroupObject,
    UnsupportedConstraint,
    WorkloadError,
    pod_key,
)
from .gangs import build_gang_request, role_of
from .groups import GroupRef, GroupSource, ObjectRef, group_of
from .pods import effective_requests, is_ours, is_terminal, owner_of, pod_request, pod_resources, spread_level_of
from .policy import DEFAULT_GANG_TIMEOUT_S, GangPolicy, gang_policy

__all__ = [
    "ASSIGNMENT_ANNOTATION", "ASSIGNMENT_VERSION", "DEFAULT_GANG_TIMEOUT_S", "GPUS_ANNOTATION", "HOST_LEVEL",
    "GangPolicy", "GroupRef", "GroupSource", "MissingGroupObject", "ObjectRef", "UnsupportedConstraint",
    "WorkloadError", "assignment_annotations", "build_gang_request", "effective_requests", "gang_policy",
    "group_of", "is_ours", "is_terminal", "owner_of", "parse_assignment", "pod_key", "pod_request",
    "pod_resources", "role_of", "spread_level_of",
]
