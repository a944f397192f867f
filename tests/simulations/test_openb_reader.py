"""openb readers: both pod list variants, the node list, and every bad row named by file and line."""

from __future__ import annotations

import pytest

from models.errors import SpecError, TraceRowError
from models.readers.openb import read_node_list, read_pod_file, read_pod_list, trace_name

LONG = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
SHORT = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
NODES = "sn,cpu_milli,memory_mib,gpu,model\n"


def test_eleven_columns_with_model_lists_and_empty_times():
    text = LONG + ("p0,12000,16384,1,1000,,LS,Running,0,12537496,0\n"
                   "p1,6000,12288,1,460,T4|V100M16,BE,Pending,42,,\n"
                   "p2,32000,65536,0,0,,LS,Running,5,6,\n")
    p0, p1, p2 = read_pod_list(text, "pods.csv")
    assert (p0.num_gpu, p0.gpu_milli, p0.gpu_spec, p0.is_shared) == (1, 1000, (), False)
    assert (p1.gpu_spec, p1.is_shared, p1.gpu_milli_total) == (("T4", "V100M16"), True, 460)
    assert (p1.deletion_time, p1.scheduled_time, p1.line) == (None, None, 3)
    assert (p2.num_gpu, p2.gpu_milli_total, p2.qos) == (0, 0, "LS")


def test_five_column_multigpu_variant():
    (p,) = read_pod_list(SHORT + "openb-pod-8200,88000,327680,8,1000\n", "multigpu20.csv")
    assert (p.num_gpu, p.gpu_milli, p.gpu_spec, p.creation_time) == (8, 1000, (), None)


def test_duplicate_models_in_a_spec_are_kept_once():
    (p,) = read_pod_list(LONG + "p,1,1,1,500,V100M16|V100M32|V100M32,LS,Running,0,0,0\n", "x.csv")
    assert p.gpu_spec == ("V100M16", "V100M32")


@pytest.mark.parametrize(("row", "problem"), [
    ("p,12000,16384,1,1000,,LS,Running,0,1", "10 fields; expected 11"),
    ("p,abc,16384,1,1000,,LS,Running,0,1,0", "cpu_milli: 'abc' is not an integer"),
    ("p,-5,16384,1,1000,,LS,Running,0,1,0", "cpu_milli: -5 is negative"),
    ("p,1,1,0,300,,LS,Running,0,1,0", "gpu_milli: 300 for a pod with num_gpu 0"),
    ("p,1,1,2,0,,LS,Running,0,1,0", "gpu_milli: 0 out of range 1..1000"),
    ("p,1,1,1,1200,,LS,Running,0,1,0", "gpu_milli: 1200 out of range 1..1000"),
    ("p,1,1,2,500,,LS,Running,0,1,0", "a shared GPU request must ask for exactly 1 GPU"),
    ("p,1,1,0,0,T4,LS,Running,0,1,0", "gpu_spec: 'T4' given for a pod without GPUs"),
    (",1,1,0,0,,LS,Running,0,1,0", "name: empty pod name"),
    ("p,1,1,0,0,,LS,Running,x,1,0", "creation_time: 'x' is not an integer"),
    (" , ", "empty row"),
    ("p,1_000,16384,1,1000,,LS,Running,0,1,0", "cpu_milli: '1_000' is not an integer"),
    ("p,+5,16384,1,1000,,LS,Running,0,1,0", "cpu_milli: '+5' is not an integer"),
    ("p,99999999999999999999,1,1,1000,,LS,Running,0,1,0", "cpu_milli: 99999999999999999999 is too large"),
    ("p,1,1,99999999999999999999,1000,,LS,Running,0,1,0", "num_gpu: 99999999999999999999 is too large"),
], ids=["short-row", "not-int", "negative", "milli-without-gpu", "gpu-without-milli", "milli-over", "shared-multi",
        "spec-without-gpu", "no-name", "bad-time", "blank-cells", "underscore", "plus-sign", "huge", "huge-gpus"])
def test_bad_row_names_file_and_line(row, problem):
    text = LONG + "ok,1,1,0,0,,LS,Running,0,1,0\n" + row + "\n"
    with pytest.raises(TraceRowError) as e:
        read_pod_list(text, "pods.csv")
    assert (e.value.source, e.value.line) == ("pods.csv", 3)
    assert problem in str(e.value)
    assert str(e.value).startswith("pods.csv:3: ")


def test_empty_row_and_duplicate_name_are_errors():
    with pytest.raises(TraceRowError, match=r"pods.csv:3: empty row"):
        read_pod_list(SHORT + "a,1,1,0,0\n\nb,1,1,0,0\n", "pods.csv")
    with pytest.raises(TraceRowError, match=r"pods.csv:3: name: pod 'a' already listed on line 2"):
        read_pod_list(SHORT + "a,1,1,0,0\na,1,1,0,0\n", "pods.csv")


def test_bad_or_missing_header():
    with pytest.raises(TraceRowError, match=r"pods.csv:1: empty file"):
        read_pod_list("", "pods.csv")
    with pytest.raises(TraceRowError, match=r"pods.csv:1: header is 'name,cpu,memory'"):
        read_pod_list("name,cpu,memory\n", "pods.csv")


def test_node_list_rows_and_errors():
    nodes = read_node_list(NODES + "n0,96000,393216,8,G2\nn1,32000,262144,0,\n", "nodes.csv")
    assert [(n.name, n.gpus, n.model) for n in nodes] == [("n0", 8, "G2"), ("n1", 0, "")]
    with pytest.raises(TraceRowError, match=r"nodes.csv:2: model: empty, but the node has 2 GPUs"):
        read_node_list(NODES + "n0,1,1,2,\n", "nodes.csv")


@pytest.mark.parametrize(("row", "problem"), [
    ("n 1,96000,393216,8,G2", "sn: 'n 1' is not a valid Kubernetes node name"),
    ("Node1,96000,393216,8,G2", "sn: 'Node1' is not a valid Kubernetes node name"),
    ("n1,96000,393216,65,G2", "gpu: 65 GPUs on one node; at most 64"),
    ("n1,99999999999999999999,393216,8,G2", "cpu_milli: 99999999999999999999 is too large"),
])
def test_node_rows_the_cluster_model_would_refuse_name_file_and_line(row, problem):
    with pytest.raises(TraceRowError) as e:
        read_node_list(NODES + "n0,96000,393216,8,G2\n" + row + "\n", "nodes.csv")
    assert str(e.value).startswith("nodes.csv:3: ") and problem in str(e.value)


def test_files_bundled_and_missing(tmp_path):
    pods, name = read_pod_file("default")
    assert (len(pods), name) == (8152, "openb_pod_list_default")
    assert sum(p.gpu_milli_total for p in pods) == 6_086_800
    with pytest.raises(SpecError, match="no such file"):
        read_pod_file(str(tmp_path / "absent.csv"))
    bad = tmp_path / "openb_pod_list_x.csv"
    bad.write_text(SHORT + "a,1,1,1,1000\nb,1,1,one,1000\n")
    with pytest.raises(TraceRowError, match=r"openb_pod_list_x.csv:3: num_gpu: 'one'"):
        read_pod_file(str(bad))
    assert trace_name("a/b/openb_pod_list_gpushare40.csv") == "openb_pod_list_gpushare40"
