"""Node failures in the live scheduler: detect them, delete the lost pods, repair gangs.

Two parts. ``FailureDetector`` is pure (plain node dicts in, events out, an injected
clock, no Kubernetes client): a node counts as **failed** when

- its ``Ready`` condition is ``False`` or ``Unknown`` (or missing) for longer than
  ``grace_s`` (default 30 s), measured on the detector's clock from the first time it
  saw the node not ready;
- it carries, at once, a ``NoExecute`` taint whose key is in ``taint_keys``
  (``node.kubernetes.io/unreachable``, ``node.kubernetes.io/not-ready``: the taints the
  node lifecycle controller evicts with), or a ``NoExecute``/``NoSchedule`` taint whose
  key is in ``operator_taint_keys`` (an operator's own "this node is broken" taint). The
  ``NoSchedule`` forms of the controller's taints only keep new pods off (the
  ``node-constraints`` filter, which honours tolerations); the node is then not ready
  anyway and the grace period applies;
- it was deleted (known before, absent now).

A cordoned node (``spec.unschedulable``) is not failed: new placements avoid it (the
``node-state`` filter), its pods stay. A failed node that is healthy again is
**recovered**: it returns to the pool; nothing is moved back.

``FailureHandler`` is the loop's side (``scheduler.loop`` calls ``step`` once per cycle
and ``take_repairs`` before deciding)::

    node Ready=Unknown ──grace──► NodeFailed ──► ledger.set_failed(node)
                                      │          Warning NodeFailed on the Node
                                      ▼
                     every pod bound there is lost: Warning NodeFailed on the pod,
                     deleted through the API so that its controller recreates it
                                      │
              gang member ────────────┴──────────── replica / plain pod
                   │                                       │
      replacement pods arrive (matched to the gang         recreated by its controller,
      by its labels); the gang unit is a repair:           placed as any pod (replicas
      plan_repair keeps the survivors ──► repair: bind     keep their spread)
                      │
                      └─► impossible: survivors deleted (Warning GangRestart), the
                          whole gang is placed anew when its pods are back

Every failed node is handled on every step, so many failures at once leave no gang
waiting behind another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from models.placement import RequestOutcome
from models.requests import GangRequest
from plugins.base import Context
from scheduler.partial_gang import LostMember, complete_gang, member_shape, slice_groups, with_survivors
from scheduler.repair import plan_repair

log = logging.getLogger("toposched.failures")

DELETE_RETRY_S = 2.0  # the first retry of a deletion the API refused; doubles up to DELETE_RETRY_MAX_S
DELETE_RETRY_MAX_S = 60.0

DEFAULT_TAINT_KEYS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
FAILING_EFFECTS = ("NoExecute", "NoSchedule")


class NodeFailureConfig(BaseModel):
    """When a node counts as failed, and what the scheduler does about it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    grace_s: Annotated[float, Field(ge=0)] = 30.0  # Ready False/Unknown this long = failed
    taint_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_TAINT_KEYS))  # failed when NoExecute
    operator_taint_keys: list[str] = Field(default_factory=list)  # failed when NoExecute or NoSchedule
    delete_lost_pods: bool = True  # delete pods on failed nodes so that their controllers recreate them
    repair_gangs: bool = True  # replacements next to the survivors (else the whole gang restarts)


# --------------------------------------------------------------------------- the detector (pure)


@dataclass(frozen=True)
class NodeFailed:
    node: str
    reason: str  # "Ready=Unknown for 45s", "tainted node.kubernetes.io/unreachable:NoExecute", "deleted"
    at: float


@dataclass(frozen=True)
class NodeRecovered:
    node: str
    at: float


def ready_status(node: Mapping[str, Any]) -> str:
    """``True``, ``False`` or ``Unknown`` (a node without a Ready condition is ``Unknown``)."""
    status = node.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            s = c.get("status")
            return s if s in ("True", "False") else "Unknown"
    return "Unknown"


def failing_taint(node: Mapping[str, Any], keys: Iterable[str], operator_keys: Iterable[str] = ()) -> str | None:
    """``key:effect`` of the first taint that fails the node, else None.

    ``keys`` fail it with effect NoExecute, ``operator_keys`` with NoExecute or NoSchedule.
    """
    evicting, operator = set(keys), set(operator_keys)
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, Mapping) else None
    for t in taints if isinstance(taints, list) else []:  # unreadable taints: the cache leaves the node out
        if not isinstance(t, Mapping) or not isinstance(t.get("key"), str) or not isinstance(t.get("effect"), str):
            continue
        key, effect = t.get("key"), t.get("effect")
        if (key in evicting and effect == "NoExecute") or (key in operator and effect in FAILING_EFFECTS):
            return f"{key}:{effect}"
    return None


class FailureDetector:
    """Node dicts in, ``NodeFailed`` / ``NodeRecovered`` out; ``observe`` is called with every node list."""

    def __init__(self, config: NodeFailureConfig | None = None, clock: Callable[[], float] | None = None) -> None:
        self.config = config or NodeFailureConfig()
        self.clock = clock
        self.not_ready_since: dict[str, float] = {}
        self.failed: dict[str, NodeFailed] = {}
        self.known: set[str] = set()

    def observe(self, nodes: Mapping[str, Mapping[str, Any]], now: float | None = None) -> list[NodeFailed | NodeRecovered]:
        """Compare the current nodes with what was seen before; events in node-name order."""
        if now is None:
            assert self.clock is not None, "give now= or a clock"
            now = self.clock()
        out: list[NodeFailed | NodeRecovered] = []
        for name in sorted(set(nodes) | self.known):
            obj = nodes.get(name)
            why = self._why(name, obj, now)
            was = name in self.failed
            if why is not None and not was:
                ev = NodeFailed(name, why, now)
                self.failed[name] = ev
                out.append(ev)
            elif why is None and was:
                del self.failed[name]
                out.append(NodeRecovered(name, now))
        self.known = set(nodes) | set(self.failed)
        return out

    def _why(self, name: str, obj: Mapping[str, Any] | None, now: float) -> str | None:
        if obj is None:
            self.not_ready_since.pop(name, None)
            return "deleted" if name in self.known or name in self.failed else None
        taint = failing_taint(obj, self.config.taint_keys, self.config.operator_taint_keys)
        status = ready_status(obj)
        if status == "True":
            self.not_ready_since.pop(name, None)
        else:
            since = self.not_ready_since.setdefault(name, now)
            if now - since >= self.config.grace_s:
                return f"Ready={status} for {now - since:.0f}s"
        if taint is not None:
            return f"tainted {taint}"
        return None

    def next_deadline(self) -> float | None:
        """When a node that is not ready now will count as failed (None: none pending)."""
        pending = [t + self.config.grace_s for n, t in self.not_ready_since.items() if n not in self.failed]
        return min(pending) if pending else None


@dataclass(frozen=True)
class BoundRef:
    """What failure handling needs of a bound pod."""

    key: str
    node: str
    gang: str | None = None
    owner: str | None = None


@dataclass
class LostPods:
    """Pods on failed nodes, grouped the way they are handled."""

    by_gang: dict[str, list[str]] = field(default_factory=dict)
    by_owner: dict[str, list[str]] = field(default_factory=dict)
    single: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        out = [k for ks in self.by_gang.values() for k in ks] + [k for ks in self.by_owner.values() for k in ks]
        return sorted(out + self.single)


def lost_pods(failed: Iterable[str], pods: Iterable[BoundRef]) -> LostPods:
    """Pods bound to any of the ``failed`` nodes, per gang, per replica owner, and the rest."""
    down = set(failed)
    out = LostPods()
    for p in sorted(pods, key=lambda p: p.key):
        if p.node not in down:
            continue
        if p.gang is not None:
            out.by_gang.setdefault(p.gang, []).append(p.key)
        elif p.owner is not None:
            out.by_owner.setdefault(p.owner, []).append(p.key)
        else:
            out.single.append(p.key)
    return out


# --------------------------------------------------------------------------- the loop's side


@dataclass
class _Repair:
    gang: str
    nodes: set[str]
    lost: list[LostMember] = field(default_factory=list)


@dataclass
class _Deletion:
    """A pod toposched deleted (a lost pod, a restarted gang's member, a rolled-back member):
    the uid deleted (a pod re-created under the name is a new member, not this one; "" when
    unknown), what for (said again when the deletion fails), and when to try again after
    the API refused it."""

    uid: str
    why: str
    failures: int = 0
    retry_at: float | None = None


class FailureHandler:
    """Detection, lost pods and gang repair for one ``scheduler.loop.Scheduler``."""

    def __init__(self, config: NodeFailureConfig | None, clock: Callable[[], float]) -> None:
        self.config = config or NodeFailureConfig()
        self.clock = clock
        self.detector = FailureDetector(self.config, clock)
        self.repairing: dict[str, _Repair] = {}
        self.deleting: dict[str, _Deletion] = {}  # pods we deleted, by key, until they are gone
        self.repaired = 0  # gangs repaired keeping survivors (tests and logs read it)
        self.restarted = 0  # gangs that could not be repaired (or completed)
        self.completed = 0  # partly bound gangs completed next to their bound members

    @property
    def failed(self) -> dict[str, NodeFailed]:
        return self.detector.failed

    def being_deleted(self, cache: Any, key: str) -> bool:
        """We deleted pod ``key`` and it is still there: the same pod (uid), bound or being bound.
        A pod re-created under the name is a new member, not one on its way out."""
        d = self.deleting.get(key)
        now = _uid_of(cache, key)
        return d is not None and now is not None and (not d.uid or not now or d.uid == now)

    def delete(self, sched: Any, key: str, why: str, event: tuple[str, str] | None = None) -> bool:
        """Delete pod ``key`` through the API (on the loop's worker pool) and keep it as being
        deleted until the watch says it is gone; a refused deletion is tried again. ``event``:
        a Warning (reason, note) on the pod first. False (no event, no deletion) when the pod
        is neither bound nor being bound any more: gone, or re-created under its name (pending,
        another uid), which is a new pod and not the one to delete."""
        uid = _uid_of(sched.cache, key)
        if uid is None:
            log.info("not deleted (%s): the pod is gone or re-created since", why, extra={"pod": key})
            return False
        if not sched.is_leader():  # (a gang rolled back after the lease was lost mid-binding)
            log.info("not deleted (%s): this replica does not lead; the leader decides", why, extra={"pod": key})
            return False
        if event is not None:
            sched.reporter.event(_pod_ref(sched, key, uid), "Warning", event[0], "Deleting", event[1], dedup=False)
        self.deleting[key] = _Deletion(uid, why)
        _delete(sched, key, uid)
        return True

    def deletion_failed(self, sched: Any, key: str, err: Any) -> None:
        """The API refused to delete ``key`` (the loop's ``deleted`` message): say so, and try
        again later (2 s, doubling up to 60 s) while the pod is still there. A pod we mean to
        delete is left out of its gang's current run, so it must not be left running."""
        d = self.deleting.get(key)
        if d is None or not self.being_deleted(sched.cache, key):
            # gone or re-created meanwhile (the watch may show it before this answer comes): nothing
            # left to delete, and a pod under the name now is another one
            self.deleting.pop(key, None)
            log.warning("could not delete a pod that is gone or re-created since: %s", err, extra={"pod": key})
            return
        if err.reason == "NotLeader":  # the lease is gone: the leader decides about this pod
            self.deleting.pop(key, None)
            return
        d.failures += 1
        wait = min(DELETE_RETRY_S * 2 ** (d.failures - 1), DELETE_RETRY_MAX_S)
        d.retry_at = self.clock() + wait
        log.error("could not delete a pod (%s): %s; trying again in %.0fs", d.why, err, wait, extra={"pod": key})
        if d.failures == 1:
            sched.reporter.event(sched._ref(key), "Warning", "DeleteFailed", "Deleting",
                                 f"toposched could not delete this pod ({d.why}): {err}; it tries again "
                                 "until the pod is gone")

    def _retry_deletions(self, sched: Any) -> None:
        now = self.clock()
        for key, d in list(self.deleting.items()):
            if d.retry_at is not None and d.retry_at <= now:
                d.retry_at = None
                log.info("deleting again (%s), attempt %d", d.why, d.failures + 1, extra={"pod": key})
                _delete(sched, key, d.uid)

    # ------------------------------------------------------------------ once per cycle

    def step(self, sched: Any) -> None:
        """Detect, mark the ledger, and (when leading) delete the pods lost on failed nodes."""
        cache = sched.cache
        leading = sched.is_leader()
        self.deleting = {k: d for k, d in self.deleting.items() if self.being_deleted(cache, k)}
        if leading:
            self._retry_deletions(sched)
        if not self.config.enabled or "nodes" not in sched.synced:
            return
        for ev in self.detector.observe(cache.nodes, self.clock()):
            if isinstance(ev, NodeFailed):
                log.warning("node failed: %s", ev.reason, extra={"node": ev.node})
                if leading:
                    sched.reporter.event(_node_ref(cache, ev.node), "Warning", "NodeFailed", "Rescheduling",
                                         f"toposched counts node {ev.node} as failed ({ev.reason}); its GPUs leave "
                                         "the pool and its pods are replaced")
            else:
                log.info("node recovered", extra={"node": ev.node})
                if leading:
                    sched.reporter.event(_node_ref(cache, ev.node), "Normal", "NodeRecovered", "Rescheduling",
                                         f"node {ev.node} is healthy again and returns to the pool; "
                                         "nothing is moved back")
                sched.queue.cluster_changed()
        self._mark(cache)
        if leading and self.failed:
            self._lost(sched)

    def _mark(self, cache: Any) -> None:
        """Failed nodes out of the ledger's free pool (again after every topology rebuild)."""
        ledger, arrays = cache.ledger, cache.arrays
        if ledger is None or arrays is None:
            return
        want = {arrays.node_index[n] for n in self.failed if n in arrays.node_index}
        marked = {int(i) for i, f in enumerate(ledger.live.failed) if f}
        for i in want - marked:
            ledger.set_failed(i, True)
        for i in marked - want:
            ledger.set_failed(i, False)

    def _lost(self, sched: Any) -> None:
        cache = sched.cache
        refs = [BoundRef(rec.key, rec.node, rec.gang, rec.owner) for rec in cache.bound.values()
                if rec.node in self.failed and not self.being_deleted(cache, rec.key)]
        lost = lost_pods(self.failed, refs)
        for gang, keys in lost.by_gang.items():
            rep = self.repairing.setdefault(gang, _Repair(gang, set()))
            for key in keys:
                rec = cache.bound[key]
                a = cache.ledger.get(key) if cache.ledger is not None else None
                gpus = a.gpus if a is not None else (rec.assigned or ())
                rep.nodes.add(rec.node)
                rep.lost.append(LostMember(key, rec.node, tuple(gpus), member_shape(rec.gpus, rec.gpu_milli, rec.cpu_milli,
                                                                          rec.memory_mib, rec.extended)))
        for key in lost.keys:
            rec = cache.bound[key]
            why = self.failed[rec.node].reason
            note = f"node {rec.node} failed ({why})"
            if self.config.delete_lost_pods:
                note += "; deleted by toposched so that its controller recreates it"
                if rec.gang is not None:
                    note += f"; gang {rec.gang} is repaired next to its surviving members"
            sched.reporter.event(sched._ref(key), "Warning", "NodeFailed", "Deleting", note, dedup=False)
            if self.config.delete_lost_pods:
                self.delete(sched, key, f"lost on failed node {rec.node}")
            else:
                self.deleting[key] = _Deletion(rec.uid, f"lost on failed node {rec.node}")

    # ------------------------------------------------------------------ before a decision

    def take_repairs(self, sched: Any, units: list[Any], stats: Any) -> list[Any]:
        """Decide the gang units some of whose members are bound; return the other units.

        A gang that lost members on failed nodes is repaired next to its survivors. Any other
        gang with bound members (a leader stopped in the middle of its bindings, or an elastic
        gang's later pods) is completed next to them: placed on their own, the pending members
        could leave the required domain or the slices the bound ones are in.
        """
        rest = []
        for unit in units:
            gang = unit.key.removeprefix("gang:") if unit.is_gang else None
            if gang is None:
                rest.append(unit)
                continue
            rep = self.repairing.get(gang) if self.config.enabled else None
            survivors = self._survivors(sched.cache, gang)
            if not survivors:
                self.repairing.pop(gang, None)  # nothing survived: an ordinary gang placement
                rest.append(unit)
                continue
            try:
                if rep is not None:
                    self._repair(sched, unit, rep, stats)
                else:
                    self._complete(sched, unit, gang, stats)
            except Exception as exc:  # noqa: BLE001 - a repair bug parks this gang, not the loop
                log.exception("gang repair failed", extra={"gang": gang})
                sched._scheduler_error(unit, f"internal error while repairing the gang: {type(exc).__name__}: {exc}")
        return rest

    def _survivors(self, cache: Any, gang: str) -> list[Any]:
        """Ledger allocations of the gang's members that are not on failed nodes."""
        if cache.ledger is None or cache.arrays is None:
            return []
        names = cache.arrays.node_names
        return sorted((a for a in cache.ledger.of_gang(gang)
                       if names[a.node] not in self.failed and not self.being_deleted(cache, a.key)
                       and not _terminating(cache, a.key)),
                      key=lambda a: a.key)

    def _unplaced(self, cache: Any, gang: str) -> list[str]:
        """The gang's bound members that the ledger does not hold (a node toposched does not know):
        running members of the gang all the same, though the solve cannot place anything next to them."""
        ledger = cache.ledger
        return [k for k in cache.gang_members(gang)
                if k in cache.bound and cache.bound[k].node not in self.failed
                and (ledger is None or k not in ledger) and not self.being_deleted(cache, k)]

    def _complete(self, sched: Any, unit: Any, gang: str, stats: Any) -> None:
        """The pending members of a gang some of whose members are bound, placed next to those
        (their required domain, their slices), or: the gang restarts when it is short of its
        minimum, and waits when its bound members already make its minimum."""
        built = sched._build(unit)
        if built is None:
            return
        req, members = built
        cache = sched.cache
        survivors = self._survivors(cache, gang)
        _, policy = sched._gang_policy([cache.pending[k] for k in members.values()])
        snap = sched._snapshot({unit.key}, req.priority)
        res = complete_gang(sched.engine, snap, req, survivors, (policy.slice_size, policy.slice_level))
        if res.placed:
            self.completed += 1
            log.info("gang completed next to its bound members: %s", res.report.note, extra={"gang": gang})
            sched._apply_outcome(unit, req, members, res, stats)
            return
        why = res.reason.replace(f"repair gang {gang}: ", "", 1)
        running = [a.key for a in survivors] + self._unplaced(cache, gang)
        if len(running) >= policy.min_members:
            # running already: the later pods wait for room next to it, and may preempt for it
            out = RequestOutcome(req.name, "gang", [], res.report,
                                 f"gang {gang}: {len(running)} members are bound; the rest do not fit next to them "
                                 f"({why})")
            sched._apply_outcome(unit, req, members, out, stats, preempt=_preempt_rule(sched, req, survivors, policy))
            return
        self.restarted += 1
        self._restart(sched, unit, gang, running, members,
                      f"gang {gang} has {len(running)} bound members, short of its minimum "
                      f"{policy.min_members}, and the rest do not fit next to them ({why})",
                      "the whole gang is placed anew")

    def _repair(self, sched: Any, unit: Any, rep: _Repair, stats: Any) -> None:
        built = sched._build(unit)
        if built is None:
            return  # not ready (members missing) or not readable: _build parked it
        req, members = built
        cache = sched.cache
        survivors = self._survivors(cache, rep.gang)
        _, policy = sched._gang_policy([cache.pending[k] for k in members.values()])  # _build read it already
        full, kept, old = with_survivors(req, survivors, rep.lost, cache.arrays, (policy.slice_size, policy.slice_level))
        groups = slice_groups(full, kept, [(p.pod, p.node_index) for p in old], cache.arrays)
        snap = sched._snapshot({unit.key}, req.priority)  # nominated preemptors' rooms stay theirs
        pending = [m for m, _ in req.member_names()]
        if self.config.repair_gangs:
            plan = plan_repair(sched.engine, snap, full, kept, pending, Context(), lost=old, slice_groups=groups)
        else:
            plan = None
        if plan is not None and plan.action == "repair":
            self._repaired(sched, unit, req, members, rep, plan.outcome, stats)
            return
        why = plan.why if plan is not None else "repair is disabled (node_failures.repair_gangs: false)"
        self.repairing.pop(rep.gang, None)
        running = [a.key for a in survivors] + self._unplaced(cache, rep.gang)
        if plan is not None and plan.action == "requeue" and req.min_members is not None:
            # an elastic gang: as many of its pending members as fit next to the survivors, when
            # that makes its minimum (deleting the survivors to wait in the queue would not)
            some = complete_gang(sched.engine, snap, req, survivors, (policy.slice_size, policy.slice_level))
            if some.placed and len(running) + len(some.placements) >= policy.min_members:
                self._repaired(sched, unit, req, members, rep, some, stats)
                return
        if plan is not None and plan.action == "requeue" and len(running) >= policy.min_members:
            # an elastic gang still at its minimum runs on: deleting its survivors to wait in the
            # queue would stop it for nothing; its pending members wait as an elastic gang's rest
            out = RequestOutcome(req.name, "gang", [], plan.outcome.report,
                                 f"gang {rep.gang}: its {len(running)} surviving members make its minimum "
                                 f"{policy.min_members}; the rest do not fit ({why})")
            log.info("gang runs on with its survivors: %s", why, extra={"gang": rep.gang})
            sched._apply_outcome(unit, req, members, out, stats, preempt=_preempt_rule(sched, req, survivors, policy))
            return
        self.restarted += 1
        then = "the whole gang is placed anew" if plan is None or plan.action == "replace" else \
            "the whole gang waits in the queue"
        log.warning("gang cannot be repaired: %s", why, extra={"gang": rep.gang})
        self._restart(sched, unit, rep.gang, running, members,
                      f"gang {rep.gang} lost members on failed node(s) {', '.join(sorted(rep.nodes))} and cannot be "
                      f"repaired next to its survivors ({why})", then,
                      f"gang {rep.gang} cannot be repaired ({why})")

    def _repaired(self, sched: Any, unit: Any, req: GangRequest, members: Mapping[str, str], rep: _Repair,
                  res: RequestOutcome, stats: Any) -> None:
        """Bind the replacements ``res`` places next to the survivors, each with a GangRepaired event."""
        self.repairing.pop(rep.gang, None)
        self.repaired += 1
        out = RequestOutcome(req.name, "gang", res.placements, res.report)
        note = res.report.note
        for p in out.placements:
            sched.reporter.event(sched._ref(members[p.pod]), "Normal", "GangRepaired", "Scheduling",
                                 f"replaces a member of gang {rep.gang} lost on failed node(s) "
                                 f"{', '.join(sorted(rep.nodes))}: {note}; placed on {p.node}", dedup=False)
        log.info("gang repaired: %s", note, extra={"gang": rep.gang})
        sched._apply_outcome(unit, req, members, out, stats)

    def _restart(self, sched: Any, unit: Any, gang: str, running: list[str], members: Mapping[str, str],
                 cause: str, then: str, pending_cause: str | None = None) -> None:
        """Delete the gang's bound members ``running`` (with events saying why) and requeue its pending ones."""
        note = f"Deleted by toposched: {cause}; {then}"
        for key in running:
            sched.reporter.event(sched._ref(key), "Warning", "GangRestart", "Deleting", note, dedup=False)
            self.delete(sched, key, f"gang {gang} restarts")
        for key in members.values():
            sched.reporter.event(sched._ref(key), "Warning", "GangRestart", "Scheduling",
                                 f"{pending_cause or cause}; its surviving members are deleted and {then}")
        unit.added_at = self.clock()  # a new run: its wait for re-created members starts now
        sched.queue.requeue(unit)
        sched.queue.backoff(unit.key)


def _preempt_rule(sched: Any, req: GangRequest, survivors: list[Any], policy: Any) -> Any:
    """How the pending members of a running gang are placed when they preempt: as any unit
    (``True``) when nothing ties them to its running members (no required level, no slices);
    otherwise next to the running members, by the same solve that completes the gang, so that
    a room preempted elsewhere is never what they wait for."""
    if policy.required_level is None and policy.slice_size is None:
        return True
    slices = (policy.slice_size, policy.slice_level)
    return lambda snap: complete_gang(sched.engine, snap, req, survivors, slices)


def _terminating(cache: Any, key: str) -> bool:
    """A bound pod on its way out (deletionTimestamp set): not a member of the gang's current run."""
    rec = cache.bound.get(key)
    return rec is not None and rec.terminating


def _node_ref(cache: Any, name: str) -> Any:
    from scheduler.ports import ObjectRef

    uid = ((cache.nodes.get(name) or {}).get("metadata") or {}).get("uid") or ""
    return ObjectRef("Node", "", name, uid)


def _delete(sched: Any, key: str, uid: str) -> None:
    """Delete pod ``key`` of ``uid`` (the precondition: never a pod re-created under the name;
    "" when unknown) through the API on the loop's worker pool; failures come back as
    ``deleted`` messages."""
    ref = _pod_ref(sched, key, uid)

    def run() -> Any:
        err = sched._delete(ref)
        return None if err is None or err.is_not_found else err  # already gone is what we wanted

    if sched._pool is None:
        sched._handle(("deleted", key, run()))
    else:
        sched._pool.submit(lambda: sched.inbox.put(("deleted", key, run())))


def _pod_ref(sched: Any, key: str, uid: str) -> Any:
    """The loop's reference to pod ``key``, with ``uid`` when known (not a pod re-created since)."""
    ref = sched._ref(key)
    return replace(ref, uid=uid) if uid else ref


def _uid_of(cache: Any, key: str) -> str | None:
    """The uid of pod ``key`` as bound or being bound ("" when unknown); None when neither."""
    rec = cache.bound.get(key)
    if rec is not None:
        return rec.uid or ""
    if key in cache.assumed:
        return cache.assumed_uid(key) or ""
    return None
