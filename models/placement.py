"""Decisions: what the engine answers (placements, unplaced requests with reasons, solver report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SolverStatus(StrEnum):
    OPTIMAL = "OPTIMAL"
    FEASIBLE = "FEASIBLE"
    GREEDY = "GREEDY"  # single-pod / greedy path, no solver involved
    GREEDY_FALLBACK = "GREEDY_FALLBACK"  # solver ran out of time or failed; greedy answer used
    INFEASIBLE = "INFEASIBLE"


@dataclass(frozen=True)
class Placement:
    """One pod's place: node, exact GPUs and how much of each, CPU, memory, extended resources."""

    pod: str
    node: str
    node_index: int
    gpus: tuple[int, ...]
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    gang: str | None = None
    role: str | None = None
    owner: str | None = None
    extended: tuple[tuple[str, int], ...] = ()  # extended resources taken, by name (sorted)

    def to_json(self) -> dict:
        d = {"pod": self.pod, "node": self.node, "gpus": list(self.gpus), "gpu_milli": self.gpu_milli,
             "cpu_milli": self.cpu_milli, "memory_mib": self.memory_mib}
        if self.extended:
            d["extended"] = dict(self.extended)
        for k in ("gang", "role", "owner"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass
class SolverReport:
    """How a decision was reached."""

    status: SolverStatus
    solver: str = "greedy"
    time_s: float = 0.0
    objective: dict[str, float] = field(default_factory=dict)
    greedy_objective: dict[str, float] | None = None
    gap: float | None = None
    note: str = ""

    def to_json(self) -> dict:
        d = {"status": self.status.value, "solver": self.solver, "time_s": round(self.time_s, 6),
             "objective": self.objective}
        if self.greedy_objective is not None:
            d["greedy_objective"] = self.greedy_objective
        if self.gap is not None:
            d["gap"] = self.gap
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class Unplaced:
    """A request that did not fit, and why (kube-scheduler style sums)."""

    request: str
    reason: str

    def to_json(self) -> dict:
        return {"request": self.request, "reason": self.reason}


@dataclass
class RequestOutcome:
    """The result for one request (pod, gang or replica set)."""

    request: str
    kind: str  # "pod" | "gang" | "replica_set"
    placements: list[Placement]
    report: SolverReport
    reason: str = ""

    @property
    def placed(self) -> bool:
        return self.report.status != SolverStatus.INFEASIBLE


@dataclass
class Decision:
    """Everything one ``place()`` call decided."""

    outcomes: list[RequestOutcome]

    @property
    def placements(self) -> list[Placement]:
        return [p for o in self.outcomes if o.placed for p in o.placements]

    @property
    def unplaced(self) -> list[Unplaced]:
        return [Unplaced(o.request, o.reason) for o in self.outcomes if not o.placed]

    def to_json(self) -> dict:
        return {
            "outcomes": [
                {"request": o.request, "kind": o.kind, "placed": o.placed, "reason": o.reason or None,
                 "solver": o.report.to_json(), "placements": [p.to_json() for p in o.placements]}
                for o in self.outcomes
            ],
        }
