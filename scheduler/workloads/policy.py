"""A gang's policy (sizes, topology, timeout) from its pods, its PodGroup and its job object.

``gang_policy`` reads, in three phases:

  1. sizes: minimum members and expected total from the PodGroup (``minMember``,
     ``gang.minCount``), the job (Kubeflow ``minAvailable`` / replica sums, JobSet replicas x
     parallelism, LeaderWorkerSet size) and pod annotations; every source must agree;
  2. topology: required / preferred level, slices and rail alignment from our annotations,
     Kueue TAS annotations, Volcano ``networkTopology``, the native PodGroup's topology key and
     the LWS / JobSet exclusive-topology annotations; several required levels keep the
     narrowest, the first preferred level (ours, Kueue, Volcano) wins;
  3. timeout: ours, else the PodGroup's or job's ``scheduleTimeoutSeconds``, else 300 s.

Members that disagree, negative sizes, unknown levels or bad JSON raise ``WorkloadError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.spec import LevelSpec

from .common import (
    GANG_MIN_ANNOTATION,
    GANG_SIZE_ANNOTATION,
    GANG_TIMEOUT_ANNOTATION,
    HOST_LEVEL,
    PREFERRED_LEVEL_ANNOTATION,
    RAIL_ALIGNED_ANNOTATION,
    REQUIRED_LEVEL_ANNOTATION,
    SLICE_LEVEL_ANNOTATION,
    SLICE_SIZE_ANNOTATION,
    MissingGroupObject,
    WorkloadError,
    annotations_of,
    get,
    labels_of,
    level_from_label,
    level_from_name,
    level_rank,
    namespace_of,
    parse_bool,
    parse_int,
    pod_key,
    quote,
)
from .groups import LWS_SIZE_ANNOTATION, GroupRef, GroupSource

DEFAULT_GANG_TIMEOUT_S = 300.0
KUEUE_REQUIRED = "kueue.x-k8s.io/podset-required-topology"
KUEUE_PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"
KUEUE_UNCONSTRAINED = "kueue.x-k8s.io/podset-unconstrained-topology"
KUEUE_SLICE_REQUIRED = "kueue.x-k8s.io/podset-slice-required-topology"
KUEUE_SLICE_SIZE = "kueue.x-k8s.io/podset-slice-size"
LWS_EXCLUSIVE = "leaderworkerset.sigs.k8s.io/exclusive-topology"
JOBSET_EXCLUSIVE = "alpha.jobset.sigs.k8s.io/exclusive-topology"
JOBSET_GLOBAL_REPLICAS = "jobset.sigs.k8s.io/global-replicas"
PODGROUP_GANG_GROUPS = ("scheduling.x-k8s.io", "scheduling.sigs.k8s.io", "scheduling.volcano.sh")
NATIVE_GROUP = "scheduling.k8s.io"


@dataclass(frozen=True)
class GangPolicy:
    """How a gang is placed: wait for ``min_members``, then all (or, if elastic, at least min) at once."""

    min_members: int
    total_members: int | None = None
    required_level: str | None = None
    preferred_level: str | None = None
    slice_size: int | None = None
    slice_level: str | None = None
    rail_aligned: bool = False
    timeout_s: float = DEFAULT_GANG_TIMEOUT_S

    @property
    def is_elastic(self) -> bool:
        return self.total_members is not None and self.min_members < self.total_members

    def is_ready(self, members: int) -> bool:
        """Enough members exist to try placing the gang."""
        return members >= self.min_members


@dataclass
class _Vote:
    value: Any
    pod: str
    where: str


@dataclass
class _Reader:
    """Collects what every source says, then checks that the sources agree."""

    ref: GroupRef
    pods: list[Mapping[str, Any]]
    levels: Sequence[LevelSpec]
    subject: str = ""
    min_votes: list[_Vote] = field(default_factory=list)
    total_votes: list[_Vote] = field(default_factory=list)
    required: list[_Vote] = field(default_factory=list)
    preferred: list[_Vote] = field(default_factory=list)
    slices: list[_Vote] = field(default_factory=list)
    timeouts: list[_Vote] = field(default_factory=list)

    # --- pod annotations and labels ---

    def agreed(self, key: str, *, label: bool = False) -> _Vote | None:
        """The value all pods give ``key`` (pods without it don't vote); members that disagree are an error."""
        kind = "label" if label else "annotation"
        first: _Vote | None = None
        for pod in self.pods:
            values = labels_of(pod) if label else annotations_of(pod)
            if key not in values:
                continue
            vote = _Vote(values[key], pod_key(pod), f"{kind} {key}")
            if first is None:
                first = vote
            elif vote.value.strip() != first.value.strip():
                raise WorkloadError(vote.pod, vote.where, f"{quote(vote.value)} disagrees with pod {first.pod} "
                                                          f"({quote(first.value)}); all members of gang "
                                                          f"{self.ref.key} must agree")
        return first

    def agreed_int(self, key: str, minimum: int, *, label: bool = False) -> _Vote | None:
        vote = self.agreed(key, label=label)
        if vote is not None:
            vote.value = parse_int(vote.pod, vote.where, vote.value, minimum=minimum)
        return vote

    def agreed_level(self, key: str, *, by_label: bool) -> _Vote | None:
        vote = self.agreed(key)
        if vote is not None:
            parse = level_from_label if by_label else level_from_name
            vote.value = parse(vote.pod, vote.where, vote.value, self.levels)
        return vote

    # --- object fields ---

    def obj_int(self, obj: Mapping[str, Any], path: str, minimum: int) -> _Vote | None:
        value = get(obj, *path.split("."))
        if value is None:
            return None
        where = f"{obj.get('kind', 'object')} {namespace_of(obj)}/{get(obj, 'metadata', 'name')} {path}"
        if not isinstance(value, int) or isinstance(value, bool):
            raise WorkloadError(self.subject, where, f"{quote(value)} is not an integer")
        if value < minimum:
            what = "negative" if value < 0 else "too small"
            raise WorkloadError(self.subject, where, f"{value} is {what}; it must be at least {minimum}")
        return _Vote(value, self.subject, where)


def _add(votes: list[_Vote], vote: _Vote | None) -> None:
    if vote is not None:
        votes.append(vote)


def _one_value(votes: list[_Vote], what: str) -> _Vote | None:
    """The value every source gives, or a ``WorkloadError`` naming two that disagree."""
    for v in votes[1:]:
        if v.value != votes[0].value:
            raise WorkloadError(v.pod, v.where, f"{what} {quote(v.value)} conflicts with {quote(votes[0].value)} "
                                                f"from {votes[0].where}")
    return votes[0] if votes else None


# --- phase 1: sizes -------------------------------------------------------------------------


def _read_podgroup(r: _Reader, pg: Mapping[str, Any]) -> None:
    group = str(pg.get("apiVersion", "")).split("/")[0]
    if group in PODGROUP_GANG_GROUPS:
        _add(r.min_votes, r.obj_int(pg, "spec.minMember", 1))
        _add(r.timeouts, r.obj_int(pg, "spec.scheduleTimeoutSeconds", 1))
        if group == "scheduling.volcano.sh":
            _read_network_topology(r, pg)
    elif group == NATIVE_GROUP:
        if get(pg, "spec", "schedulingPolicy", "basic") is not None:
            r.min_votes.append(_Vote(1, r.subject, "PodGroup spec.schedulingPolicy.basic"))
        _add(r.min_votes, r.obj_int(pg, "spec.schedulingPolicy.gang.minCount", 1))
        topo = get(pg, "spec", "schedulingConstraints", "topology") or []
        if not isinstance(topo, list):
            raise WorkloadError(r.subject, f"PodGroup {namespace_of(pg)}/{get(pg, 'metadata', 'name')} "
                                           "spec.schedulingConstraints.topology", "must be a list")
        if topo:
            where = f"PodGroup {namespace_of(pg)}/{get(pg, 'metadata', 'name')} spec.schedulingConstraints.topology[0].key"
            key = get(topo[0], "key")
            if not isinstance(key, str):
                raise WorkloadError(r.subject, where, "must be a node label key")
            r.required.append(_Vote(level_from_label(r.subject, where, key, r.levels), r.subject, where))
    else:
        raise WorkloadError(r.subject, f"PodGroup {get(pg, 'metadata', 'name')}",
                            f"apiVersion {quote(pg.get('apiVersion'))} is not a PodGroup API toposched reads")


def _read_job(r: _Reader, job: Mapping[str, Any]) -> None:
    kind = job.get("kind")
    name = f"{kind} {namespace_of(job)}/{get(job, 'metadata', 'name')}"
    spec = job.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise WorkloadError(r.subject, f"{name} spec", "must be a mapping")
    if kind == "JobSet":
        total = 0
        jobs = spec.get("replicatedJobs") or []
        if not isinstance(jobs, list):
            raise WorkloadError(r.subject, f"{name} spec.replicatedJobs", "must be a list")
        for i, rj in enumerate(jobs):
            replicas = _job_int(r, name, f"spec.replicatedJobs[{i}].replicas", get(rj, "replicas"), 1)
            parallelism = _job_int(r, name, f"spec.replicatedJobs[{i}].template.spec.parallelism",
                                   get(rj, "template", "spec", "parallelism"), 1)
            total += replicas * parallelism
        r.total_votes.append(_Vote(total, r.subject, f"{name} spec.replicatedJobs (replicas x parallelism)"))
    elif kind == "LeaderWorkerSet":
        size = _job_int(r, name, "spec.leaderWorkerTemplate.size", get(spec, "leaderWorkerTemplate", "size"), 1)
        r.total_votes.append(_Vote(size, r.subject, f"{name} spec.leaderWorkerTemplate.size"))
    else:
        specs_key = next((k for k in spec if isinstance(k, str) and k.endswith("ReplicaSpecs")), None)
        if specs_key is None:
            raise WorkloadError(r.subject, name, "is not a JobSet, LeaderWorkerSet or Kubeflow job "
                                                 "(no spec.*ReplicaSpecs)")
        roles = spec[specs_key] or {}
        if not isinstance(roles, Mapping):
            raise WorkloadError(r.subject, f"{name} spec.{specs_key}", "must map replica types to their specs")
        total = sum(_job_int(r, name, f"spec.{specs_key}.{role}.replicas", get(rs, "replicas"), 1)
                    for role, rs in roles.items())
        r.total_votes.append(_Vote(total, r.subject, f"{name} spec.{specs_key} (sum of replicas)"))
        _add(r.min_votes, r.obj_int(job, "spec.runPolicy.schedulingPolicy.minAvailable", 1))
        _add(r.timeouts, r.obj_int(job, "spec.runPolicy.schedulingPolicy.scheduleTimeoutSeconds", 1))


def _job_int(r: _Reader, name: str, path: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        problem = "is negative" if isinstance(value, int) and value < 0 else "is not an integer"
        raise WorkloadError(r.subject, f"{name} {path}", f"{quote(value)} {problem}")
    return value


def _sizes(r: _Reader, podgroup: Mapping[str, Any] | None, job: Mapping[str, Any] | None) -> tuple[int, int | None]:
    ref = r.ref
    if podgroup is not None:
        _read_podgroup(r, podgroup)
    elif ref.source in (GroupSource.NATIVE, GroupSource.COSCHEDULING, GroupSource.VOLCANO):
        obj = ref.object
        raise MissingGroupObject(r.subject, f"PodGroup {ref.key}",
                                 f"not found ({obj.api_version if obj else 'PodGroup'}); the gang waits for it")
    if job is not None:
        _read_job(r, job)
    _add(r.total_votes, r.agreed_int(LWS_SIZE_ANNOTATION, 1))
    _add(r.total_votes, r.agreed_int(GANG_SIZE_ANNOTATION, 1))
    _add(r.min_votes, r.agreed_int(GANG_MIN_ANNOTATION, 1))

    total = _one_value(r.total_votes, "gang size")
    minimum = _one_value(r.min_votes, "minimum members")
    if total is None and minimum is None:
        if ref.source == GroupSource.TOPOSCHED:
            raise WorkloadError(r.subject, f"annotation {GANG_SIZE_ANNOTATION}",
                                "missing; a toposched.io/gang needs its member count")
        obj = ref.object
        what = f"{obj.kind} {obj.namespace}/{obj.name}" if obj else f"the {ref.source.value} object"
        raise MissingGroupObject(r.subject, f"gang {ref.key}", f"size unknown: needs {what} or annotation "
                                                               f"{GANG_SIZE_ANNOTATION}")
    if total is not None and minimum is not None and minimum.value > total.value:
        raise WorkloadError(minimum.pod, minimum.where, f"minimum members {minimum.value} conflicts with the gang "
                                                        f"size {total.value} from {total.where}")
    min_members = minimum.value if minimum is not None else total.value
    return min_members, (total.value if total is not None else None)


# --- phase 2: topology -----------------------------------------------------------------------


def _read_network_topology(r: _Reader, pg: Mapping[str, Any]) -> None:
    """Volcano ``networkTopology``: tier N (1 = the narrowest level above nodes) -> our level."""
    nt = get(pg, "spec", "networkTopology")
    if not nt:
        return
    where = f"PodGroup {namespace_of(pg)}/{get(pg, 'metadata', 'name')} spec.networkTopology"
    if not isinstance(nt, Mapping):
        raise WorkloadError(r.subject, where, "must be a mapping (mode, highestTierAllowed or highestTierName)")
    mode = nt.get("mode") or "hard"
    if mode not in ("hard", "soft"):
        raise WorkloadError(r.subject, f"{where}.mode", f"{quote(mode)} is not hard or soft")
    tier, tier_name = nt.get("highestTierAllowed"), nt.get("highestTierName")
    if tier is not None and tier_name is not None:
        raise WorkloadError(r.subject, where, "highestTierAllowed and highestTierName exclude each other")
    level: str | None = None
    if tier_name is not None:
        level = level_from_name(r.subject, f"{where}.highestTierName", str(tier_name), r.levels)
    elif tier is not None:
        if not isinstance(tier, int) or isinstance(tier, bool) or tier < 0:
            raise WorkloadError(r.subject, f"{where}.highestTierAllowed", f"{quote(tier)} is not a tier (0, 1, 2, ...)")
        n = len(r.levels)
        level = HOST_LEVEL if tier == 0 else (r.levels[n - tier].name if tier <= n else None)
    if level is not None:
        (r.required if mode == "hard" else r.preferred).append(_Vote(level, r.subject, where))


def _read_kueue(r: _Reader) -> None:
    for pod in r.pods:
        ann = annotations_of(pod)
        given = [k for k in (KUEUE_REQUIRED, KUEUE_PREFERRED) if k in ann]
        if KUEUE_UNCONSTRAINED in ann and parse_bool(pod_key(pod), f"annotation {KUEUE_UNCONSTRAINED}",
                                                     ann[KUEUE_UNCONSTRAINED]):
            given.append(KUEUE_UNCONSTRAINED)
        if len(given) > 1:
            raise WorkloadError(pod_key(pod), f"annotation {given[1]}", f"conflicts with annotation {given[0]}; "
                                                                        "a pod set takes at most one of them")
    _add(r.required, r.agreed_level(KUEUE_REQUIRED, by_label=True))
    _add(r.preferred, r.agreed_level(KUEUE_PREFERRED, by_label=True))
    level = r.agreed_level(KUEUE_SLICE_REQUIRED, by_label=True)
    size = r.agreed_int(KUEUE_SLICE_SIZE, 1)
    _slice(r, level, size, KUEUE_SLICE_REQUIRED, KUEUE_SLICE_SIZE)


def _slice(r: _Reader, level: _Vote | None, size: _Vote | None, level_key: str, size_key: str) -> None:
    if (level is None) != (size is None):
        have, need = (level, size_key) if size is None else (size, level_key)
        raise WorkloadError(have.pod, have.where, f"needs annotation {need} as well")
    if level is not None and size is not None:
        r.slices.append(_Vote((size.value, level.value), size.pod, f"{size.where} / {level.where}"))


def _read_exclusive(r: _Reader, job: Mapping[str, Any] | None, total: int | None) -> None:
    """LWS exclusive topology: the group in one domain. JobSet: each child Job in one domain (a slice)."""
    _add(r.required, r.agreed_level(LWS_EXCLUSIVE, by_label=True))
    level = r.agreed_level(JOBSET_EXCLUSIVE, by_label=True)
    if job is not None and job.get("kind") == "JobSet":
        raw = (get(job, "metadata", "annotations") or {}).get(JOBSET_EXCLUSIVE)
        if raw is not None:
            where = f"JobSet {namespace_of(job)}/{get(job, 'metadata', 'name')} annotation {JOBSET_EXCLUSIVE}"
            level = _Vote(level_from_label(r.subject, where, raw, r.levels), r.subject, where)
    if level is None:
        return
    per_job = set()
    if job is not None and job.get("kind") == "JobSet":
        per_job = {get(rj, "template", "spec", "parallelism") or 1 for rj in get(job, "spec", "replicatedJobs") or []}
    else:
        jobs = r.agreed_int(JOBSET_GLOBAL_REPLICAS, 1, label=True)
        if jobs is not None and total is not None and total % jobs.value == 0:
            per_job = {total // jobs.value}
    if len(per_job) != 1:
        raise WorkloadError(level.pod, level.where, "needs child Jobs of equal parallelism (and the JobSet object "
                                                    "or the jobset.sigs.k8s.io/global-replicas label) to form slices")
    r.slices.append(_Vote((per_job.pop(), level.value), level.pod, level.where))


def _topology(r: _Reader, job: Mapping[str, Any] | None, total: int | None) -> dict[str, Any]:
    ours_req = r.agreed_level(REQUIRED_LEVEL_ANNOTATION, by_label=False)
    ours_pref = r.agreed_level(PREFERRED_LEVEL_ANNOTATION, by_label=False)
    _add(r.required, ours_req)
    if ours_pref is not None:
        r.preferred.insert(0, ours_pref)
    _read_kueue(r)
    _read_exclusive(r, job, total)
    _slice(r, r.agreed_level(SLICE_LEVEL_ANNOTATION, by_label=False), r.agreed_int(SLICE_SIZE_ANNOTATION, 1),
           SLICE_LEVEL_ANNOTATION, SLICE_SIZE_ANNOTATION)

    required = max(r.required, key=lambda v: level_rank(v.value, r.levels), default=None)
    preferred = r.preferred[0] if r.preferred else None
    if preferred is not None and required is not None and \
            level_rank(preferred.value, r.levels) <= level_rank(required.value, r.levels):
        preferred = None  # the required level already says more
    slice_ = _one_value(r.slices, "slice (size, level)")
    rail = r.agreed(RAIL_ALIGNED_ANNOTATION)
    return {
        "required_level": required.value if required else None,
        "preferred_level": preferred.value if preferred else None,
        "slice_size": slice_.value[0] if slice_ else None,
        "slice_level": slice_.value[1] if slice_ else None,
        "rail_aligned": parse_bool(rail.pod, rail.where, rail.value) if rail else False,
    }


# --- phase 3: timeout -------------------------------------------------------------------------


def _timeout(r: _Reader) -> float:
    ours = r.agreed_int(GANG_TIMEOUT_ANNOTATION, 1)
    if ours is not None:
        return float(ours.value)
    return float(r.timeouts[0].value) if r.timeouts else DEFAULT_GANG_TIMEOUT_S


def gang_policy(ref: GroupRef, pods: Sequence[Mapping[str, Any]], podgroup: Mapping[str, Any] | None = None,
                job: Mapping[str, Any] | None = None, levels: Sequence[LevelSpec] = ()) -> GangPolicy:
    """The policy of gang ``ref`` from its pods, its PodGroup (if any) and its job object (if any).

    ``podgroup``: the PodGroup that ``ref.object`` names for native, coscheduling and Volcano
    gangs. ``job``: the owning PyTorchJob (or other Kubeflow job), JobSet or LeaderWorkerSet.
    ``levels``: the cluster's levels, widest first.
    """
    if not pods:
        raise ValueError(f"gang {ref.key}: gang_policy needs at least one pod")
    ordered = sorted(pods, key=pod_key)
    r = _Reader(ref, ordered, levels, subject=pod_key(ordered[0]))
    min_members, total = _sizes(r, podgroup, job)
    topo = _topology(r, job, total)
    return GangPolicy(min_members=min_members, total_members=total, timeout_s=_timeout(r), **topo)
