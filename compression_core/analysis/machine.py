"""The machine a latency was measured on: CPU, cores, threads, library versions, GPU, load.

A latency means little without its machine: the job page prints this next to every timing.

Example::

    >>> info = machine_info(threads=2)
    >>> sorted(info)[:4]
    ['available_cores', 'cpu', 'gpu', 'load_end']
    >>> sorted(worker_report())  # what a worker's heartbeat reports every few seconds
    ['cpu', 'gpus', 'load', 'memory', 'versions']
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from typing import Any

import torch

from .nvml import nvml_gpus
from .timing import available_cores, load_average


@functools.cache
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, logical cores, cores available to this process, the ``threads`` the timings use, torch and
    onnxruntime versions, the GPU's name (None without CUDA) and the 1-minute load average now (the caller
    sets ``load_end`` when the measurement ends)."""
    onnxruntime = _version("onnxruntime") or _version("onnxruntime-gpu")
    load = load_average()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "available_cores": available_cores(),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_start": load,
        "load_end": load,
    }


@functools.cache
def _versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu")}


def _memory() -> dict[str, int]:
    """Total and available memory in bytes, from /proc/meminfo (sysconf elsewhere)."""
    fields = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    page = os.sysconf("SC_PAGE_SIZE")
    return {"total_bytes": fields.get("MemTotal") or os.sysconf("SC_PHYS_PAGES") * page,
            "available_bytes": fields.get("MemAvailable") or os.sysconf("SC_AVPHYS_PAGES") * page}


@functools.cache
def _gpus_before_cuda() -> tuple[dict[str, Any], ...]:
    return tuple(nvml_gpus()) if torch.version.cuda else ()


def _gpus() -> list[dict[str, Any]]:
    """The GPUs torch can use here. A process that already uses CUDA asks torch; any other asks NVML, since the
    CUDA runtime's first question would keep the processes it forks later off the GPU (see :mod:`.nvml`)."""
    if torch.cuda.is_initialized():
        gpus = []
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            gpus.append({"index": index, "name": properties.name, "memory_bytes": int(properties.total_memory),
                         "capability": f"{properties.major}.{properties.minor}"})
        return gpus
    # The devices of a machine do not change while a worker runs: NVML is asked once per process.
    return [dict(gpu) for gpu in _gpus_before_cuda()]


def worker_report() -> dict[str, Any]:
    """What a worker tells the registry on each heartbeat (plain, JSON-ready data): its CPU, memory, GPUs
    (``[]`` without one), library versions and load. Cheap enough for every few seconds: the CPU model,
    versions and GPU list are read once per process.

    Example::

        >>> report = worker_report()
        >>> report["gpus"], report["versions"]["torch"] == torch.__version__
        ([], True)
    """
    try:
        load_1m, load_5m, _ = os.getloadavg()
    except OSError:
        load_1m = load_5m = 0.0
    logical_cores = os.cpu_count() or 1
    return {
        "cpu": {"model": cpu_model(), "logical_cores": logical_cores, "available_cores": available_cores()},
        "memory": _memory(),
        "gpus": _gpus(),
        "versions": dict(_versions()),
        "load": {"loadavg_1m": round(load_1m, 2), "loadavg_5m": round(load_5m, 2), "cpu_count": logical_cores},
    }
