"""The machine a latency was measured on: CPU, cores, threads, library versions, GPU, load.

A latency means little without its machine: the job page prints this next to every timing.

Example::

    >>> info = machine_info(threads=2)
    >>> sorted(info)[:4]
    ['available_cores', 'cpu', 'gpu', 'load_end']
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import torch

from .timing import available_cores, load_average


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
