"""NvmlSource over recorded answers: every unsupported call degrades to None with a note, never a crash."""

from __future__ import annotations

import json
import sys

import pytest

from models.errors import SpecError
from scheduler.agent.nvml_source import (
    NvmlSource,
    NvmlUnavailable,
    RecordedNvml,
    ReplaySource,
    index_ranges,
    normalize_bus_id,
)
from tests.agent.records import h200_record, record, replay

NS = "ERR NVMLError_NotSupported(3)"


def opened(doc: dict) -> ReplaySource:
    src = replay(doc)
    src.open()
    return src


def test_real_h200_guest_answers_degrade_with_notes():
    """The H200 guest answered NotSupported for the NUMA id and NVLink state, and a TypeError for fabric info."""
    src = opened(h200_record())
    assert src.driver_version() == "580.159.04"
    assert src.device_count() == 1
    d = src.device(0)
    assert (d.name, d.uuid, d.pci_bus_id) == ("NVIDIA H200", "GPU-60ca8147-127f-46f0-9366-eba40a41b09d", "0000:00:06.0")
    assert d.memory_total_mib == 143771  # 150754820096 bytes, as nvidia-smi prints it
    assert d.mig_mode == "Disabled"
    assert (d.gpu_numa_id, d.nvlinks, d.fabric_clique) == (None, None, None)
    notes = "\n".join(src.notes())
    assert "nvmlDeviceGetNumaNodeId: NotSupported (GPU 0)" in notes
    assert "nvmlDeviceGetNvLinkState: NotSupported (GPU 0)" in notes
    assert "nvmlDeviceGetGpuFabricInfoV: TypeError" in notes


def test_dgx1_links_end_where_nvml_says_invalid_argument():
    """Six NVLinks per V100; link 6 answers InvalidArgument, which ends the list without a note."""
    src = opened(record("dgx1-v100"))
    d = src.device(0)
    assert [e.link for e in d.nvlinks] == [0, 1, 2, 3, 4, 5]
    assert all(e.remote_is_switch is False for e in d.nvlinks)
    assert [e.remote_bus_id for e in d.nvlinks].count("0000:0b:00.0") == 2  # two links to GPU 3
    assert not any("NvLinkState" in n for n in src.notes())


def test_notes_name_each_failing_call_once_with_its_gpus():
    src = opened(record("dgx-h100"))
    for i in range(8):
        src.device(i)
    assert "NVML nvmlDeviceGetNumaNodeId: NotSupported (GPUs 0-7)" in src.notes()


def test_nvlink_error_other_than_end_of_links_is_noted():
    doc = record("dgx1-v100")
    doc["gpus"][0]["nvlinks"][3] = {"link": 3, "err": "NVMLError_GpuIsLost(15)"}
    src = opened(doc)
    assert [e.link for e in src.device(0).nvlinks] == [0, 1, 2]
    assert "NVML nvmlDeviceGetNvLinkState: GpuIsLost at link 3 (GPU 0)" in src.notes()


@pytest.mark.parametrize("mask, expected, note", [
    ([2], 1, None),
    ([0b11], None, "names NUMA nodes [0, 1]"),
    ([0, 1], 64, None),
    ([0], None, "names no NUMA node"),
], ids=["node-1", "two-nodes", "second-word", "none"])
def test_numa_node_is_the_single_node_of_the_memory_affinity(mask, expected, note):
    doc = record("dgx-h100")
    doc["gpus"][0]["memory_affinity"] = mask
    src = opened(doc)
    assert src.device(0).numa_node == expected
    assert any(note in n for n in src.notes()) if note else not any("MemoryAffinity" in n for n in src.notes())


def test_fabric_clique_is_cluster_uuid_dot_clique_id():
    doc = record("dgx-h100")
    doc["gpus"][0]["fabric"] = {"cluster_uuid": "6f0b7c1e-2d3a-4b5c-9d8e-0123456789ab", "clique_id": 7}
    doc["gpus"][1]["fabric"] = {"cluster_uuid": "6f0b7c1e-2d3a-4b5c-9d8e-0123456789ab", "clique_id": 7, "state": 2}
    src = opened(doc)
    assert src.device(0).fabric_clique == "6f0b7c1e-2d3a-4b5c-9d8e-0123456789ab.7"
    assert src.device(1).fabric_clique is None  # registration still in progress


def test_common_ancestor_maps_to_nvidia_smi_words():
    src = opened(record("dgx1-v100"))
    assert [src.pcie_relation(0, b) for b in (1, 2, 4)] == ["PIX", "PHB", "SYS"]


def test_unsupported_common_ancestor_is_unknown():
    doc = record("dgx1-v100")
    doc["topology"][0][1] = NS
    src = opened(doc)
    assert src.pcie_relation(0, 1) is None
    assert "NVML nvmlDeviceGetTopologyCommonAncestor: NotSupported (GPU 0/1)" in src.notes()


def test_driver_not_loaded_at_init_is_unavailable_with_no_driver():
    doc = record("dgx-h100")
    doc["init"] = "ERR NVMLError_DriverNotLoaded(9)"
    with pytest.raises(NvmlUnavailable, match="driver is not loaded") as err:
        replay(doc).open()
    assert err.value.no_driver


def test_missing_nvidia_ml_py_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(NvmlUnavailable, match="nvidia-ml-py is not installed") as err:
        NvmlSource().open()
    assert not err.value.no_driver


def test_a_library_without_a_function_degrades():
    class OldLib:
        def nvmlInit(self):  # noqa: N802
            pass

        def nvmlDeviceGetCount(self):  # noqa: N802
            return 1

        def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
            return i

        def nvmlDeviceGetName(self, h):  # noqa: N802
            return b"Tesla T4"

    src = NvmlSource(lib=OldLib())
    src.open()
    d = src.device(0)
    assert d.name == "Tesla T4" and d.uuid is None and d.nvlinks is None
    assert "NVML nvmlDeviceGetUUID: FunctionNotFound (not in this nvidia-ml-py) (GPU 0)" in src.notes()


def test_an_error_that_is_not_nvml_is_not_swallowed():
    class Buggy:
        def nvmlInit(self):  # noqa: N802
            pass

        def nvmlDeviceGetCount(self):  # noqa: N802
            raise ZeroDivisionError("bug")

    src = NvmlSource(lib=Buggy())
    src.open()
    with pytest.raises(ZeroDivisionError):
        src.device_count()


def test_unknown_error_form_in_a_record_names_the_place():
    doc = record("dgx-h100")
    doc["gpus"][2]["uuid"] = "ERR something odd"
    src = opened(doc)
    with pytest.raises(SpecError, match=r"gpus\[2\]\.uuid: not an error this replay knows"):
        src.device(2)


def test_record_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "rec.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="rec.json: malformed JSON at line 1"):
        ReplaySource.from_file(bad)
    bad.write_text('{"driver": "x"}')
    with pytest.raises(SpecError, match="needs a `gpus` list"):
        ReplaySource.from_file(bad)


@pytest.mark.parametrize("raw, expected", [
    ("00000000:18:00.0", "0000:18:00.0"),
    (b"00000000:DF:00.0", "0000:df:00.0"),
    ("0000:0a:00.1", "0000:0a:00.1"),
    ("06:00.0", "0000:06:00.0"),
    ("not a bus id", None),
    (None, None),
], ids=["nvml", "bytes-upper", "sysfs", "no-domain", "garbage", "none"])
def test_normalize_bus_id(raw, expected):
    assert normalize_bus_id(raw) == expected


def test_index_ranges():
    assert index_ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


# -- recording: what a node answered, replayable elsewhere ---------------------------------


def _facts(src: NvmlSource) -> tuple:
    """Everything discovery asks of a source, in one comparable value."""
    n = src.device_count()
    return (src.driver_version(), n, [src.device(i) for i in range(n)],
            [[src.pcie_relation(a, b) if a != b else None for b in range(n)] for a in range(n)], src.notes())


@pytest.mark.parametrize("name", ["dgx-h100", "dgx1-v100", "h200"])
def test_a_recording_replays_to_the_same_answers(name):
    """Record through RecordingNvml (over a replayed node), replay the record: every answer and note is the same."""
    doc = h200_record() if name == "h200" else record(name)
    if name == "dgx-h100":  # a registered NVLink fabric, so the fabric path is recorded too
        for g in doc["gpus"]:
            g["fabric"] = {"cluster_uuid": "6f0b7c1e-0000-4000-8000-00000000000a", "clique_id": 2, "state": 3,
                           "status": 0}
    live = NvmlSource(lib=RecordedNvml(doc, "node"), record=True)
    live.open()
    before = _facts(live)
    recording = json.loads(json.dumps(live.recording()))  # through JSON, as --record writes it
    again = opened(recording)
    assert _facts(again) == before
    if name == "dgx-h100":
        assert again.device(3).fabric_clique == "6f0b7c1e-0000-4000-8000-00000000000a.2"
        assert len(again.device(0).nvlinks) == 18


def test_a_recording_keeps_errors_and_leaves_missing_functions_out():
    class OldBindings(RecordedNvml):
        nvmlDeviceGetMaxPcieLinkGeneration = None  # an nvidia-ml-py without the function

    doc = record("dgx1-v100")
    del doc["gpus"][0]["uuid"]  # the driver answers FunctionNotFound
    doc["gpus"][1]["nvlinks"][2] = {"link": 2, "err": "NVMLError_GpuIsLost(15)"}
    live = NvmlSource(lib=OldBindings(doc, "node"), record=True)
    live.open()
    before = _facts(live)
    rec = live.recording()
    assert all("max_pcie_gen" not in g for g in rec["gpus"])
    assert rec["gpus"][0]["uuid"] == "ERR NVMLError_FunctionNotFound(13)"
    assert rec["gpus"][1]["nvlinks"][2] == {"link": 2, "err": "ERR NVMLError_GpuIsLost(15)"}
    assert rec["gpus"][0]["mig_mode"] == "ERR NVMLError_NotSupported(3)"
    assert rec["topology"][0][1] == doc["topology"][0][1]
    again = _facts(opened(json.loads(json.dumps(rec))))
    assert again[:4] == before[:4]
    # the one difference: a replay cannot tell a function missing from the bindings from one the driver lacks
    assert [n.replace(" (not in this nvidia-ml-py)", "") for n in before[4]] == again[4]


def test_a_gpu_whose_handle_fails_is_recorded_and_replayed():
    doc = record("dgx1-v100")
    doc["gpus"][5]["handle"] = "ERR NVMLError_GpuIsLost(15)"
    live = NvmlSource(lib=RecordedNvml(doc, "node"), record=True)
    live.open()
    before = _facts(live)
    assert before[2][5].name is None and "NVML nvmlDeviceGetHandleByIndex: GpuIsLost (GPU 5)" in before[4]
    rec = json.loads(json.dumps(live.recording()))
    assert rec["gpus"][5] == {"index": 5, "handle": "ERR NVMLError_GpuIsLost(15)"}
    assert _facts(opened(rec)) == before


def test_a_failed_init_is_recorded():
    live = NvmlSource(lib=RecordedNvml({"gpus": [], "init": "ERR NVMLError_DriverNotLoaded(9)"}, "node"), record=True)
    with pytest.raises(NvmlUnavailable, match="driver is not loaded"):
        live.open()
    assert live.recording() == {"gpus": [], "init": "ERR NVMLError_DriverNotLoaded(9)"}
