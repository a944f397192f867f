"""ArrivalMix: what a live scheduler counts, when it publishes, how old arrivals fade."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.snapshot import PodShape
from scheduler.workload_mix import ArrivalMix, PodKind

WHOLE = PodShape(cpu_milli=4000, memory_mib=1000, gpus=1, gpu_milli=1000)
HALF = PodShape(cpu_milli=2000, memory_mib=3000, gpus=1, gpu_milli=500)
CPU = PodShape(cpu_milli=1000)


def freq(mix: ArrivalMix) -> dict[PodKind, float]:
    return dict(mix.mix.typical)


def test_first_pods_publish_at_once_then_every_publish_every():
    m = ArrivalMix(half_life_pods=1e9, publish_every=5, coverage=1.0)
    assert m.mix is None
    assert m.observe(WHOLE) is True and freq(m) == {PodKind.of(WHOLE): 1.0}
    published = [m.observe(HALF) for _ in range(200)]
    # young: a publish whenever the new pods are a tenth of what it holds (the first ten pods
    # each publish); from 50 pods on, every 5 pods
    assert published[:10] == [True] * 10
    at = [i for i, p in enumerate(published) if p]
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-20:] == [5] * 20
    assert m.published == 1 + sum(published)
    assert m.weight + len(m._new) == pytest.approx(201)


def test_frequencies_and_memory_follow_the_counts():
    m = ArrivalMix(half_life_pods=1e9, publish_every=1, coverage=1.0)
    for shape in (WHOLE, WHOLE, WHOLE, HALF, CPU):
        m.observe(shape)
    f = freq(m)
    assert f[PodKind.of(WHOLE)] == pytest.approx(0.6) and f[PodKind.of(HALF)] == pytest.approx(0.2)
    assert f[PodKind.of(CPU)] == pytest.approx(0.2)
    assert m.mix.mean_memory_mib(PodKind.of(HALF)) == pytest.approx(3000)


def test_old_arrivals_fade_with_the_half_life():
    m = ArrivalMix(half_life_pods=10, publish_every=1, coverage=1.0)
    for _ in range(10):
        m.observe(WHOLE)
    for _ in range(10):
        m.observe(HALF)
    # each publish halves per 10 new pods: the 10 whole pods weigh 1/2, the newest pods most
    whole = sum(0.5 ** (k / 10) for k in range(10, 20))
    half = sum(0.5 ** (k / 10) for k in range(10))
    assert m.weight == pytest.approx(whole + half)
    assert freq(m)[PodKind.of(HALF)] == pytest.approx(half / (whole + half))
    for _ in range(400):  # long gone: faded below counting
        m.observe(HALF)
    assert set(freq(m)) == {PodKind.of(HALF)}


def test_each_publish_is_a_new_version():
    m = ArrivalMix(publish_every=1)
    m.observe(WHOLE)
    first = m.mix.version
    m.observe(WHOLE)
    assert m.mix.version != first


@pytest.mark.parametrize("kwargs", [{"half_life_pods": 0}, {"publish_every": 0}, {"max_kinds": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ArrivalMix(**kwargs)


def test_only_the_heaviest_kinds_are_kept():
    m = ArrivalMix(half_life_pods=1e9, publish_every=1, coverage=1.0, max_kinds=3)
    for cpu in range(1, 7):  # kind with CPU c arrives c times
        for _ in range(cpu):
            m.observe(PodShape(cpu_milli=1000 * cpu, gpus=1))
    assert {k.cpu_milli for k, _ in m.mix.typical} == {4000, 5000, 6000}
    assert sum(f for _, f in m.mix.typical) == pytest.approx(1.0)
    assert len(m._counts) == 6  # counted beyond the mix (up to 4 x max_kinds): a kind can grow into it
    for cpu in range(7, 20):
        m.observe(PodShape(cpu_milli=1000 * cpu, gpus=1))
    assert len(m._counts) == 12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0, 250, 500, 1000]), st.integers(1, 8)),
                min_size=1, max_size=300),
       st.integers(1, 20), st.integers(1, 6))
def test_any_arrival_sequence_gives_a_proper_mix(arrivals, publish_every, max_kinds):
    m = ArrivalMix(half_life_pods=50, publish_every=publish_every, coverage=1.0, max_kinds=max_kinds)
    for cpu, milli, gpus in arrivals:
        shape = PodShape(cpu_milli=1000 * cpu, gpus=0 if milli == 0 else (1 if milli < 1000 else gpus),
                         gpu_milli=milli or 1000)
        m.observe(shape)
    m.publish()
    typical = m.mix.typical
    assert 1 <= len(typical) <= max_kinds and len(m._counts) <= 4 * max_kinds
    assert sum(f for _, f in typical) == pytest.approx(1.0) and all(f > 0 for _, f in typical)
    assert m.observed == len(arrivals) and not m._new
    # fading only ever lowers a count: no kind weighs more than the pods it counted
    assert max(m._counts.values()) <= len(arrivals)
