"""Gang reservations for extender mode: the gang's placement, held until its members bind.

kube-scheduler offers pods to the extender one at a time and has no gang hook, so the
first member of a gang we see triggers a placement of the whole gang; its slots (node,
GPUs per member) are reserved so no other pod takes them, and each member is then
admitted only to its own slot's node. Lifecycle of a reservation::

      place gang            member claims a slot        every slot's pod is counted
    ───────────► HELD ───────────────────────────► ... ─────────────────────────► (done, dropped)
                  │                                                  by the cache
                  │ deadline passes with a slot not yet counted
                  └──────────────► EXPIRED: unclaimed/unbound slots released, Warning event

A slot is *held* (its resources overlaid on the snapshot) until the cache counts the pod
that claimed it; from then on the pod itself holds them. Which pod takes which slot is the
handlers' business (by pod name, then by shape). The clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Slot:
    """One member's place in a reserved gang."""

    index: int
    role: str
    node: str
    gpus: tuple[int, ...]
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    pod_uid: str | None = None  # the member pod that claimed it
    pod_key: str | None = None  # namespace/name of that pod
    extended: tuple[tuple[str, int], ...] = ()  # extended resources by name, sorted

    @property
    def is_claimed(self) -> bool:
        return self.pod_uid is not None


@dataclass
class Reservation:
    """A placed gang waiting for its members to bind."""

    gang: str
    slots: list[Slot]
    created_s: float
    deadline_s: float
    counted: set[int] = field(default_factory=set)  # slots whose pod the cache now counts

    def held(self) -> list[Slot]:
        """Slots whose resources the reservation still holds."""
        return [s for s in self.slots if s.index not in self.counted]

    @property
    def is_done(self) -> bool:
        return len(self.counted) == len(self.slots)

    def describe(self) -> str:
        claimed = sum(s.is_claimed for s in self.slots)
        return f"gang {self.gang}: {len(self.counted)}/{len(self.slots)} members bound, {claimed} claimed"


class ReservationBook:
    """The live reservations by gang key; not thread-safe (the handlers hold one lock)."""

    def __init__(self, clock: Callable[[], float], timeout_s: float = 300.0) -> None:
        self.clock = clock
        self.timeout_s = timeout_s
        self._by_gang: dict[str, Reservation] = {}

    def __len__(self) -> int:
        return len(self._by_gang)

    def __iter__(self):
        return iter(list(self._by_gang.values()))

    def get(self, gang: str) -> Reservation | None:
        return self._by_gang.get(gang)

    def add(self, gang: str, slots: list[Slot], timeout_s: float | None = None) -> Reservation:
        """Hold ``slots`` for ``gang`` until the deadline (``timeout_s`` or the book's default)."""
        if gang in self._by_gang:
            raise ValueError(f"gang {gang} already has a reservation")
        now = self.clock()
        res = Reservation(gang, slots, now, now + (self.timeout_s if timeout_s is None else timeout_s))
        self._by_gang[gang] = res
        return res

    def reconcile(self, is_counted: Callable[[Slot], bool]) -> list[Reservation]:
        """Mark slots whose pod the cache now counts; drop and return finished reservations."""
        done = []
        for gang, res in list(self._by_gang.items()):
            for s in res.slots:
                if s.is_claimed and s.index not in res.counted and is_counted(s):
                    res.counted.add(s.index)
            if res.is_done:
                done.append(self._by_gang.pop(gang))
        return done

    def expire(self) -> list[Reservation]:
        """Drop and return reservations past their deadline that are not done."""
        now = self.clock()
        gone = [r for r in self._by_gang.values() if now >= r.deadline_s and not r.is_done]
        for r in gone:
            del self._by_gang[r.gang]
        return gone

    def release(self, gang: str) -> Reservation | None:
        return self._by_gang.pop(gang, None)

    def held_slots(self) -> list[Slot]:
        """Every slot still held, over all reservations (to overlay on a snapshot)."""
        return [s for r in self._by_gang.values() for s in r.held()]
