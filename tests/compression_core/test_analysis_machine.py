"""worker_report: what a worker's heartbeat says about its machine."""

import json
import os

import pytest
import torch

from compression_core.analysis import worker_report
from compression_core.analysis.nvml import _visible


def test_the_report_describes_cpu_memory_versions_and_load():
    report = worker_report()
    assert set(report) == {"cpu", "memory", "gpus", "versions", "load"}
    assert report["cpu"]["model"] and 1 <= report["cpu"]["available_cores"] <= report["cpu"]["logical_cores"]
    assert 0 < report["memory"]["available_bytes"] <= report["memory"]["total_bytes"]
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["python"].count(".") == 2
    assert report["versions"]["cuda"] == torch.version.cuda
    assert report["load"]["cpu_count"] == os.cpu_count() and report["load"]["loadavg_1m"] >= 0
    assert json.loads(json.dumps(report)) == report


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the list is not empty")
def test_no_gpu_is_an_empty_list():
    assert worker_report()["gpus"] == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_each_gpu_has_a_name_memory_and_capability():
    gpus = worker_report()["gpus"]
    assert [gpu["index"] for gpu in gpus] == list(range(torch.cuda.device_count()))
    first = torch.cuda.get_device_properties(0)
    assert gpus[0]["name"] == first.name and gpus[0]["capability"] == f"{first.major}.{first.minor}"
    assert gpus[0]["memory_bytes"] == first.total_memory


def test_cuda_visible_devices_chooses_and_renumbers_the_gpus(monkeypatch):
    gpus = [{"index": i, "name": f"gpu{i}", "memory_bytes": 1, "capability": "9.0"} for i in range(3)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [(gpu["index"], gpu["name"]) for gpu in _visible(gpus)] == [(0, "gpu2"), (1, "gpu0")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _visible(gpus) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _visible(gpus) == gpus
