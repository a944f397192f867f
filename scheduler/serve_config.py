"""``toposched serve`` configuration: one YAML document, validated with pydantic (extra keys refused).

::

    scheduler_name: toposched
    levels:                       # widest first; omit to infer from node labels
      - {name: block, label: cloud.google.com/gce-topology-block}
      - {name: rack, label: example.com/rack}
    placement: {profile: toposched, gang: {solver: cpsat, time_limit_s: 1.0}}
    leader_election: {lease_duration_s: 15, renew_deadline_s: 10, retry_period_s: 2}
    backoff: {initial_s: 1, max_s: 10}
    gang_timeout_s: 300
    preemption: true
    metrics_port: 10261

Every field is documented in docs/deploy.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.readers.k8s_node import WELL_KNOWN_LEVEL_LABELS
from models.spec import LevelSpec, check_levels, parse_document, read_text, validate_model
from scheduler.engine import PlacementConfig
from scheduler.failures import NodeFailureConfig
from scheduler.leader import check_timings
from scheduler.workload_mix import ArrivalMix


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LeaderElectionConfig(_Strict):
    """A coordination.k8s.io/v1 Lease; kube-scheduler's default timings."""

    enabled: bool = True
    lease_name: str = "toposched"
    lease_namespace: str = "toposched-system"
    lease_duration_s: Annotated[float, Field(gt=0)] = 15.0
    renew_deadline_s: Annotated[float, Field(gt=0)] = 10.0
    retry_period_s: Annotated[float, Field(gt=0)] = 2.0

    @field_validator("lease_name", "lease_namespace")
    @classmethod
    def _names(cls, value: str, info: Any) -> str:
        # the API server refuses a Lease of any other name, and the service would never lead
        label = info.field_name == "lease_namespace"
        pattern = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?" if label else r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
        if not re.fullmatch(pattern, value) or len(value) > (63 if label else 253):
            what = "a namespace name (lower-case letters, digits and '-')" if label else \
                "a Lease name (lower-case letters, digits, '-' and '.')"
            raise ValueError(f"{value!r} is not {what}")
        return value

    @model_validator(mode="after")
    def _timings(self) -> LeaderElectionConfig:
        problem = check_timings(self.lease_duration_s, self.renew_deadline_s, self.retry_period_s)
        if problem:
            raise ValueError(problem)
        return self


class BackoffConfig(_Strict):
    """Per-pod retry backoff (kube-scheduler: 1 s doubling to 10 s)."""

    initial_s: Annotated[float, Field(gt=0)] = 1.0
    max_s: Annotated[float, Field(gt=0)] = 10.0
    # an unschedulable pod is retried at least this often even if nothing in the cluster changed
    unschedulable_retry_s: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        return self


class WorkloadMixConfig(_Strict):
    """The arriving mix the fragmentation score is measured against (``ArrivalMix``)."""

    half_life_pods: Annotated[float, Field(gt=0)] = 2000.0  # older arrivals count half after this many new ones
    publish_every: Annotated[int, Field(ge=1)] = 100  # new pods between two re-scorings of every node
    coverage: Annotated[float, Field(gt=0, le=1)] = 0.95  # FGD's typical pods; the toposched profile uses every kind
    max_kinds: Annotated[int, Field(ge=1, le=100_000)] = 256  # the heaviest kinds kept (scoring cost grows with them)

    def arrival_mix(self) -> ArrivalMix:
        """An empty :class:`ArrivalMix` with these settings."""
        return ArrivalMix(self.half_life_pods, self.publish_every, self.coverage, self.max_kinds)


class ServeConfig(_Strict):
    """Everything ``toposched serve --mode scheduler`` needs besides the API server address."""

    scheduler_name: str = "toposched"
    levels: list[LevelSpec] | None = None
    placement: PlacementConfig = PlacementConfig()
    workload_mix: WorkloadMixConfig = WorkloadMixConfig()
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    backoff: BackoffConfig = BackoffConfig()
    # how long a gang may wait for its members before a Warning event says who is missing
    gang_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # evict lower-priority pods (whole gangs) for a pod or gang that does not fit (docs/preemption.md)
    preemption: bool = True
    # a preemptor nominated this long without being placed may preempt again
    preemption_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # when a node counts as failed and what happens to its pods (scheduler/failures.py, docs/failures.md)
    node_failures: NodeFailureConfig = NodeFailureConfig()
    metrics_address: str = "0.0.0.0"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 10261
    # concurrent binding calls (the API client's connection pool is sized to match)
    bind_workers: Annotated[int, Field(ge=1, le=256)] = 16
    # most requests (pods + gangs) decided in one engine call
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # "binding": the GPU assignment annotations travel in the Binding (merged by the API server in
    # the same write that sets nodeName); "patch": a separate PATCH before the binding POST
    assignment_write: Literal["binding", "patch"] = "binding"
    # Normal "Scheduled" event per bound pod (one extra API call per pod)
    scheduled_events: bool = True
    # the same FailedScheduling note is not repeated on a pod within this interval
    event_repeat_interval_s: Annotated[float, Field(ge=0)] = 60.0
    # server-side watch duration before the stream is reopened from the last resourceVersion
    watch_timeout_s: Annotated[int, Field(ge=1)] = 300
    # per-request client timeout for writes and lists
    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # client-side rate limit of API requests (lists, bindings, events, patches; not watch streams
    # or the leader lease); 0 = none (the default: the API server's priority and fairness throttles,
    # and its 429 answers are retried). kube-scheduler's clientConnection uses 50 / 100.
    api_qps: Annotated[float, Field(ge=0)] = 0.0
    api_burst: Annotated[int, Field(ge=1)] = 100
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check_levels(self) -> ServeConfig:
        if self.levels is not None:
            # one name and one node label per level, as in a cluster spec; the live reader also
            # tries a well-known label for a level that names none, so that one counts too
            check_levels(self.levels, WELL_KNOWN_LEVEL_LABELS)
        return self


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """The config at ``path`` (YAML or JSON), or the defaults; errors are ``SpecError`` naming the path."""
    if path is None:
        return ServeConfig()
    doc = parse_document(read_text(path), str(path))
    return validate_model(ServeConfig, doc if doc is not None else {}, str(path))
