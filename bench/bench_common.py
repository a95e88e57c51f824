"""Shared by the benchmark scripts: which Condense a table was measured on."""

from __future__ import annotations

import subprocess
from pathlib import Path


def condense_commit(root: Path) -> str | None:
    """``"<hash> <subject>"`` of the checkout at ``root``, flagged when compression_core has uncommitted changes."""
    try:  # read-only
        commit = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "compression_core"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not commit:
        return None
    return commit + (" (compression_core has uncommitted changes)" if dirty else "")


def cpu_name() -> str:
    """The CPU's model name from lscpu (the platform's machine name where lscpu is missing)."""
    import platform

    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def command_line(script: str) -> str:
    """How this run was started, e.g. ``python bench/x.py --fast`` (no trailing space without arguments)."""
    import sys

    return " ".join(["python", script, *sys.argv[1:]])


def write_report(path: str | Path, *, heading: list[str], details: list[str], module_doc: str, table: str,
                 notes: list[str] = ()) -> None:
    """A benchmark's markdown page: heading lines, a bullet list of details (machine, commit, command), the
    script's docstring past its usage paragraph, notes, then the table."""
    lines = [*heading, "", *(f"- {detail}" for detail in details), "", module_doc.split("\n\n", 2)[2].strip(), ""]
    if notes:
        lines += [*notes, ""]
    Path(path).write_text("\n".join([*lines, table, ""]))
    print(f"wrote {path}")
