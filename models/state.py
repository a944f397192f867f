"""Cluster state files: what is already allocated, and which nodes have failed.

::

    allocations:
      - {pod: ml/train-0, node: gpu-001, gpus: [0, 1, 2, 3], cpu_milli: 8000, memory_mib: 65536}
      - {pod: ml/notebook, node: gpu-002, gpus: [5], gpu_milli: 250}
      - {pod: ml/mpi-0, node: gpu-003, gpus: [0, 1], extended: {rdma/ib: 2}}
    failed_nodes: [gpu-007]

See docs/requests.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.requests import GPU_MILLI
from models.spec import check_extended_resources


class AllocationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pod: str
    node: str
    gpus: tuple[int, ...] = ()
    gpu_milli: Annotated[int, Field(ge=1, le=GPU_MILLI)] = GPU_MILLI
    cpu_milli: Annotated[int, Field(ge=0)] = 0
    memory_mib: Annotated[int, Field(ge=0)] = 0
    extended: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    gang: str | None = None
    owner: str | None = None

    _ext = field_validator("extended")(check_extended_resources)


class StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allocations: tuple[AllocationSpec, ...] = ()
    failed_nodes: tuple[str, ...] = ()
