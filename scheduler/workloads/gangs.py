"""A gang's pods as one ``GangRequest``, with the map from member names back to pods.

Pods with identical ``Resources`` form one role (a launcher and its workers become two
roles). A role is named after its pods' role label (Kubeflow ``replica-type``, JobSet
``replicatedjob-name``, LWS ``leader``/``worker``; else ``worker``); roles are ordered by
name, members inside a role by their index labels, then by name (``w-2`` before ``w-10``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from models.requests import GangRequest, GangRole, Resources

from .common import WorkloadError, annotations_of, labels_of, pod_key
from .groups import (
    JOB_COMPLETION_INDEX,
    JOBSET_GLOBAL_INDEX_LABEL,
    JOBSET_RJOB_LABEL,
    KUBEFLOW_INDEX_LABEL,
    KUBEFLOW_TYPE_LABEL,
    LWS_WORKER_INDEX_LABEL,
    GroupRef,
)
from .pods import pod_resources
from .policy import GangPolicy

_INDEX_KEYS = (KUBEFLOW_INDEX_LABEL, JOBSET_GLOBAL_INDEX_LABEL, JOB_COMPLETION_INDEX, LWS_WORKER_INDEX_LABEL)


def role_of(pod: Mapping[str, Any]) -> str:
    """The role label of a gang member (``master``, ``worker``, a replicated job's name, ``leader``)."""
    labels = labels_of(pod)
    if labels.get(KUBEFLOW_TYPE_LABEL):
        return labels[KUBEFLOW_TYPE_LABEL].lower()
    if labels.get(JOBSET_RJOB_LABEL):
        return labels[JOBSET_RJOB_LABEL]
    if LWS_WORKER_INDEX_LABEL in labels:
        return "leader" if labels[LWS_WORKER_INDEX_LABEL] == "0" else "worker"
    return "worker"


def _member_order(pod: Mapping[str, Any]) -> tuple:
    """Sort key: role, index labels (non-numbers ignored), then the name with numbers compared as numbers."""
    labels, annotations = labels_of(pod), annotations_of(pod)
    indexes = []
    for k in _INDEX_KEYS:
        v = labels.get(k, annotations.get(k, ""))
        indexes.append(int(v) if v.isdigit() else -1)
    name = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", pod_key(pod))]
    return (role_of(pod), indexes, name)


def build_gang_request(ref: GroupRef, policy: GangPolicy, pods: Sequence[Mapping[str, Any]], *,
                       bound: int = 0) -> tuple[GangRequest, list[tuple[str, str]]]:
    """The ``GangRequest`` for the gang's pending ``pods`` and ``[(member name, pod key)]`` in member order.

    ``bound``: members already running (after a restart or a partial elastic start); they
    count towards ``min_members``. The request is elastic (``min_members`` set) only when
    fewer members than the pending pods would do.
    """
    if not pods:
        raise ValueError(f"gang {ref.key}: build_gang_request needs at least one pod")
    ordered = sorted(pods, key=_member_order)
    subject = min(pod_key(p) for p in pods)
    where = f"gang {ref.key}"
    present = len(pods) + bound
    if present < policy.min_members:
        raise WorkloadError(subject, where, f"has {present} of its {policy.min_members} minimum members; "
                                            "it waits for the rest")
    if policy.total_members is not None and present > policy.total_members:
        raise WorkloadError(subject, where, f"has {present} members but its size is {policy.total_members}")

    # group by identical resources, in member order
    groups: dict[str, tuple[Resources, list[Mapping[str, Any]]]] = {}
    for pod in ordered:
        res = pod_resources(pod)
        groups.setdefault(res.model_dump_json(), (res, []))[1].append(pod)
    named: list[tuple[str, Resources, list[Mapping[str, Any]]]] = []
    seen: dict[str, int] = {}
    for res, members in groups.values():
        base = "-".join(sorted({role_of(p) for p in members}))
        seen[base] = seen.get(base, 0) + 1
        named.append((base if seen[base] == 1 else f"{base}-{seen[base]}", res, members))
    named.sort(key=lambda t: t[0])

    need = max(1, policy.min_members - bound)
    roles = tuple(GangRole(name=name, count=len(members), **dict(res)) for name, res, members in named)
    slice_size, slice_level = policy.slice_size, policy.slice_level
    if bound and slice_size is not None and len(pods) % slice_size:
        # the rest of a gang some of whose members run (replacements for members lost with a
        # node): their slices are partly bound, so they are no slices of their own; gang repair
        # (failures.py) puts each where its slice is
        slice_size = slice_level = None
    try:
        request = GangRequest(
            name=ref.key, roles=roles, min_members=need if need < len(pods) else None,
            required_level=policy.required_level, preferred_level=policy.preferred_level,
            slice_size=slice_size, slice_level=slice_level, rail_aligned=policy.rail_aligned,
            priority=max(r.priority for r in roles),
        )
    except ValidationError as exc:
        raise WorkloadError(subject, where, exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    keys = [pod_key(p) for _, _, members in named for p in members]
    return request, [(member, key) for (member, _), key in zip(request.member_names(), keys, strict=True)]
