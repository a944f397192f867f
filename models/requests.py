"""Placement requests (pydantic, at the edge): a pod, a gang, an inference replica set.

A request file holds any mix of them::

    pods: [{name: ml/infer-0, gpus: 8, cpu_milli: 16000, memory_mib: 65536}]
    gangs: [{name: ml/llm, roles: [{name: worker, count: 32, gpus: 8}], required_level: rack}]
    replica_sets: [{owner: ml/chat, replicas: 4, spread_level: rack, pod: {gpus: 2}}]

See docs/requests.md for every field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.spec import MAX_GPUS_PER_NODE, MAX_QUANTITY, check_extended_resources

GPU_MILLI = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Toleration(_Strict):
    """A Kubernetes toleration (operator Equal or Exists; empty effect = all effects)."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        if self.effect and self.effect != effect:
            return False
        if self.operator == "Exists":
            return self.key == "" or self.key == key
        return self.key == key and self.value == value


class Resources(_Strict):
    """What one pod asks for. ``gpu_milli`` < 1000 is a shared GPU (then ``gpus`` is 1).

    ``extended``: Kubernetes extended resources by name (``rdma/ib: 4``), whole units;
    hugepages in bytes.
    """

    cpu_milli: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] = 0
    memory_mib: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] = 0
    gpus: Annotated[int, Field(ge=0, le=MAX_GPUS_PER_NODE)] = 0
    gpu_milli: Annotated[int, Field(ge=1, le=GPU_MILLI)] = GPU_MILLI
    extended: dict[str, Annotated[int, Field(ge=1, le=MAX_QUANTITY)]] = Field(default_factory=dict)
    gpu_models: tuple[str, ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    priority: int = 0

    _ext = field_validator("extended")(check_extended_resources)

    @model_validator(mode="after")
    def _shared(self) -> Resources:
        if self.gpu_milli < GPU_MILLI and self.gpus != 1:
            raise ValueError(f"a shared GPU request (gpu_milli {self.gpu_milli} < 1000) must ask for exactly 1 GPU, not {self.gpus}")
        return self


class PodRequest(Resources):
    """One pod: resources, constraints, and an optional owner for replica spread."""

    name: str
    owner: str | None = None
    spread_level: str | None = None


class GangRole(Resources):
    """``count`` identical members of a gang (e.g. 1 launcher, 31 workers)."""

    name: str = "worker"
    count: Annotated[int, Field(ge=1, le=100_000)] = 1


class GangRequest(_Strict):
    """A gang: all members placed, or none.

    ``required_level``: every member inside one domain of that level. ``preferred_level``:
    try that level, then climb. ``slice_size``/``slice_level``: each consecutive run of
    ``slice_size`` members in one domain of ``slice_level``. ``min_members``: an elastic
    gang may start with fewer (at least this many). ``rail_aligned``: members' GPU i must
    share rail i (same GPU indices on every node). ``balanced``: spread members as evenly
    as possible over the domains used.
    """

    name: str
    roles: tuple[GangRole, ...]
    min_members: Annotated[int, Field(ge=1)] | None = None
    required_level: str | None = None
    preferred_level: str | None = None
    slice_size: Annotated[int, Field(ge=1)] | None = None
    slice_level: str | None = None
    rail_aligned: bool = False
    balanced: bool = False
    priority: int = 0

    @model_validator(mode="after")
    def _check(self) -> GangRequest:
        if not self.roles:
            raise ValueError("a gang needs at least one role")
        total = sum(r.count for r in self.roles)
        if self.min_members is not None and self.min_members > total:
            raise ValueError(f"min_members {self.min_members} exceeds the gang's {total} members")
        if (self.slice_size is None) != (self.slice_level is None):
            raise ValueError("slice_size and slice_level go together")
        if self.slice_size is not None and total % self.slice_size:
            raise ValueError(f"{total} members do not split into slices of {self.slice_size}")
        names = [r.name for r in self.roles]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate role names {names}")
        return self

    @property
    def size(self) -> int:
        return sum(r.count for r in self.roles)

    def member_names(self) -> list[tuple[str, GangRole]]:
        """``(member name, role)`` in order: ``<gang>/<role>-<i>``."""
        return [(f"{self.name}/{r.name}-{i}", r) for r in self.roles for i in range(r.count)]


class ReplicaSetRequest(_Strict):
    """Inference replicas of one owner, spread over ``spread_level`` domains.

    Each replica's GPU set is chosen as any pod's (inside one NVLink island where the node
    has one free); there is no per-request switch for that (docs/requests.md).
    """

    owner: str
    replicas: Annotated[int, Field(ge=1, le=10_000)]
    pod: Resources
    spread_level: str | None = None


class RequestFile(_Strict):
    """The document ``toposched place --request`` reads."""

    pods: tuple[PodRequest, ...] = ()
    gangs: tuple[GangRequest, ...] = ()
    replica_sets: tuple[ReplicaSetRequest, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> RequestFile:
        """Every pod the file places has its own name, every gang and replica set too.

        Two requests under one name would both be placed and their outcomes could not be told
        apart. Checked in the engine's order (gangs, replica sets, pods); the error names the
        later place and the earlier one.
        """
        self._check_unique([(g.name, f"gangs[{i}].name", f"gangs[{i}]") for i, g in enumerate(self.gangs)])
        self._check_unique([(r.owner, f"replica_sets[{i}].owner", f"replica_sets[{i}]")
                            for i, r in enumerate(self.replica_sets)])
        pods: dict[str, str] = {}
        for name, where, what in self.pod_names():
            _claim(pods, name, where, what)
        return self

    def pod_names(self) -> Iterator[tuple[str, str, str]]:
        """Every pod the file places, in the engine's order: ``(name, where, what)``, e.g.
        ``("ml/g/worker-1", "gangs[0] as member 1 of role 'worker'", "gangs[0].roles[0]: member 'ml/g/worker-1'")``."""
        for i, g in enumerate(self.gangs):
            for j, role in enumerate(g.roles):
                for k in range(role.count):
                    name = f"{g.name}/{role.name}-{k}"
                    yield name, f"gangs[{i}] as member {k} of role {role.name!r}", f"gangs[{i}].roles[{j}]: member {name!r}"
        for i, r in enumerate(self.replica_sets):
            for k in range(r.replicas):
                name = f"{r.owner}-{k}"
                yield name, f"replica_sets[{i}] as replica {k}", f"replica_sets[{i}].owner: replica {name!r}"
        for i, p in enumerate(self.pods):
            yield p.name, f"pods[{i}]", f"pods[{i}].name: {p.name!r}"

    @staticmethod
    def _check_unique(entries: list[tuple[str, str, str]]) -> None:
        seen: dict[str, str] = {}
        for name, path, where in entries:
            _claim(seen, name, where, f"{path}: {name!r}")


def _claim(seen: dict[str, str], name: str, where: str, what: str) -> None:
    """Record that ``where`` uses ``name``; a name used before is an error naming both places."""
    first = seen.setdefault(name, where)
    if first != where:
        raise ValueError(f"{what} is already used by {first}")
