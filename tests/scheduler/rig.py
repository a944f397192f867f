"""A scheduling loop on the in-memory cluster, for the loop tests: bindings inline, a manual clock."""

from __future__ import annotations

from models.spec import LevelSpec
from scheduler.fakes import InMemoryCluster, RecordingEvents
from scheduler.loop import Scheduler
from scheduler.serve_config import BackoffConfig, ServeConfig
from tests.clock import ManualClock
from tests.integration import objects as o


class LoopRig:
    """A scheduler wired to an in-memory cluster; ``run()`` steps until nothing is left to do now.

    Nodes ``n0``.. of 8 GPUs, ``per_rack`` to a rack (``r0``, ``r1``, ...). With ``settle``,
    ``add()`` runs the loop after adding the pods."""

    def __init__(self, nodes: int = 4, per_rack: int = 2, *, leader: bool = True, settle: bool = False,
                 steps: int = 20, **config) -> None:
        self.clock = ManualClock()
        self.cluster = InMemoryCluster()
        self.events = RecordingEvents()
        self.leading = leader
        self.settle = settle
        self.steps = steps
        self.recreated = 0
        cfg = ServeConfig(levels=[LevelSpec(name="rack", label=o.RACK_LABEL)],
                          backoff=BackoffConfig(initial_s=1, max_s=10, unschedulable_retry_s=60), **config)
        self.s = Scheduler(cfg, self.cluster, self.events, clock=self.clock, bind_workers=0,
                           background_reporting=False, is_leader=lambda: self.leading)
        for i in range(nodes):
            self.cluster.add_node(o.node(f"n{i}", 8, rack=f"r{i // per_rack}"))
        self.cluster.connect(self.s)

    def run(self, steps: int | None = None) -> None:
        for _ in range(steps or self.steps):
            stats = self.s.step()
            if not stats.events and not stats.decided:
                return

    def add(self, *pods) -> None:
        for p in pods:
            self.cluster.add_pod(p)
        if self.settle:
            self.run()

    def recreate(self, templates: dict[str, dict], name=None) -> None:
        """The job controller: each pod of ``templates`` (pod key -> pod) that is gone from the
        cluster comes back pending under a new name (``name(old name, n)``, default
        ``<old>-r<n>``, n counting every pod re-created by this rig); ``templates`` follows."""
        for key in [k for k in templates if k not in self.cluster.pods]:
            self.recreated += 1
            old = templates.pop(key)
            meta = {k: v for k, v in old["metadata"].items() if k not in ("uid", "resourceVersion")}
            meta["name"] = name(meta["name"], self.recreated) if name else f"{meta['name']}-r{self.recreated}"
            spec = {k: v for k, v in old["spec"].items() if k != "nodeName"}
            self.cluster.add_pod({**old, "metadata": meta, "spec": spec, "status": {"phase": "Pending"}})
            templates[f"{meta.get('namespace', 'default')}/{meta['name']}"] = \
                self.cluster.pods[f"{meta.get('namespace', 'default')}/{meta['name']}"]

    def notes(self, key: str, reason: str) -> list[str]:
        return [e.note for e in self.events.for_object(key, reason)]
