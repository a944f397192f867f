"""Prometheus metrics of the live scheduler, one registry per scheduler instance.

kube-scheduler's names where one exists (so its dashboards and alerts carry over):
``scheduler_schedule_attempts_total{result,profile}``,
``scheduler_scheduling_attempt_duration_seconds{result,profile}``,
``scheduler_pending_pods{queue}``, ``scheduler_scheduling_algorithm_duration_seconds``,
``scheduler_preemption_attempts_total``, ``scheduler_preemption_victims``.
Ours carry the ``toposched_`` prefix: gang placement latency, solver outcomes, GPUs per
model (allocated / free), fragmentation, leader status, binding and API errors, re-lists.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# kube-scheduler's layouts: exp(0.001, 2, 15) for attempts, exp(0.01, 2, 20) for SLI-style latencies
ATTEMPT_BUCKETS = tuple(0.001 * 2**i for i in range(15))
LATENCY_BUCKETS = tuple(0.01 * 2**i for i in range(20))
VICTIM_BUCKETS = tuple(float(2**i) for i in range(7))  # kube-scheduler's 1, 2, 4, ..., 64
QUEUES = ("active", "backoff", "unschedulable", "gated")


class SchedulerMetrics:
    """Every metric of one scheduler, registered in ``registry``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.schedule_attempts = Counter(
            "scheduler_schedule_attempts", "Scheduling attempts by result (scheduled, unschedulable, error).",
            ["result", "profile"], registry=r)
        self.attempt_duration = Histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency: algorithm plus binding.", ["result", "profile"],
            buckets=ATTEMPT_BUCKETS, registry=r)
        self.algorithm_duration = Histogram(
            "scheduler_scheduling_algorithm_duration_seconds", "Engine time of one scheduling cycle (a batch).",
            buckets=ATTEMPT_BUCKETS, registry=r)
        self.pending_pods = Gauge("scheduler_pending_pods", "Pending pods by queue.", ["queue"], registry=r)
        self.preemption_attempts = Counter(
            "scheduler_preemption_attempts", "Preemption attempts for units that did not fit (pods or gangs).",
            registry=r)
        self.preemption_victims = Histogram(
            "scheduler_preemption_victims", "Pods evicted by one preemption.", buckets=VICTIM_BUCKETS, registry=r)
        self.gang_latency = Histogram(
            "toposched_gang_placement_duration_seconds",
            "From the gang's first member seen to its last member bound.", buckets=LATENCY_BUCKETS, registry=r)
        self.gang_attempts = Counter(
            "toposched_gang_schedule_attempts", "Gang placement attempts by result.", ["result"], registry=r)
        self.solver_results = Counter(
            "toposched_solver_results", "Engine outcomes by solver status (OPTIMAL, FEASIBLE, GREEDY, ...).",
            ["status"], registry=r)
        self.gpus = Gauge("toposched_gpus", "GPUs by model and state (allocated, free).", ["model", "state"],
                          registry=r)
        self.fragmentation = Gauge(
            "toposched_gpu_fragmentation_ratio",
            "Share of free whole GPUs that sit on partly used nodes (cannot host a full-node job).", ["model"],
            registry=r)
        self.leader = Gauge("toposched_leader", "1 while this instance holds the lease.", registry=r)
        self.binds = Counter("toposched_bindings", "Binding calls by result (ok, error).", ["result"], registry=r)
        self.bind_duration = Histogram("toposched_binding_duration_seconds", "Latency of one binding call.",
                                       buckets=ATTEMPT_BUCKETS, registry=r)
        self.gang_rollbacks = Counter("toposched_gang_rollbacks", "Gangs rolled back after a member failed to bind.",
                                      registry=r)
        self.api_errors = Counter("toposched_api_errors", "Failed API calls by operation and HTTP status.",
                                  ["operation", "code"], registry=r)
        self.api_throttle = Counter("toposched_api_throttle_seconds", "Seconds API requests waited for the "
                                    "client-side rate limit (api_qps, api_burst).", registry=r)
        self.relists = Counter("toposched_relists", "Full re-lists by resource and cause (start, gone, error).",
                               ["resource", "cause"], registry=r)
        self.cache_nodes = Gauge("toposched_cache_nodes", "Nodes in the topology (usable and not).", registry=r)
        self.topology_version = Gauge("toposched_topology_version", "Topology rebuilds so far.", registry=r)
        self.invalid_objects = Gauge("toposched_invalid_nodes", "Nodes left out because their labels or "
                                     "annotations cannot be read.", registry=r)
        self.mix_arrivals = Gauge("toposched_workload_mix_arrivals", "Pods counted in the arriving mix the "
                                  "fragmentation score packs against.", registry=r)
        self.mix_kinds = Gauge("toposched_workload_mix_kinds", "Pod kinds in the published arriving mix "
                               "(0: no mix yet, fragmentation abstains).", registry=r)
        self.invalid_budgets = Gauge("toposched_invalid_disruption_budgets", "PodDisruptionBudgets preemption "
                                     "ignores because their selector or status cannot be read.", registry=r)
        for q in QUEUES:
            self.pending_pods.labels(queue=q).set(0)
        self.leader.set(0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
