"""Servers and workers the tests start die with the test process, even when it is killed."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the kernel kills the child when pytest dies (Linux).

    Fixture teardown does not run when pytest is killed; without this, a Celery worker or a SeaweedFS
    server would outlive it and hold ports, files and a broker connection.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not glibc Linux: the fixtures' own teardown still stops them
        pass
