"""The NVIDIA GPUs of this machine, read through NVML (the driver's management library) with ctypes.

Why not ``torch.cuda``: asking the CUDA runtime anything (even ``torch.cuda.is_available()``) initialises
the driver in the asking process, and a Celery worker's pool processes forked after that cannot use CUDA.
A worker's heartbeat runs in the parent process, so it reads the GPUs through NVML, which does not.

Example::

    >>> nvml_gpus()  # [] without an NVIDIA driver
    []
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

NVML_SUCCESS = 0
_NAME_LENGTH = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _load() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None


def _device(nvml: ctypes.CDLL, index: int) -> dict[str, Any] | None:
    handle = ctypes.c_void_p()
    if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != NVML_SUCCESS:
        return None
    name = ctypes.create_string_buffer(_NAME_LENGTH)
    memory = _Memory()
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if (nvml.nvmlDeviceGetName(handle, name, ctypes.c_uint(_NAME_LENGTH)) != NVML_SUCCESS
            or nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != NVML_SUCCESS
            or nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor))
            != NVML_SUCCESS):
        return None
    return {"index": index, "name": name.value.decode(errors="replace"), "memory_bytes": int(memory.total),
            "capability": f"{major.value}.{minor.value}"}


def _visible(gpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` leaves to this process (NVML ignores it), indexed as CUDA will index
    them. Only the list-of-indices form is applied; UUIDs keep the whole list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus
    wanted = [item.strip() for item in visible.split(",") if item.strip()]
    if not wanted or wanted[0] == "-1":
        return []
    if not all(item.isdigit() for item in wanted):
        return gpus
    by_index = {gpu["index"]: gpu for gpu in gpus}
    chosen = []
    for item in wanted:
        if int(item) not in by_index:
            break  # CUDA stops at the first index that does not exist
        chosen.append({**by_index[int(item)], "index": len(chosen)})
    return chosen


def nvml_gpus() -> list[dict[str, Any]]:
    """Each GPU this process may use (``CUDA_VISIBLE_DEVICES`` applied): index, name, total memory in bytes and
    CUDA compute capability ("9.0"); [] without the library or when it fails (no driver, no device)."""
    nvml = _load()
    if nvml is None or nvml.nvmlInit_v2() != NVML_SUCCESS:
        return []
    try:
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != NVML_SUCCESS:
            return []
        return _visible([gpu for index in range(count.value) if (gpu := _device(nvml, index)) is not None])
    finally:
        nvml.nvmlShutdown()
