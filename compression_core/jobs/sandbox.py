"""Run an upload's inspection in a child process under a memory, CPU-time, file-size and wall-clock budget.

A hostile file (a graph that builds a 20000 x 20000 constant, a zip bomb, a thousand large PNGs) can at worst
use up the budget: the child is refused more memory (``RLIMIT_DATA``), stopped by the kernel past its CPU
time (``RLIMIT_CPU``), refused larger files (``RLIMIT_FSIZE``) and killed past the wall clock; the process
that asked (a Celery worker) only reads one line of JSON back.

Example::

    >>> request = IntakeRequest(kind="dataset", workdir="/tmp/i", path="/tmp/i/digits.npz")
    >>> intake_in_sandbox(request, IntakeBudget(memory_mb=1024, cpu_s=60))["summary"]["samples"]
    120
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch

from .intake import IntakeRequest, intake_run

#: Phrases of the allocation failures torch, onnxruntime and the C++ runtime raise instead of MemoryError.
_ALLOCATION_FAILURES = ("can't allocate memory", "not enough memory", "bad_alloc", "out of memory",
                        "failed to allocate")


@dataclass(frozen=True)
class IntakeBudget:
    """What one inspection may use. ``memory_mb`` is on top of the libraries the child loads (about 0.9 GB
    of torch and onnxruntime); ``isolated=False`` runs the inspection in the calling process with no budget
    (development and fast tests only)."""

    memory_mb: int = 3072
    cpu_s: int = 300
    wall_s: int = 600
    file_mb: int = 4096
    threads: int = 1
    isolated: bool = True


class IntakeRefused(ValueError):
    """The upload cannot be used; the message is the sentence to show its owner."""


def intake_in_sandbox(request: IntakeRequest, budget: IntakeBudget) -> dict[str, Any]:
    """:func:`~.intake.intake_run` in a child process under ``budget``; raises :class:`IntakeRefused` with a
    sentence when the upload is refused or the budget runs out."""
    if not budget.isolated:
        try:
            return intake_run(request)
        except Exception as exc:  # noqa: BLE001 - the same sentences as the isolated path
            raise IntakeRefused(_sentence(exc, request.kind, budget)) from exc
    command = [sys.executable, "-m", "compression_core", "intake", "--memory-mb", str(budget.memory_mb),
               "--cpu-s", str(budget.cpu_s), "--file-mb", str(budget.file_mb), "--threads", str(budget.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(budget.threads), "MKL_NUM_THREADS": str(budget.threads),
           "CUDA_VISIBLE_DEVICES": ""}  # inspection is CPU work: it must not hold a GPU a job is using
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, cwd=request.workdir, start_new_session=True, text=True)
    try:
        out, err = child.communicate(json.dumps(request.to_dict()), timeout=budget.wall_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise IntakeRefused(f"the inspection took longer than {budget.wall_s} s and was stopped "
                            "(CONDENSE_INSPECT_WALL_S)") from None
    answer = _last_json_line(out)
    if child.returncode == 0 and answer and answer.get("ok"):
        return answer["result"]
    if answer and "error" in answer:
        raise IntakeRefused(answer["error"])
    raise IntakeRefused(_death_sentence(child.returncode, budget, err))


def _last_json_line(out: str) -> dict | None:
    for line in reversed(out.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def _death_sentence(returncode: int, budget: IntakeBudget, stderr: str) -> str:
    if returncode == -signal.SIGXCPU:
        return f"the inspection used more than {budget.cpu_s} s of CPU time and was stopped (CONDENSE_INSPECT_CPU_S)"
    if returncode == -signal.SIGXFSZ:
        return (f"the inspection tried to write a file larger than {budget.file_mb} MB and was stopped "
                "(CONDENSE_INSPECT_FILE_MB)")
    if returncode in (-signal.SIGKILL, -signal.SIGABRT, -signal.SIGSEGV) or "MemoryError" in stderr:
        return (f"the inspection needed more than its {budget.memory_mb} MB of memory and was stopped "
                "(CONDENSE_INSPECT_MEMORY_MB)")
    tail = stderr.strip().splitlines()[-1:] or [f"exit status {returncode}"]
    return f"the inspection process failed: {tail[0][:300]}"


def _sentence(exc: BaseException, kind: str, budget: IntakeBudget) -> str:
    text = str(exc)
    if isinstance(exc, MemoryError) or any(phrase in text.lower() for phrase in _ALLOCATION_FAILURES):
        return (f"the inspection needed more than its {budget.memory_mb} MB of memory and was stopped "
                "(CONDENSE_INSPECT_MEMORY_MB)")
    if isinstance(exc, ValueError):
        return text
    what = "model could not be loaded" if kind == "model" else "dataset could not be read"
    return f"the {what}: {type(exc).__name__}: {text[:500]}"


def _apply_limits(budget: IntakeBudget) -> None:
    megabyte = 1024 * 1024
    data_now = _data_segment_bytes()
    resource.setrlimit(resource.RLIMIT_DATA, (data_now + budget.memory_mb * megabyte,) * 2)
    # RLIMIT_CPU counts the whole process: the budget starts after the imports already spent.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(usage.ru_utime + usage.ru_stime) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (spent + budget.cpu_s, spent + budget.cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (budget.file_mb * megabyte,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _die_with_parent()


def _data_segment_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _die_with_parent() -> None:
    # A worker killed mid-inspection must not leave its child running on with the budget.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def intake_child(memory_mb: int, cpu_s: int, file_mb: int, threads: int) -> int:
    """The child's side (``python -m compression_core intake``): the request as JSON on stdin, one JSON line
    on stdout (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": sentence}``)."""
    budget = IntakeBudget(memory_mb=memory_mb, cpu_s=cpu_s, file_mb=file_mb, threads=threads)
    torch.set_num_threads(threads)
    request = IntakeRequest.from_dict(json.loads(sys.stdin.read()))
    _apply_limits(budget)
    try:
        answer = {"ok": True, "result": intake_run(request)}
    except Exception as exc:  # noqa: BLE001 - every failure is a sentence for the uploader
        answer = {"ok": False, "error": _sentence(exc, request.kind, budget)}
    sys.stdout.write("\n" + json.dumps(answer, default=str) + "\n")
    sys.stdout.flush()
    return 0
