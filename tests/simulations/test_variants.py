"""What-if variants of an openb pod list: each rule reaches its share, keeps what it should
keep, is reproducible, and names the problem when it cannot be made."""

from __future__ import annotations

import pytest

from models.errors import SpecError
from models.readers.openb import NodeRow, PodRow
from simulations.variants import describe, make_variant, parse_variant

NODES = [NodeRow(f"t{i}", 32000, 131072, 4, "T4") for i in range(6)] + \
        [NodeRow(f"a{i}", 96000, 393216, 8, "A100") for i in range(3)] + \
        [NodeRow("p0", 8000, 32768, 1, "P100")]


def pods() -> list[PodRow]:
    out = []
    for i in range(400):
        kind = i % 8
        if kind == 0:
            out.append(PodRow(f"p{i:04d}", 4000, 8192, 0, 0))
        elif kind < 4:
            out.append(PodRow(f"p{i:04d}", 6000, 16384, 1, (230, 470, 810)[kind - 1]))
        elif kind < 7:
            out.append(PodRow(f"p{i:04d}", 8000, 32768, 1, 1000))
        else:
            out.append(PodRow(f"p{i:04d}", 32000, 65536, (2, 4, 8)[i % 3], 1000))
    return out


def test_parse_names_and_shares():
    assert parse_variant("gpushare60") == ("gpushare", 0.60)
    assert parse_variant("MultiGPU20") == ("multigpu", 0.20)
    assert parse_variant("cpu050") == ("cpu", 0.05)
    assert parse_variant("cpu250") == ("cpu", 0.25)


@pytest.mark.parametrize(("name", "message"), [
    ("gpushare", "unknown variant 'gpushare'"),
    ("sharing40", "unknown variant 'sharing40'"),
    ("gpushare140", "140% is above 100%"),
    ("cpu25", "cpu takes three digits"),
])
def test_bad_names_say_what_is_wrong(name, message):
    with pytest.raises(SpecError, match=message) as err:
        parse_variant(name)
    assert "--variant" in str(err.value)


@pytest.mark.parametrize("pct", [0, 20, 60, 100])
def test_gpushare_redraws_gpu_rows_to_the_share(pct):
    src = pods()
    out = make_variant(src, f"gpushare{pct}", seed=3)
    assert [p.name for p in out] == sorted(p.name for p in src)  # same rows, same names
    assert [p.num_gpu == 0 for p in out] == [p.num_gpu == 0 for p in sorted(src, key=lambda p: p.name)]
    assert abs(describe(out)["gpushare_pct"] - pct) < 6.0  # drawn rows: the share holds at the pools' means
    shapes = {(p.cpu_milli, p.memory_mib, p.num_gpu, p.gpu_milli) for p in src}
    assert all((p.cpu_milli, p.memory_mib, p.num_gpu, p.gpu_milli) in shapes for p in out)


@pytest.mark.parametrize("pct", [5, 40, 80])
def test_multigpu_appends_or_removes_multi_gpu_pods(pct):
    src = pods()
    before = describe(src)["multigpu_pct"]
    out = make_variant(src, f"multigpu{pct}", seed=1)
    d = describe(out)
    if pct > before:
        assert d["multigpu_pct"] >= pct and len(out) > len(src)
        assert [p.name for p in out[:len(src)]] == sorted(p.name for p in src)
        added = out[len(src):]
        assert all(p.num_gpu >= 2 for p in added) and len({p.name for p in out}) == len(out)
    else:
        assert d["multigpu_pct"] <= pct and len(out) < len(src)
        assert {p.name for p in out} < {p.name for p in src}


def test_gpuspec_constrains_the_share_of_gpu_pods_to_a_model_that_can_host_them():
    src = pods()
    out = make_variant(src, "gpuspec30", seed=2, nodes=NODES)
    assert abs(describe(out)["gpuspec_pct"] - 30.0) < 0.5
    constrained = [p for p in out if p.gpu_spec]
    assert {m for p in constrained for m in p.gpu_spec} <= {"T4", "A100", "P100"}
    for p in constrained:
        (model,) = p.gpu_spec
        assert any(n.model == model and n.gpus >= p.num_gpu and n.cpu_milli >= p.cpu_milli and
                   n.memory_mib >= p.memory_mib for n in NODES), p
    # 8-GPU pods can only go to the A100 nodes
    assert all(p.gpu_spec == ("A100",) for p in constrained if p.num_gpu == 8)
    by_name = {p.name: p for p in src}
    assert all((p.cpu_milli, p.num_gpu, p.gpu_milli) == (by_name[p.name].cpu_milli, by_name[p.name].num_gpu,
                                                         by_name[p.name].gpu_milli) for p in out)


def test_gpuspec_needs_the_node_list():
    with pytest.raises(SpecError, match="needs the node list"):
        make_variant(pods(), "gpuspec10")


@pytest.mark.parametrize("name", ["cpu050", "cpu250"])
def test_cpu_sets_the_share_of_cpu_only_pods_and_keeps_gpu_pods(name):
    src = pods()
    out = make_variant(src, name, seed=4)
    assert abs(describe(out)["cpu_pct"] - int(name[3:]) / 10) < 0.2
    gpu = sorted((p.name for p in src if p.num_gpu), key=str)
    assert sorted((p.name for p in out if p.num_gpu), key=str) == gpu


def test_same_seed_same_variant_other_seed_other_variant():
    src = pods()
    assert make_variant(src, "gpushare60", seed=7) == make_variant(src, "gpushare60", seed=7)
    assert make_variant(src, "gpushare60", seed=7) != make_variant(src, "gpushare60", seed=8)


def test_a_list_without_the_pods_to_draw_from_is_refused():
    whole_only = [PodRow(f"w{i}", 4000, 8192, 1, 1000) for i in range(10)]
    with pytest.raises(SpecError, match="no GPU-sharing pods to draw from"):
        make_variant(whole_only, "gpushare40")
    with pytest.raises(SpecError, match="no multi-GPU pods to draw from"):
        make_variant(whole_only, "multigpu20")
    with pytest.raises(SpecError, match="no CPU-only pods to draw from"):
        make_variant(whole_only, "cpu100")


def test_a_variant_that_would_leave_no_pods_is_refused():
    cpu_only = [PodRow(f"c{i}", 4000, 8192, 0, 0) for i in range(5)]
    with pytest.raises(SpecError, match="leaves no pods of the 5"):
        make_variant(cpu_only, "cpu000")


def test_a_negative_variant_seed_is_refused_by_name():
    with pytest.raises(SpecError, match="--variant-seed: variant seed -1 is negative"):
        make_variant(pods(), "gpushare60", seed=-1)
