"""Per-run scratch folders: every file a job run writes locally lives in one, removed in every outcome.

A run's folder is ``<tmp>/condense-jobs/job-<id>-run-<attempt>-pid-<pid>``. A run that ends (success,
failure, cancel) removes its folder; a run whose process was killed cannot, so each sweep and each
new run remove the folders of processes on this host that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_NAME = re.compile(r"^job-\d+-run-\d+-pid-(\d+)$")


def scratch_root() -> Path:
    return Path(tempfile.gettempdir()) / "condense-jobs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_scratch(root: Path | None = None) -> int:
    """Remove the scratch folders whose process is gone; returns how many."""
    root = root or scratch_root()
    removed = 0
    if not root.is_dir():
        return 0
    for folder in root.iterdir():
        match = _NAME.match(folder.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def run_scratch(job_id: int, attempt: int) -> Iterator[Path]:
    """A fresh folder for one run of a job; Python's temporary files go inside it during the run.

        >>> with run_scratch(7, 1) as folder:
        ...     (folder / "out").mkdir()
    """
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_orphaned_scratch(root)
    folder = root / f"job-{job_id}-run-{attempt}-pid-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)  # a pid reused from an earlier run of the same job
    (folder / "tmp").mkdir(parents=True)
    # The engine's own temporary folders (exports, ONNX checks) then die with the run's folder, even
    # when the process is killed: one job runs at a time in a worker process.
    saved, tempfile.tempdir = tempfile.tempdir, str(folder / "tmp")
    try:
        yield folder
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(folder, ignore_errors=True)
