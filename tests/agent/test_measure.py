"""Bandwidth measurement: planning, budget, math and reordering over a fake copy timer (no torch needed)."""

from __future__ import annotations

import sys

import pytest

from scheduler.agent.measure import (
    BandwidthReport,
    CopySkipped,
    MeasureError,
    TorchTimer,
    device_order,
    measure,
    rate_gbps,
    reorder,
)

GB = 1e9


class FakeTimer:
    """Copies at fixed rates (bytes/s); each copy advances a fake clock by its time plus ``overhead_s``."""

    def __init__(self, n: int = 2, rates: dict | None = None, peer: set | None = None, overhead_s: float = 0.001,
                 fail: dict | None = None) -> None:
        self.n = n
        self.now = 0.0
        self.rates = rates or {}
        self.peer = peer
        self.overhead_s = overhead_s
        self.fail = fail or {}
        self.copies: list[tuple[str, int, int]] = []

    def clock(self) -> float:
        return self.now

    def device_count(self) -> int:
        return self.n

    def bus_ids(self) -> list[str | None]:
        return [None] * self.n

    def can_access_peer(self, src: int, dst: int) -> bool:
        return self.peer is None or (src, dst) in self.peer

    def copy_seconds(self, kind: str, src: int, dst: int, nbytes: int) -> float:
        if (kind, src, dst) in self.fail:
            raise CopySkipped(self.fail[(kind, src, dst)])
        self.copies.append((kind, src, dst))
        rate = self.rates.get((kind, src, dst), {"h2d": 50 * GB, "d2h": 40 * GB, "d2d": 1000 * GB,
                                                  "p2p": 100 * GB}[kind])
        seconds = nbytes / rate
        self.now += seconds + self.overhead_s
        return seconds

    def close(self) -> None:
        pass


def test_rates_are_gbit_per_second_from_the_median():
    t = FakeTimer(2, rates={("p2p", 0, 1): 450 * GB})
    r = measure(t, 2, budget_s=10, nbytes=1 << 28, clock=t.clock)
    assert r.h2d_gbps == pytest.approx((400.0, 400.0))  # 50 GB/s = 400 Gbit/s
    assert r.d2h_gbps == pytest.approx((320.0, 320.0))
    assert r.d2d_gbps == pytest.approx((16000.0, 16000.0))  # read + write: 2 x 1000 GB/s
    assert r.p2p_gbps[0][1] == pytest.approx(3600.0) and r.p2p_gbps[1][0] == pytest.approx(800.0)
    assert r.p2p_gbps[0][0] is None
    assert r.p2p_matrix() == [[0.0, 3600.0], [800.0, 0.0]]


def test_median_ignores_one_slow_copy():
    assert rate_gbps("h2d", 1000, [1e-6, 1e-6, 5e-6]) == pytest.approx(8.0)
    assert rate_gbps("h2d", 1000, []) is None


def test_each_task_repeats_within_its_share_and_warms_up_first():
    t = FakeTimer(1, overhead_s=0.0)
    measure(t, 1, budget_s=100, nbytes=1 << 20, min_reps=3, max_reps=5, clock=t.clock)
    # per task: 1 warm-up + 5 timed (the share is never used up by such short copies)
    assert [k for k, _, _ in t.copies] == ["h2d"] * 6 + ["d2h"] * 6 + ["d2d"] * 6


def test_the_budget_bounds_the_run_and_the_rest_keep_table_values():
    # 2 GPUs: 6 per-GPU tasks and 2 P2P; every copy takes 1 s, so a 5 s budget ends early
    t = FakeTimer(2, overhead_s=1.0)
    r = measure(t, 2, budget_s=5, nbytes=1, min_reps=1, max_reps=3, clock=t.clock)
    assert r.elapsed_s <= 5 + 1.0 + 1e-9  # at most one copy past the deadline
    assert r.p2p_gbps[0][1] is None and r.p2p_gbps[1][0] is None
    assert any("budget of 5 s spent after" in n for n in r.notes)
    assert not r.has_p2p() and r.p2p_matrix() == [[0.0, 0.0], [0.0, 0.0]]


def test_pairs_without_peer_access_are_not_measured():
    t = FakeTimer(3, peer={(0, 1), (1, 0)})
    r = measure(t, 3, budget_s=10, nbytes=1 << 20, clock=t.clock)
    assert r.p2p_gbps[0][1] is not None and r.p2p_gbps[0][2] is None
    assert "no peer access for GPU pairs 0->2, 1->2, 2->0, 2->1; their table values stay" in r.notes


def test_a_skipped_copy_becomes_a_note():
    t = FakeTimer(2, fail={("d2d", 1, 1): "cannot allocate 256 MiB on GPU 1: out of memory"})
    r = measure(t, 2, budget_s=10, nbytes=1 << 20, clock=t.clock)
    assert r.d2d_gbps[1] is None and r.d2d_gbps[0] is not None
    assert "d2d GPU 1: cannot allocate 256 MiB on GPU 1: out of memory" in r.notes


def test_torch_seeing_fewer_gpus_is_an_error():
    t = FakeTimer(1)
    with pytest.raises(MeasureError, match="torch sees 1 GPU\\(s\\) but the node has 8"):
        measure(t, 8, clock=t.clock)


def test_non_positive_budget_is_an_error():
    t = FakeTimer(1)
    with pytest.raises(MeasureError, match="budget must be positive"):
        measure(t, 1, budget_s=0, clock=t.clock)


def test_device_order_lines_torch_up_with_the_node():
    node = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0"]
    assert device_order(["0000:2a:00.0", "0000:3a:00.0", "0000:18:00.0"], node) == [2, 0, 1]
    assert device_order([None, None, None], node) == [0, 1, 2]
    with pytest.raises(MeasureError, match="no GPU at PCI bus id"):
        device_order(["0000:18:00.0", "0000:2a:00.0", "0000:99:00.0"], node)


def test_reorder_moves_rows_and_columns():
    r = BandwidthReport(2, (1.0, 2.0), (3.0, 4.0), (5.0, 6.0), ((None, 10.0), (20.0, None)), 1.0, 0.5, 8)
    o = reorder(r, [1, 0])
    assert (o.h2d_gbps, o.d2h_gbps, o.d2d_gbps) == ((2.0, 1.0), (4.0, 3.0), (6.0, 5.0))
    assert o.p2p_gbps == ((None, 20.0), (10.0, None))


def test_report_json_rounds_and_names_the_unit():
    r = BandwidthReport(1, (441.04,), (None,), (33632.1,), ((None,),), 60.0, 1.234, 8)
    doc = r.to_json()
    assert doc["unit"] == "Gbit/s" and doc["h2d_gbps"] == [441.0] and doc["d2h_gbps"] == [None]
    assert doc["elapsed_s"] == 1.23


def test_without_torch_measuring_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MeasureError, match="--measure needs PyTorch"):
        TorchTimer()
