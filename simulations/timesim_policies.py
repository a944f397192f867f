"""Policies of the time-based simulator: an engine configuration, a gang mode, a failure handling.

See ``simulations.timesim`` (the table of what each one models) and docs/workload-simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import SpecError
from scheduler.engine import GangConfig, PlacementConfig, PluginConfig


@dataclass(frozen=True)
class Policy:
    """A baseline or toposched: engine configuration + gang mode + failure handling."""

    name: str
    description: str
    plugins: tuple[tuple[str, float], ...] | None = None  # explicit scorers; None: ``profile``
    profile: str = "toposched"
    gang: str = "gang"  # "none": pods one by one | "pods": all-or-nothing pods | "gang": place_gang
    solver: str = "greedy"
    topology_hints: bool = True  # gangs carry preferred/required level and rail alignment
    on_failure: str = "restart"  # "recreate" | "restart" | "repair"
    solver_option: bool = False  # ``SimConfig.gang_solver`` may replace ``solver``

    def engine_config(self, seed: int, solver: str | None = None, time_limit_s: float = 0.2) -> PlacementConfig:
        gang = GangConfig(solver=solver or self.solver, time_limit_s=time_limit_s)
        if self.plugins is not None:
            return PlacementConfig(plugins=[PluginConfig(name=n, weight=w) for n, w in self.plugins],
                                   seed=seed, gang=gang)
        return PlacementConfig(profile=self.profile, seed=seed, gang=gang)


POLICIES: dict[str, Policy] = {
    "default": Policy("default", "kube-scheduler-like: spread, pods one by one without gang (may deadlock)",
                      plugins=(("least-allocated", 1.0), ("replica-spread", 5.0)), gang="none",
                      topology_hints=False, on_failure="recreate"),
    "volcano": Policy("volcano", "Volcano-like: gang (all or nothing) + binpack, no topology",
                      plugins=(("binpack", 1.0), ("replica-spread", 5.0)), gang="pods", topology_hints=False,
                      on_failure="restart"),
    "topo-greedy": Policy("topo-greedy", "Kueue-TAS-like: gang, greedy tree descent over the topology",
                          profile="binpack", gang="gang", solver="greedy", on_failure="restart"),
    "toposched": Policy("toposched", "toposched: gang by tree descent (+CP-SAT), fragmentation-aware pods, "
                        "repair keeping survivors", profile="toposched", gang="gang", solver="greedy",
                        on_failure="repair", solver_option=True),
}


def resolve_policies(text: str) -> list[Policy]:
    """``all`` or a comma list of policy names."""
    names = list(POLICIES) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad or not names:
        raise SpecError(f"unknown policy {', '.join(bad) or repr(text)}", path="--policy",
                        fix=f"use all or a comma list of {', '.join(POLICIES)}")
    return [POLICIES[n] for n in names]
