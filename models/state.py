"""Cluster state files: what is already allocated, and which nodes have failed.

::

    allocations:
      - {pod: ml/train-0, node: gpu-001, gpus: [0, 1, 2, 3], cpu_milli: 8000, memory_mib: 65536}
      - {pod: ml/notebook, node: gpu-002, gpus: [5], gpu_milli: 250}
    failed_nodes: [gpu-007]

See docs/requests.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from models.errors import SpecError
from models.requests import GPU_MILLI


class AllocationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pod: str
    node: str
    gpus: tuple[int, ...] = ()
    gpu_milli: Annotated[int, Field(ge=1, le=GPU_MILLI)] = GPU_MILLI
    cpu_milli: Annotated[int, Field(ge=0)] = 0
    memory_mib: Annotated[int, Field(ge=0)] = 0
    gang: str | None = None
    owner: str | None = None


class StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allocations: tuple[AllocationSpec, ...] = ()
    failed_nodes: tuple[str, ...] = ()


def load_state_into(ledger, state: StateFile, source: str) -> None:  # ledger: scheduler.ledger.Ledger
    """Apply a state file to a ledger; every problem names the file and the entry."""
    from scheduler.ledger import Allocation, LedgerError

    arrays = ledger.arrays
    seen: set[str] = set()
    for i, a in enumerate(state.allocations):
        where = f"allocations[{i}]"
        if a.pod in seen:
            raise SpecError("pod listed twice", source=source, path=f"{where}.pod", value=a.pod)
        seen.add(a.pod)
        if a.node not in arrays.node_index:
            raise SpecError("unknown node", source=source, path=f"{where}.node", value=a.node,
                            fix="use a node name of the cluster")
        node = arrays.node_index[a.node]
        n_gpus = int(arrays.gpu_count[node])
        for g in a.gpus:
            if not 0 <= g < n_gpus:
                raise SpecError(f"GPU {g} out of range (node {a.node} has {'0-' + str(n_gpus - 1) if n_gpus else 'no GPUs'})",
                                source=source, path=f"{where}.gpus")
        if a.gpu_milli < GPU_MILLI and len(a.gpus) != 1:
            raise SpecError("a shared allocation (gpu_milli < 1000) holds exactly one GPU", source=source,
                            path=f"{where}.gpus", value=list(a.gpus))
        try:
            ledger.observe(Allocation(a.pod, node, tuple(a.gpus), a.gpu_milli, a.cpu_milli, a.memory_mib,
                                      gang=a.gang, owner=a.owner))
        except LedgerError as exc:
            raise SpecError(f"does not fit what is already allocated: {exc}", source=source, path=where) from None
    for i, name in enumerate(state.failed_nodes):
        if name not in arrays.node_index:
            raise SpecError("unknown node", source=source, path=f"failed_nodes[{i}]", value=name)
        ledger.set_failed(arrays.node_index[name], True)
