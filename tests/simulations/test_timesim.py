"""The time-based simulator: generator calibration, communication model, policies, failures, report.

Scenarios run on tiny clusters of 4-GPU NVSwitch nodes (NIC i on rail i next to GPU i)::

        su su0                 su su1
    n1[....] n2[....] n3[....]   n4[....] n5[....] n6[....]      (``six``)
    n1[....] n2[....]                                            (``two``: one su)
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from models.topology import build_arrays
from simulations import comm_model
from simulations.timesim import POLICIES, SimConfig, TimeSim, resolve_policies
from simulations.workload import (
    CALIBRATIONS,
    FailureSpec,
    InferenceMix,
    JobSpec,
    NodeFailureSpec,
    RecoverySpec,
    ServiceSpec,
    TrainingMix,
    WorkloadFile,
    arrival_rate_per_s,
    clamped_mean,
    generate,
    lognormal_params,
    size_law,
)
from tests.builders import build, make_cluster, make_node, make_topology
from tests.paths import shared_or_skip

NICS = [{"name": f"mlx5_{i}", "bandwidth_gbps": 400, "rail": i, "gpus": [i]} for i in range(4)]


def spec_of(layout: dict[str, str]) -> dict:
    """A cluster spec of 4-GPU H100 nodes (64 cores, 512 GiB), node name -> su."""
    nodes = []
    for name, su in layout.items():
        n = make_node(name, topology=make_topology(4, "H100", nvswitch=18, nics=NICS), su=su)
        n.update(cpu_milli=64000, memory_mib=524288)
        nodes.append(n)
    return make_cluster(*nodes, levels=["su"])


def arrays_of(layout: dict[str, str]):
    return build_arrays(build(spec_of(layout)))


SIX = {"n1": "su0", "n2": "su0", "n3": "su0", "n4": "su1", "n5": "su1", "n6": "su1"}
TWO = {"n1": "su0", "n2": "su0"}
QUIET = FailureSpec(detection_s=30, recreate_s=2)


def job(name: str, workers: int = 1, gpus: int = 4, at: float = 0.0, dur: float = 1000.0, **kw) -> JobSpec:
    kw.setdefault("cpu_milli_per_gpu", 1000)
    kw.setdefault("memory_mib_per_gpu", 1024)
    return JobSpec(name=name, arrival_s=at, workers=workers, gpus_per_worker=gpus, duration_s=dur,
                   comm_share=kw.pop("comm_share", 0.0), **kw)


def sim(layout: dict[str, str], wl: WorkloadFile, policy: str, hours: float = 1.0, **cfg) -> TimeSim:
    arrays = arrays_of(layout)
    c = SimConfig(hours=hours, seed=cfg.pop("seed", 0), check_every=1, **cfg)
    s = TimeSim(arrays, generate(wl, arrays, c.hours, c.seed), wl, POLICIES[policy], c)
    s.result = s.run()
    return s


def jobs_by_name(s: TimeSim) -> dict[str, dict]:
    return {j["name"]: j for j in s.result.jobs}


def nodes_of(s: TimeSim, name: str) -> list[str]:
    return sorted(p.node for p in s.jobs[name].placed.values() if p.gpus)


# --------------------------------------------------------------------------- generator


def test_calibration_matches_the_acme_summary_table():
    path = shared_or_skip("data/acme-trace-summary/cluster_summary.csv")
    rows = {r["id"].lower(): r for r in csv.DictReader(path.open())}
    for name, cal in CALIBRATIONS.items():
        row = rows[name]
        assert cal.mean_gpus == pytest.approx(float(row["avg_gpu_num"]))
        assert cal.median_gpus == pytest.approx(float(row["med_gpu_num"]))
        assert cal.max_gpus == int(float(row["max_gpu"]))
        assert cal.mean_run_s == pytest.approx(float(row["avg_run_time_gpu"]))
        assert cal.median_run_s == pytest.approx(float(row["med_run_time_gpu"]))
        assert cal.mean_queue_s == pytest.approx(float(row["avg_que_time_gpu"]))
        assert cal.median_queue_s == pytest.approx(float(row["med_que_time_gpu"]))


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_size_law_matches_mean_and_median(name):
    cal = CALIBRATIONS[name]
    sizes, probs = size_law(cal.mean_gpus, 0.5, 512)
    assert probs.sum() == pytest.approx(1.0)
    assert float(probs @ sizes) == pytest.approx(cal.mean_gpus, rel=1e-6)
    assert probs[0] == pytest.approx(0.5)  # median 1 GPU
    assert list(sizes) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def test_size_law_below_two_gpus_shifts_the_single_share():
    sizes, probs = size_law(1.2, 0.5, 8)
    assert float(probs @ sizes) == pytest.approx(1.2)
    assert probs[0] == pytest.approx(0.8)


def test_lognormal_has_the_published_median_and_mean():
    mu, sigma = lognormal_params(124.0, 1259.689)
    assert math.exp(mu) == pytest.approx(124.0)
    assert math.exp(mu + sigma**2 / 2) == pytest.approx(1259.689)
    x = np.random.default_rng(0).lognormal(mu, sigma, 400_000)
    assert np.median(x) == pytest.approx(124.0, rel=0.02)
    assert np.minimum(x, 3600).mean() == pytest.approx(clamped_mean(mu, sigma, 3600), rel=0.02)


def test_arrival_rate_offers_the_target_load():
    arrays = arrays_of(SIX)
    mix = TrainingMix(calibration="seren", target_load=0.5, max_gpus=16, max_duration_s=3600)
    rate = arrival_rate_per_s(mix, arrays.total_gpus)
    gen = generate(WorkloadFile(training=mix), arrays, hours=400, seed=3)
    offered = sum(j.gpus * j.duration_s for j in gen.jobs) / (arrays.total_gpus * 400 * 3600)
    assert offered == pytest.approx(0.5, rel=0.15)
    assert len(gen.jobs) / (400 * 3600) == pytest.approx(rate, rel=0.05)


def test_generated_shapes_and_seeding():
    arrays = arrays_of(SIX)
    wl = WorkloadFile(training=TrainingMix(calibration="seren", target_load=0.8, max_gpus=16, gpus_per_node=4,
                                           preferred_level="su"),
                      failures=FailureSpec(node_mtbf_hours=5))
    a, b, c = (generate(wl, arrays, 6, s) for s in (1, 1, 2))
    assert [(j.name, j.arrival_s, j.gpus) for j in a.jobs] == [(j.name, j.arrival_s, j.gpus) for j in b.jobs]
    assert [j.arrival_s for j in a.jobs] != [j.arrival_s for j in c.jobs]
    for j in a.jobs:
        assert j.gpus in (1, 2, 4, 8, 16)
        if j.gpus > 4:
            assert j.gpus_per_worker == 4 and j.launcher and j.rail_aligned
        elif j.workers > 1:
            assert j.gpus_per_worker == 1 and j.launcher
        assert (j.preferred_level == "su") == (j.gpus > 1)
    assert a.failures and all(f.node in arrays.node_index for f in a.failures)


# --------------------------------------------------------------------------- communication model


def test_one_node_rides_nvlink_two_nodes_the_network():
    a = arrays_of(SIX)
    one = comm_model.comm_cost(a, {0: [0, 1, 2, 3]})
    two = comm_model.comm_cost(a, {0: [0, 1], 1: [0, 1]})
    assert one.bottleneck_gbps == 18 * 200 and one.span == "node" and one.excess_tiers == 0
    assert two.bottleneck_gbps == 400 and two.span == "su" and two.excess_tiers == 1
    assert two.crossings == {"node": 2, "su": 0}
    assert two.allreduce_s > one.allreduce_s


def test_cross_su_ring_counts_crossings_and_hops():
    a = arrays_of(SIX)
    cost = comm_model.comm_cost(a, {0: [0, 1, 2, 3], 3: [0, 1, 2, 3]})
    assert cost.span == "root" and cost.crossings == {"node": 2, "su": 2}
    assert cost.max_hops == 3 and cost.excess_tiers == 1  # 8 GPUs fit one su


def test_allreduce_formula():
    p = comm_model.CommParams(gradient_mib=1.0, base_latency_us=5.0, hop_latency_us=1.0)
    bits = 1024 * 1024 * 8
    assert comm_model.allreduce_s(4, 400.0, 1, p) == pytest.approx(2 * 3 / 4 * bits / 400e9 + 6 * 6e-6)
    assert comm_model.allreduce_s(1, 400.0, 1, p) == 0.0


def test_ideal_placement_packs_nodes_and_slowdown():
    a = arrays_of(SIX)
    assert comm_model.ideal_placement(a, 3, 4) == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
    assert comm_model.ideal_placement(a, 4, 1) == {0: [0, 1, 2, 3]}
    assert comm_model.slowdown(2.0, 1.0, 0.25) == pytest.approx(1.25)
    assert comm_model.slowdown(5.0, 0.0, 0.25) == 1.0


def test_the_ideal_placement_is_the_fastest_domain_and_nothing_runs_faster_than_it():
    """su0 is one node of 4 PCIe GPUs, su1 one NVSwitch node: a 4-GPU job is ideal on su1, not on
    su0 (listed first), and a job on su0 runs slower than ideal, never faster."""
    pcie = make_node("p1", topology=make_topology(4, "L40S", nics=NICS), su="su0")
    fast = make_node("f1", topology=make_topology(4, "H100", nvswitch=18, nics=NICS), su="su1")
    a = build_arrays(build(make_cluster(pcie, fast, levels=["su"])))
    params = comm_model.CommParams()
    assert comm_model.ideal_placement(a, 1, 4) == {0: [0, 1, 2, 3]}  # without params: the first domain
    assert comm_model.ideal_placement(a, 1, 4, params) == {1: [0, 1, 2, 3]}
    ideal = comm_model.ideal_allreduce_s(a, 1, 4, params)
    on_pcie = comm_model.comm_cost(a, {0: [0, 1, 2, 3]}, params).allreduce_s
    assert on_pcie > ideal and comm_model.slowdown(on_pcie, ideal, 0.5) > 1.0
    assert comm_model.slowdown(0.5, 1.0, 0.5) == 1.0  # faster than the reference: no faster than time


# --------------------------------------------------------------------------- policies


def test_resolve_policies():
    assert [p.name for p in resolve_policies("all")] == ["default", "volcano", "topo-greedy", "toposched"]
    assert [p.name for p in resolve_policies("toposched, volcano")] == ["toposched", "volcano"]
    from models.errors import SpecError

    with pytest.raises(SpecError, match="unknown policy nope"):
        resolve_policies("toposched,nope")


DEADLOCK = WorkloadFile(jobs=(
    job("x", 1, 4, at=0, dur=100), job("y", 1, 2, at=0, dur=100),
    job("a", 2, 4, at=1, dur=1000, launcher=False), job("b", 4, 2, at=2, dur=1000, launcher=False),
), failures=QUIET, recovery=RecoverySpec(rendezvous_timeout_s=600))


def test_pods_one_by_one_deadlock_until_the_rendezvous_timeout():
    """X and Y leave at 100 s; A (2x4) and B (4x2) each grab one node and wait for the other's.

    B gave up at 602 s (600 s after its first pod bound at 2 s); A then starts.
    """
    s = sim(TWO, DEADLOCK, "default")
    j = jobs_by_name(s)
    assert j["a"]["startup_wait_s"] == pytest.approx(601.0)
    assert j["b"]["startup_wait_s"] == pytest.approx(1600.0)  # after A leaves at 1602 s
    assert s.result.counters["rendezvous_timeouts"] == 1
    assert j["b"]["rendezvous_timeouts"] == 1


@pytest.mark.parametrize("policy", ["volcano", "topo-greedy", "toposched"])
def test_gang_policies_start_the_gang_whole(policy):
    s = sim(TWO, DEADLOCK, policy)
    j = jobs_by_name(s)
    assert j["a"]["startup_wait_s"] == pytest.approx(99.0)
    assert j["b"]["startup_wait_s"] == pytest.approx(1098.0)
    assert s.result.counters["rendezvous_timeouts"] == 0


def test_interrupted_job_keeps_its_last_checkpoint():
    """Fails at 500 s: 300 s of work kept; back at 532 s (30 s detection + 2 s recreate), 60 s restart, 700 s left."""
    wl = WorkloadFile(jobs=(job("a", 1, 4, dur=1000),), node_failures=(NodeFailureSpec(node="n1", at_s=500),),
                      failures=QUIET, recovery=RecoverySpec(checkpoint_interval_s=300, restart_overhead_s=60))
    s = sim(TWO, wl, "toposched")
    j = jobs_by_name(s)["a"]
    assert j["jct_s"] == pytest.approx(532 + 60 + 700)
    assert j["interruptions"] == 1 and j["repair_times_s"] == [pytest.approx(32.0)]
    assert s.result.lost_gpu_s == [(500.0, pytest.approx(200.0 * 4), pytest.approx(300.0))]  # done since 300 s


def test_work_lost_is_counted_only_where_it_was_done_inside_the_measured_window():
    """The 200 s lost at 500 s were done from 300 s on; with the window starting at 400 s only
    half of them were done inside it (before: all 800 GPU-s, and utilisation could go negative)."""
    from simulations.timesim_metrics import _in_window

    assert _in_window((500.0, 800.0, 300.0), 400.0, 1000.0) == pytest.approx(400.0)
    assert _in_window((500.0, 800.0, 300.0), 0.0, 1000.0) == pytest.approx(800.0)
    assert _in_window((500.0, 800.0, 300.0), 600.0, 1000.0) == 0.0
    wl = WorkloadFile(jobs=(job("a", 1, 4, dur=1000),), node_failures=(NodeFailureSpec(node="n1", at_s=500),),
                      failures=QUIET, recovery=RecoverySpec(checkpoint_interval_s=300, restart_overhead_s=60))
    s = sim(TWO, wl, "toposched", hours=0.5, warmup_hours=450 / 3600)
    # in 450..1800 s: 50 s x 4 GPUs before the failure, 700 s x 4 after the restart at 592 s, less the
    # 200 GPU-s of lost work done after 450 s
    useful = 50 * 4 + 700 * 4 - 200
    assert s.result.summary()["gpu_utilisation"] == pytest.approx(useful / (s.result.capacity_gpus * 1350))


def test_toposched_repairs_keeping_survivors():
    wl = WorkloadFile(jobs=(job("a", 2, 4, dur=9000, preferred_level="su", rail_aligned=True),),
                      node_failures=(NodeFailureSpec(node="n2", at_s=100),), failures=QUIET)
    s = sim(SIX, wl, "toposched")
    assert nodes_of(s, "a") == ["n1", "n3"]
    c = s.result.counters
    assert c["repairs"] == 1 and c["gang_restarts"] == 0 and c["pods_lost"] == 1
    repaired = [p for p in s.result.placements if p["repair"]]
    assert len(repaired) == 1 and repaired[0]["span"] == "su"
    assert jobs_by_name(s)["a"]["repair_times_s"] == [pytest.approx(32.0)]


def test_restart_policies_replace_the_whole_gang():
    wl = WorkloadFile(jobs=(job("a", 2, 4, dur=9000, preferred_level="su", rail_aligned=True),),
                      node_failures=(NodeFailureSpec(node="n2", at_s=100),), failures=QUIET)
    s = sim(SIX, wl, "topo-greedy")
    c = s.result.counters
    assert c["repairs"] == 0 and c["gang_restarts"] == 1
    assert "n2" not in nodes_of(s, "a")


def test_many_failures_at_once_repair_every_gang():
    """Three gangs on six nodes, two free in su1; n1 and n3 die together: both hit gangs are repaired."""
    layout = {f"n{i}": ("su0" if i <= 4 else "su1") for i in range(1, 9)}
    wl = WorkloadFile(jobs=tuple(job(f"g{k}", 2, 4, at=k, dur=5000, preferred_level="su") for k in range(3)),
                      node_failures=(NodeFailureSpec(node="n1", at_s=200), NodeFailureSpec(node="n3", at_s=200)),
                      failures=QUIET)
    s = sim(layout, wl, "toposched")
    j = jobs_by_name(s)
    hit = [n for n in j if j[n]["interruptions"]]
    assert len(hit) == 2
    for name in hit:
        assert j[name]["repair_times_s"] == [pytest.approx(32.0)]
        assert s.jobs[name].state.value == "running"
        assert not {"n1", "n3"} & set(nodes_of(s, name))
    assert s.result.counters["repairs"] == 2


def test_three_failures_two_free_nodes_requeue_the_one_that_cannot_be_repaired():
    layout = {f"n{i}": ("su0" if i <= 4 else "su1") for i in range(1, 9)}
    wl = WorkloadFile(jobs=tuple(job(f"g{k}", 2, 4, at=k, dur=5000, preferred_level="su") for k in range(3)),
                      node_failures=tuple(NodeFailureSpec(node=n, at_s=200) for n in ("n1", "n3", "n5")),
                      failures=QUIET)
    s = sim(layout, wl, "toposched")
    states = sorted(js.state.value for js in s.jobs.values())
    assert states == ["queued", "running", "running"]
    queued = next(js for js in s.jobs.values() if js.state.value == "queued")
    assert not queued.placed and len(queued.pending) == 3  # launcher + 2 workers: no part of it left bound
    assert s.result.counters["repairs_failed"] == 1


def test_inference_replica_moves_keeping_its_spread():
    svc = ServiceSpec(name="chat", gpus_per_replica=4, cpu_milli=1000, memory_mib=1024, min_replicas=2,
                      max_replicas=2, noise=0.0, spread_level="su")
    wl = WorkloadFile(inference=InferenceMix(services=(svc,), sync_period_s=60),
                      node_failures=(NodeFailureSpec(node="n4", at_s=300),), failures=QUIET)
    s = sim(SIX, wl, "toposched")
    before = {"n1", "n4"}
    placed = sorted(r.placed.node for r in s.replicas.values() if r.placed)
    assert len(placed) == 2 and "n4" not in placed
    sus = {SIX[n] for n in placed}
    assert sus == {"su0", "su1"} and set(placed) & before == {"n1"}
    assert [d for _, d in s.result.replica_repairs] == [pytest.approx(32.0)]


def test_a_replica_bound_to_a_node_that_died_unnoticed_serves_nothing():
    """The only node dies at 21,000 s and is noticed at 24,000 s; the service scales up to one
    replica meanwhile (demand rising towards noon), which goes to the dead node (the scheduler does
    not know yet) and must count nothing."""
    svc = ServiceSpec(name="chat", gpus_per_replica=4, cpu_milli=1000, memory_mib=1024, min_replicas=0,
                      max_replicas=1, peak_hour=12, noise=0.0)
    wl = WorkloadFile(inference=InferenceMix(services=(svc,), sync_period_s=60),
                      node_failures=(NodeFailureSpec(node="n1", at_s=21000, repair_s=100000),),
                      failures=FailureSpec(detection_s=3000, recreate_s=2))
    s = sim({"n1": "su0"}, wl, "toposched", hours=7.0)
    bound_after = [w for w in s.replica_waits if 21000 < w[0] < 24000]
    assert bound_after  # the scenario: a replica was bound to the dead node
    assert sum(max(0.0, min(seg.t1, 24000) - max(seg.t0, 21000)) for seg in s.result.segments) == 0.0


def test_failure_metrics_count_only_jobs_of_the_measured_window():
    wl = WorkloadFile(jobs=(job("early", 1, 4, dur=3000),), node_failures=(NodeFailureSpec(node="n1", at_s=100),),
                      failures=QUIET)
    summary = sim(TWO, wl, "toposched", hours=2.0, warmup_hours=1.0).result.summary()
    assert (summary["jobs_arrived"], summary["jobs_interrupted"], summary["interruptions"]) == (0, 0, 0)
    assert summary["time_to_repair_s"]["n"] == 0


@pytest.mark.parametrize(("training", "problem"), [
    ({"arrival_rate_per_hour": math.inf}, "Input should be a finite number"),
    ({"max_duration_s": math.inf}, "Input should be a finite number"),
    ({"median_duration_s": 1e-300, "mean_duration_s": 1e300}, "give no finite mean run time"),
    ({"mean_gpus": 0.8}, "mean_gpus 0.8 is below 1"),
], ids=["infinite-rate", "infinite-duration", "overflowing-durations", "mean-below-one"])
def test_training_mixes_that_cannot_be_generated_are_refused(training, problem):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        TrainingMix(**training)


def test_explicit_jobs_may_not_take_generated_names_and_pods_must_fit_the_nodes():
    from pydantic import ValidationError

    from models.errors import SpecError
    from simulations.workload import check_against

    with pytest.raises(ValidationError, match="how generated jobs are named"):
        WorkloadFile(jobs=(job("train/j00000"),))
    with pytest.raises(SpecError, match="training.gpus_per_node: generated jobs would take 8 GPUs per node"):
        check_against(WorkloadFile(training=TrainingMix(gpus_per_node=8)), arrays_of(TWO), "wl.yaml")


def test_recovered_node_returns_to_the_pool_and_nothing_moves_back():
    wl = WorkloadFile(jobs=(job("a", 2, 4, dur=9000, preferred_level="su"),),
                      node_failures=(NodeFailureSpec(node="n2", at_s=100, repair_s=600),), failures=QUIET)
    s = sim(SIX, wl, "toposched")
    n2 = s.arrays.node_index["n2"]
    assert not s.ledger.live.failed[n2]
    assert nodes_of(s, "a") == ["n1", "n3"]
    assert s.result.timeline[-1][2] == s.arrays.total_gpus


def test_job_placed_on_a_dead_undetected_node_breaks_at_once():
    """n1 dies at 0 s, detected at 30 s; job b arrives at 10 s, lands on n1 and is broken at once.

    Back at 32 s (recreated after detection), 60 s restart overhead, 100 s of work: done at 192 s.
    """
    wl = WorkloadFile(jobs=(job("b", 1, 4, at=10, dur=100),),
                      node_failures=(NodeFailureSpec(node="n1", at_s=0),), failures=QUIET)
    s = sim(TWO, wl, "toposched")
    j = jobs_by_name(s)["b"]
    assert j["interruptions"] == 1
    assert j["repair_times_s"] == [pytest.approx(32.0 - 10.0)]
    assert nodes_of(s, "b") == [] and j["jct_s"] == pytest.approx(192 - 10)


def test_utilisation_of_a_cluster_kept_full():
    wl = WorkloadFile(jobs=(job("a", 2, 4, dur=7200, launcher=False),), failures=QUIET)
    s = sim(TWO, wl, "toposched", hours=1.0)
    out = s.result.summary()
    assert out["gpu_allocation"] == pytest.approx(1.0)
    assert out["gpu_utilisation"] == pytest.approx(1.0)


def test_same_seed_same_result():
    arrays = arrays_of(SIX)
    wl = WorkloadFile(training=TrainingMix(calibration="seren", target_load=0.9, max_gpus=16, gpus_per_node=4,
                                           max_duration_s=1800, preferred_level="su"),
                      failures=FailureSpec(node_mtbf_hours=3, repair_mean_hours=0.2))
    cfg = SimConfig(hours=2, seed=7, warmup_hours=0.5, check_every=5)
    gen = generate(wl, arrays, cfg.hours, cfg.seed)
    for name in POLICIES:
        a, b = (TimeSim(arrays, gen, wl, POLICIES[name], cfg).run().summary() for _ in range(2))
        a.pop("wall_s"), b.pop("wall_s")
        assert a == b
        assert a["jobs_arrived"] > 10 and 0 < a["gpu_utilisation"] <= a["gpu_allocation"] <= 1.0


# --------------------------------------------------------------------------- CLI and report


@pytest.mark.parametrize("name", ["workload-superpod.yaml", "workload-superpod-light.yaml"])
def test_example_workloads_are_valid_for_superpod_4su(name):
    from models.cluster import load_cluster
    from simulations.workload import check_against, load_workload
    from tests.paths import REPO_ROOT

    path = REPO_ROOT / "examples" / name
    wl = load_workload(path)
    arrays = build_arrays(load_cluster("superpod-4su"))
    check_against(wl, arrays, str(path))
    gen = generate(wl, arrays, hours=2, seed=0)
    assert len(gen.services) == 4 and gen.jobs
    assert gen.info["mean_gpus"] == pytest.approx(CALIBRATIONS["kalos"].mean_gpus)


def test_cli_writes_summary_and_plots(tmp_path, capsys):
    from scheduler.cli import main

    (tmp_path / "cluster.json").write_text(json.dumps(spec_of(SIX)))
    (tmp_path / "wl.yaml").write_text(
        "name: tiny\ntraining: {calibration: seren, target_load: 0.8, max_gpus: 8, gpus_per_node: 4,"
        " max_duration_s: 900, preferred_level: su}\n"
        "inference: {services: [{name: chat, gpus_per_replica: 1, min_replicas: 1, max_replicas: 2}]}\n"
        "failures: {node_mtbf_hours: 4, repair_mean_hours: 0.5}\n")
    out = tmp_path / "out"
    rc = main(["simulate", "workload", "--cluster", str(tmp_path / "cluster.json"), "--workload",
               str(tmp_path / "wl.yaml"), "--hours", "0.5", "--policy", "all", "--seed", "3", "--out", str(out),
               "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "policy" in text and "toposched" in text and "default" in text
    doc = json.loads((out / "summary.json").read_text())
    assert set(doc["policies"]) == {"default", "volcano", "topo-greedy", "toposched"}
    assert doc["command"].startswith("toposched simulate workload --cluster")
    for f in ("allocation.png", "startup_wait_cdf.png", "jct_cdf.png", "tier_crossings.png", "jobs_toposched.csv"):
        assert (out / f).stat().st_size > 0


def test_cli_bad_workload_names_file_and_field(tmp_path, capsys):
    from scheduler.cli import main

    (tmp_path / "wl.yaml").write_text("training: {calibration: kalos, target_load: -1}\n")
    rc = main(["simulate", "workload", "--cluster", "superpod-su", "--workload", str(tmp_path / "wl.yaml"),
               "--hours", "1", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "wl.yaml" in err and "training.target_load" in err


def test_cli_unknown_level_in_workload(tmp_path, capsys):
    from scheduler.cli import main

    (tmp_path / "wl.yaml").write_text("jobs: [{name: a, workers: 2, preferred_level: rack}]\n")
    rc = main(["simulate", "workload", "--cluster", "superpod-su", "--workload", str(tmp_path / "wl.yaml"),
               "--hours", "1", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "jobs[0].preferred_level: unknown level 'rack'" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--seed", "-1"], "--seed: must be an integer >= 0"),
    (["--gang-time-limit", "nan"], "--gang-time-limit: must be a positive number of seconds"),
    (["--out", "FILE"], "--out: cannot write the report there"),
], ids=["negative-seed", "nan-time-limit", "out-is-a-file"])
def test_cli_bad_options_are_refused_before_any_run(tmp_path, capsys, monkeypatch, args, message):
    from scheduler.cli import main
    from simulations import timesim

    (tmp_path / "wl.yaml").write_text("jobs: [{name: a, workers: 1}]\n")
    (tmp_path / "FILE").write_text("taken")
    monkeypatch.setattr(timesim.TimeSim, "run", lambda self: pytest.fail("ran before checking the options"))
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    rc = main(["simulate", "workload", "--cluster", "superpod-su", "--workload", str(tmp_path / "wl.yaml"),
               "--hours", "1", "--quiet", "--no-plots", "--out", str(tmp_path / "o"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err
