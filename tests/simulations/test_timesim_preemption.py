"""Preemption in the time-based simulator (``SimConfig.preemption``, ``--preemption``).

Tiny clusters of 4-GPU NVSwitch nodes, one scalable unit::

    n1[....] n2[....]      (``TWO``)

Scenario ``HIGH``: ``lo`` (2 x 4 GPUs, priority 0, 5,000 s of work) fills both nodes at 0 s;
``hi`` (1 x 4 GPUs, priority 5, 500 s) arrives at 1,000 s. Checkpoints every 300 s, 60 s to restart.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from simulations.timesim import POLICIES as ALL
from simulations.timesim import SimConfig, TimeSim
from simulations.timesim_report import preemption_table, write_jobs_csv
from simulations.workload import (
    FailureSpec,
    InferenceMix,
    NodeFailureSpec,
    RecoverySpec,
    ServiceSpec,
    TrainingMix,
    WorkloadFile,
    generate,
)
from tests.simulations.test_timesim import QUIET, SIX, TWO, arrays_of, job, jobs_by_name, sim, spec_of

POLICIES = ["default", "volcano", "topo-greedy", "toposched"]
RECOVERY = RecoverySpec(checkpoint_interval_s=300, restart_overhead_s=60, rendezvous_timeout_s=600)
HIGH = WorkloadFile(jobs=(job("lo", 2, 4, at=0, dur=5000, launcher=False),
                          job("hi", 1, 4, at=1000, dur=500, priority=5)),
                    failures=QUIET, recovery=RECOVERY)


@pytest.mark.parametrize("policy", POLICIES)
def test_high_priority_job_preempts_and_the_victim_restarts_from_its_checkpoint(policy):
    """hi starts at 1,000 s; lo loses 100 s x 8 GPUs (checkpoint at 900 s), waits for hi (done at
    1,500 s), pays 60 s to restart and runs its 4,100 s left: done at 5,660 s."""
    s = sim(TWO, HIGH, policy, hours=2.0, preemption=True)
    j = jobs_by_name(s)
    assert j["hi"]["startup_wait_s"] == pytest.approx(0.0) and j["hi"]["jct_s"] == pytest.approx(500.0)
    assert j["lo"]["interruptions"] == 1 and j["lo"]["preemptions"] == 1 and j["hi"]["preemptions"] == 0
    assert j["lo"]["jct_s"] == pytest.approx(1500 + 60 + 4100)
    assert j["lo"]["restarts"] == 0 and j["lo"]["repair_times_s"] == []  # not a failure
    p = s.result.summary()["preemption"]
    assert p["preemptions"] == 1 and p["job_evictions"] == 1 and p["jobs_preempted"] == 1
    assert p["replicas_preempted"] == 0
    assert p["pods_preempted"] == (1 if policy == "default" else 2)  # kube-scheduler evicts one pod
    assert p["lost_gpu_hours"] == pytest.approx(100 * 8 / 3600)
    assert p["startup_wait_by_priority_s"]["5"]["max"] == pytest.approx(0.0)
    assert s.result.counters["gang_restarts"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_without_preemption_the_high_priority_job_waits(policy):
    s = sim(TWO, HIGH, policy, hours=2.0)
    j = jobs_by_name(s)
    assert j["hi"]["startup_wait_s"] == pytest.approx(4000.0)
    assert j["lo"]["interruptions"] == 0 and j["lo"]["jct_s"] == pytest.approx(5000.0)
    assert "preemption" not in s.result.summary()


def test_equal_priority_never_preempts():
    wl = WorkloadFile(jobs=(job("lo", 2, 4, at=0, dur=5000, launcher=False), job("hi", 1, 4, at=1000, dur=500)),
                      failures=QUIET, recovery=RECOVERY)
    s = sim(TWO, wl, "toposched", hours=2.0, preemption=True)
    assert jobs_by_name(s)["hi"]["startup_wait_s"] == pytest.approx(4000.0)
    assert s.result.summary()["preemption"]["preemptions"] == 0


def test_the_lowest_priority_tier_is_evicted_and_the_rest_left_alone():
    """p0 (priority 0) and p1 (priority 1) hold n1 and n2; hi (priority 5, one node) evicts p0 only,
    which starts again when hi leaves at 600 s (60 s restart overhead)."""
    wl = WorkloadFile(jobs=(job("p0", 1, 4, at=0, dur=9000), job("p1", 1, 4, at=1, dur=9000, priority=1),
                            job("hi", 1, 4, at=100, dur=500, priority=5)),
                      failures=QUIET, recovery=RECOVERY)
    s = sim(TWO, wl, "toposched", hours=1.0, preemption=True)
    j = jobs_by_name(s)
    assert j["p0"]["preemptions"] == 1 and j["p1"]["preemptions"] == 0
    assert j["hi"]["startup_wait_s"] == pytest.approx(0.0)
    assert s.jobs["p0"].state.value == "running" and s.jobs["p0"].run_t0 == pytest.approx(660.0)


def test_inference_scale_up_preempts_training():
    """``chat`` (priority 10, one 4-GPU replica) wants 0 replicas at 0 s and 1 from 60 s on; two
    1-node training jobs hold the cluster: one of them is evicted, after 60 s of work (no checkpoint)."""
    svc = ServiceSpec(name="chat", gpus_per_replica=4, cpu_milli=1000, memory_mib=1024, min_replicas=0,
                      max_replicas=1, peak_hour=6.01, noise=0.0)
    wl = WorkloadFile(jobs=(job("a", 1, 4, dur=9000), job("b", 1, 4, dur=9000)),
                      inference=InferenceMix(services=(svc,), sync_period_s=60), failures=QUIET, recovery=RECOVERY)
    for policy in POLICIES:
        s = sim(TWO, wl, policy, hours=1.0, preemption=True)
        p = s.result.summary()["preemption"]
        assert p["preemptions"] == 1 and p["jobs_preempted"] == 1 and p["replicas_preempted"] == 0, policy
        assert p["lost_gpu_hours"] == pytest.approx(60 * 4 / 3600)
        assert p["replica_wait_s"]["n"] == 1 and p["replica_wait_s"]["max"] == pytest.approx(0.0)
        assert sum(r.placed is not None for r in s.replicas.values()) == 1
        assert sorted(js.state.value for js in s.jobs.values()) == ["queued", "running"]
        # without preemption the replica waits the whole hour
        off = sim(TWO, wl, policy, hours=1.0)
        assert sum(r.placed is not None for r in off.replicas.values()) == 0


def test_a_higher_priority_job_evicts_a_replica():
    svc = ServiceSpec(name="chat", gpus_per_replica=4, cpu_milli=1000, memory_mib=1024, min_replicas=2,
                      max_replicas=2, noise=0.0, priority=1)
    wl = WorkloadFile(jobs=(job("hi", 1, 4, at=100, dur=500, priority=5),),
                      inference=InferenceMix(services=(svc,), sync_period_s=60), failures=QUIET, recovery=RECOVERY)
    s = sim(TWO, wl, "volcano", hours=1.0, preemption=True)
    p = s.result.summary()["preemption"]
    assert p["replicas_preempted"] == 1 and p["job_evictions"] == 0 and p["lost_gpu_hours"] == 0.0
    assert jobs_by_name(s)["hi"]["startup_wait_s"] == pytest.approx(0.0)
    assert sum(r.placed is not None for r in s.replicas.values()) == 2  # back once hi left at 600 s
    assert p["replica_wait_s"]["max"] == pytest.approx(500.0)


def test_pods_one_by_one_victim_survivors_wait_for_their_recreated_pod():
    """default: hi evicts one pod of lo; lo's other pod keeps its node and waits; hi runs 5,000 s, so
    lo's rendezvous times out 600 s after the eviction, its pods are recreated, one binds alone on the
    free node and times out again every 600 s (1,600, 2,200, 2,800, 3,400 s)."""
    wl = WorkloadFile(jobs=(job("lo", 2, 4, at=0, dur=9000, launcher=False),
                            job("hi", 1, 4, at=1000, dur=5000, priority=5)),
                      failures=QUIET, recovery=RECOVERY)
    s = sim(TWO, wl, "default", hours=1.0, preemption=True)
    lo = s.jobs["lo"]
    assert lo.timeouts == 4 and lo.preempted == 1 and lo.interruptions == 1
    assert lo.state.value == "starting" and len(lo.placed) == 1  # placed again alone after the timeout


@pytest.mark.parametrize("grace", [0.0, 90.0])
def test_preemption_is_deterministic_and_keeps_the_ledger_consistent(grace):
    arrays = arrays_of(SIX)
    svc = ServiceSpec(name="chat", count=2, gpus_per_replica=2, cpu_milli=1000, memory_mib=1024, min_replicas=1,
                      max_replicas=4, peak_hour=1.0, noise=0.3, spread_level="su")
    wl = WorkloadFile(training=TrainingMix(calibration="seren", target_load=1.0, max_gpus=16, gpus_per_node=4,
                                           max_duration_s=1800, preferred_level="su"),
                      inference=InferenceMix(services=(svc,), sync_period_s=60),
                      jobs=tuple(job(f"urgent{k}", 2, 4, at=1800 * (k + 1), dur=900, priority=5) for k in range(3)),
                      failures=FailureSpec(node_mtbf_hours=3, repair_mean_hours=0.2))
    cfg = SimConfig(hours=2, seed=7, warmup_hours=0.0, check_every=1, preemption=True, preemption_grace_s=grace)
    gen = generate(wl, arrays, cfg.hours, cfg.seed)
    for name in POLICIES:
        a, b = (TimeSim(arrays, gen, wl, ALL[name], cfg).run().summary() for _ in range(2))
        a.pop("wall_s"), b.pop("wall_s")
        assert a == b
        p = a["preemption"]
        assert p["preemptions"] > 0 and p["lost_gpu_hours"] > 0, name
        # the priority-10 replicas are no victims of the priority-5 jobs, so not every urgent job starts,
        # but more than without preemption
        off = TimeSim(arrays, gen, wl, ALL[name], replace(cfg, preemption=False)).run()
        started_off = sum(j["startup_wait_s"] is not None for j in off.jobs if j["priority"] == 5)
        assert p["startup_wait_by_priority_s"]["5"]["n"] > started_off, name


def test_report_prints_preemption_and_csv_columns(tmp_path):
    s = sim(TWO, HIGH, "toposched", hours=2.0, preemption=True)
    text = preemption_table([s.result.summary()])
    assert "toposched" in text and "lost GPU-h" in text and "0.2" in text
    assert preemption_table([sim(TWO, HIGH, "toposched", hours=2.0).result.summary()]) == ""
    write_jobs_csv(s.result, tmp_path / "jobs.csv")
    head, lo, _ = (tmp_path / "jobs.csv").read_text().splitlines()
    assert head.endswith("priority,preemptions") and lo.startswith("lo,") and lo.endswith(",0,1")


def test_cli_preemption_flag(tmp_path, capsys):
    from scheduler.cli import main

    (tmp_path / "cluster.json").write_text(json.dumps(spec_of(TWO)))
    (tmp_path / "wl.yaml").write_text(
        "name: tiny\nfailures: {detection_s: 30, recreate_s: 2}\n"
        "recovery: {checkpoint_interval_s: 300, restart_overhead_s: 60}\n"
        "jobs: [{name: lo, workers: 2, gpus_per_worker: 4, launcher: false, duration_s: 5000, "
        "cpu_milli_per_gpu: 1000, memory_mib_per_gpu: 1024},\n"
        "       {name: hi, arrival_s: 1000, workers: 1, gpus_per_worker: 4, duration_s: 500, priority: 5, "
        "cpu_milli_per_gpu: 1000, memory_mib_per_gpu: 1024}]\n")
    args = ["simulate", "workload", "--cluster", str(tmp_path / "cluster.json"), "--workload",
            str(tmp_path / "wl.yaml"), "--hours", "2", "--policy", "toposched", "--quiet", "--no-plots"]
    assert main([*args, "--out", str(tmp_path / "off")]) == 0
    assert "preemption:" not in capsys.readouterr().out
    assert main([*args, "--preemption", "--out", str(tmp_path / "on")]) == 0
    assert "preemption:" in capsys.readouterr().out
    off = json.loads((tmp_path / "off" / "summary.json").read_text())
    on = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert "preemption" not in off and on["preemption"] is True and on["command"].endswith("--preemption")
    assert on["policies"]["toposched"]["preemption"]["preemptions"] == 1
    assert off["policies"]["toposched"]["startup_wait_s"]["max"] == pytest.approx(4000.0)
    assert main([*args, "--preemption", "--preemption-grace", "120", "--out", str(tmp_path / "grace")]) == 0
    grace = json.loads((tmp_path / "grace" / "summary.json").read_text())
    assert grace["preemption_grace_s"] == 120 and grace["command"].endswith("--preemption --preemption-grace 120")
    assert grace["policies"]["toposched"]["preemption"]["startup_wait_by_priority_s"]["5"]["max"] == \
        pytest.approx(120.0)
    capsys.readouterr()
    assert main([*args, "--preemption-grace", "30", "--out", str(tmp_path / "bad")]) == 2
    assert "--preemption-grace" in capsys.readouterr().err


def _services(*specs: ServiceSpec, jobs=()) -> WorkloadFile:
    return WorkloadFile(jobs=tuple(jobs), inference=InferenceMix(services=specs, sync_period_s=60),
                        failures=QUIET, recovery=RECOVERY)


def _chat(name: str, priority: int, replicas: int = 1, **pdb) -> ServiceSpec:
    return ServiceSpec(name=name, gpus_per_replica=4, cpu_milli=1000, memory_mib=1024, min_replicas=replicas,
                       max_replicas=replicas, noise=0.0, priority=priority, **pdb)


def test_a_services_disruption_budget_steers_the_eviction_to_a_replica_it_does_not_protect():
    """a (priority 1) and b (priority 2, preemptionPolicy Never) hold one node each; hi (priority 5)
    needs a node. Without a budget the lowest tier goes (a); with a budget that allows a no
    disruption, b goes instead (kube-scheduler: a later tier whose plan breaks no budget wins)."""
    hi = job("hi", 1, 4, at=100, dur=500, priority=5)
    b = _chat("b", 2, preemption_policy="Never")
    free = sim(TWO, _services(_chat("a", 1), b, jobs=[hi]), "toposched", hours=0.1, preemption=True)
    guarded = sim(TWO, _services(_chat("a", 1, max_unavailable=0), b, jobs=[hi]), "toposched", hours=0.1,
                  preemption=True)
    for s, lost in ((free, "serve/a"), (guarded, "serve/b")):
        (ev,) = s.preemption["events"]
        assert ev["replicas"] == 1 and ev["pdb_violations"] == 0 and ev["t"] == pytest.approx(100.0)
        assert {r.service.name for r in s.replicas.values() if r.placed is None} == {lost}
        assert jobs_by_name(s)["hi"]["startup_wait_s"] == pytest.approx(0.0)
    assert guarded.result.summary()["preemption"]["pdb_violations"] == 0
    assert "PDB violations" in preemption_table([guarded.result.summary()])


def test_a_budget_that_every_plan_breaks_is_broken_and_counted():
    """Both nodes hold replicas of a, whose budget allows no disruption (min_available 2): hi still
    preempts one (a budget is not a hard limit for preemption), and the violation is counted."""
    hi = job("hi", 1, 4, at=100, dur=500, priority=5)
    s = sim(TWO, _services(_chat("a", 1, replicas=2, min_available=2), jobs=[hi]), "volcano", hours=0.1,
            preemption=True)
    p = s.result.summary()["preemption"]
    assert p["replicas_preempted"] == 1 and p["pdb_violations"] == 1


def test_a_unit_with_preemption_policy_never_waits_instead_of_preempting():
    wl = WorkloadFile(jobs=(job("lo", 2, 4, at=0, dur=5000, launcher=False),
                            job("hi", 1, 4, at=1000, dur=500, priority=5, preemption_policy="Never")),
                      failures=QUIET, recovery=RECOVERY)
    for policy in ("default", "toposched"):
        s = sim(TWO, wl, policy, hours=2.0, preemption=True)
        assert jobs_by_name(s)["hi"]["startup_wait_s"] == pytest.approx(4000.0), policy
        assert s.result.summary()["preemption"]["preemptions"] == 0
    chat = ServiceSpec(name="chat", gpus_per_replica=4, cpu_milli=1000, memory_mib=1024, min_replicas=0,
                       max_replicas=1, peak_hour=6.01, noise=0.0, preemption_policy="Never")  # 1 replica from 60 s
    s = sim(TWO, _services(chat, jobs=[job("lo", 2, 4, dur=9000, launcher=False)]), "toposched", hours=0.1,
            preemption=True)
    assert len(s.replicas) == 1
    assert s.result.summary()["preemption"]["preemptions"] == 0
    assert all(r.placed is None for r in s.replicas.values())


def test_a_service_takes_one_kind_of_disruption_budget():
    with pytest.raises(ValueError, match="give max_unavailable or min_available, not both"):
        _chat("a", 1, max_unavailable=1, min_available=1)


@pytest.mark.parametrize("policy", POLICIES)
def test_victims_hold_their_gpus_for_the_grace_period_and_the_preemptor_starts_when_they_are_gone(policy):
    """HIGH with a 120 s grace period: lo is evicted at 1,000 s (its work back to the 900 s
    checkpoint) but its pods hold both nodes until 1,120 s; hi starts then (waits 120 s) and
    leaves at 1,620 s; lo restarts then: 60 s overhead and its 4,100 s left, done at 5,780 s."""
    s = sim(TWO, HIGH, policy, hours=2.0, preemption=True, preemption_grace_s=120)
    j = jobs_by_name(s)
    assert j["hi"]["startup_wait_s"] == pytest.approx(120.0) and j["hi"]["jct_s"] == pytest.approx(620.0)
    assert j["lo"]["preemptions"] == 1 and j["lo"]["jct_s"] == pytest.approx(1620 + 60 + 4100)
    alloc = {t: gpus for t, gpus, _ in s.timeline}
    assert alloc[1000.0] == 8  # the evicted pods still hold their GPUs while they terminate
    if policy != "default":  # (pods one by one: lo's other pod takes the second node at 1,120 s)
        assert alloc[1120.0] == 4
    p = s.result.summary()["preemption"]
    assert p["preemptions"] == 1 and p["plans"] == 1  # hi planned once and waited on its nomination
    assert not s.nominated and not [a for a in s.ledger.allocations() if "~terminating" in a.key]


def test_a_lower_priority_unit_does_not_take_the_room_a_preemptor_waits_for():
    """mid (priority 3, one node) arrives during hi's grace period: the terminating pods hold both
    nodes, and when they are gone hi (priority 5) is placed first; mid takes the other node."""
    wl = WorkloadFile(jobs=(*HIGH.jobs, job("mid", 1, 4, at=1050, dur=500, priority=3)), failures=QUIET,
                      recovery=RECOVERY)
    s = sim(TWO, wl, "toposched", hours=2.0, preemption=True, preemption_grace_s=120)
    j = jobs_by_name(s)
    assert j["hi"]["startup_wait_s"] == pytest.approx(120.0)
    assert j["mid"]["startup_wait_s"] == pytest.approx(70.0)  # 1,050 -> 1,120 s
    assert j["mid"]["preemptions"] == 0 and s.result.summary()["preemption"]["preemptions"] == 1


def test_the_free_part_of_a_nominated_room_is_held_for_the_preemptor_during_the_grace_period():
    """lo (2 GPUs) and full (4 GPUs) arrive first, one node each. hi (4 GPUs, priority 5) evicts lo
    and needs the 2 free GPUs beside it too; small (2 GPUs, priority 0) arrives during the grace
    period and would fit in those: they are held for hi, which starts when lo's pods are gone."""
    wl = WorkloadFile(jobs=(job("lo", 1, 2, at=0, dur=5000), job("full", 1, 4, at=1, dur=5000),
                            job("hi", 1, 4, at=1000, dur=500, priority=5),
                            job("small", 1, 2, at=1050, dur=100)),
                      failures=QUIET, recovery=RECOVERY)
    for policy in ("volcano", "toposched"):
        s = sim(TWO, wl, policy, hours=2.0, preemption=True, preemption_grace_s=120)
        j = jobs_by_name(s)
        assert j["hi"]["startup_wait_s"] == pytest.approx(120.0), policy
        assert j["small"]["startup_wait_s"] == pytest.approx(1620 - 1050), policy  # after hi leaves
        assert s.result.summary()["preemption"]["preemptions"] == 1, policy


@pytest.mark.parametrize("policy", POLICIES)
def test_a_victim_placed_again_during_the_grace_period_may_be_evicted_again(policy):
    """t1 (2 GPUs, priority 1, done at 500 s) and lo (2 GPUs, priority 0) share n1, c (2 GPUs,
    priority 1) has n2. hi1 (4 GPUs, priority 5) evicts lo at 1,000 s; lo is placed again at
    once beside c on n2, where hi2 (4 GPUs, priority 5) evicts it with c at 1,100 s, while its
    first pod is still terminating (300 s grace): two terminating pods of lo at once."""
    wl = WorkloadFile(jobs=(job("t1", 1, 2, at=0, dur=500, priority=1), job("lo", 1, 2, at=0, dur=9000),
                            job("c", 1, 2, at=1, dur=9000, priority=1),
                            job("hi1", 1, 4, at=1000, dur=5000, priority=5),
                            job("hi2", 1, 4, at=1100, dur=5000, priority=5)),
                      failures=QUIET, recovery=RECOVERY)
    s = sim(TWO, wl, policy, hours=1.0, preemption=True, preemption_grace_s=300)
    j = jobs_by_name(s)
    assert j["lo"]["preemptions"] == 2 and j["c"]["preemptions"] == 1
    assert j["hi1"]["startup_wait_s"] == pytest.approx(300.0) and j["hi2"]["startup_wait_s"] == pytest.approx(300.0)
    assert [e["jobs"] for e in s.preemption["events"]] == [["lo"], ["c", "lo"]]
    alloc = {t: gpus for t, gpus, _ in s.timeline}
    assert alloc[1100.0] == 6  # lo's two terminating pods and c's
    assert not s.nominated and not [a for a in s.ledger.allocations() if "~" in a.key]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_nomination_whose_node_fails_during_the_grace_period_ends_and_the_preemptor_plans_again(policy):
    """Three nodes held by a, b and c (priorities 0, 1, 2); hi (priority 5) evicts a at 1,000 s
    and is nominated on a's node, which fails at 1,010 s (seen at 1,040 s). As live, the
    nomination ends there: hi evicts b at once and starts when b's pod is gone (1,340 s),
    not after waiting out a's grace period first (1,300 s) and then b's (1,600 s)."""
    three = {"n1": "su0", "n2": "su0", "n3": "su0"}
    jobs = (job("a", 1, 4, dur=9000), job("b", 1, 4, dur=9000, priority=1), job("c", 1, 4, dur=9000, priority=2),
            job("hi", 1, 4, at=1000, dur=500, priority=5))
    before = sim(three, WorkloadFile(jobs=jobs, failures=QUIET, recovery=RECOVERY), policy, hours=0.1)
    (a_node,) = {p.node for p in before.jobs["a"].placed.values()}
    wl = WorkloadFile(jobs=jobs, node_failures=(NodeFailureSpec(node=a_node, at_s=1010, repair_s=3000),),
                      failures=QUIET, recovery=RECOVERY)
    s = sim(three, wl, policy, hours=1.0, preemption=True, preemption_grace_s=300)
    assert [(e["t"], e["jobs"]) for e in s.preemption["events"]] == [(1000.0, ["a"]), (1040.0, ["b"])]
    assert jobs_by_name(s)["hi"]["startup_wait_s"] == pytest.approx(340.0)
    assert not s.nominated and not [a for a in s.ledger.allocations() if "~" in a.key]
    # a's terminating pod is lost with its node at 1,040 s, like the pods running there: from then
    # on the allocation counts b's terminating pod and c (8 GPUs), not a's too
    alloc = {t: gpus for t, gpus, _ in s.timeline}
    assert alloc[1000.0] == 12 and alloc[1040.0] == 8
