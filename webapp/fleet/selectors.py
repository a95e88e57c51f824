"""Reads of the worker registry: which workers are live, and which queue a job should go to.

Example::

    >>> job_queue_for("auto")  # "gpu" while a live worker with a GPU listens on the gpu queue, else "cpu"
    'cpu'
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.timesince import timesince

from .models import Worker

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"


def _live_since(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.CONDENSE_WORKER_TIMEOUT_S)


def worker_list() -> QuerySet[Worker]:
    """Every worker that ever reported, live or not, the most recently seen first."""
    return Worker.objects.order_by("-last_seen_at", "name")


def live_workers() -> QuerySet[Worker]:
    """Workers seen within ``CONDENSE_WORKER_TIMEOUT_S`` seconds that have not stopped."""
    return Worker.objects.filter(stopped_at__isnull=True, last_seen_at__gte=_live_since(timezone.now()))


def worker_state(worker: Worker, *, now: datetime | None = None) -> str:
    """"live", "stopped" (it said so when it shut down) or "stale" (no heartbeat for too long: killed, hung,
    or its machine is gone)."""
    if worker.stopped_at is not None:
        return "stopped"
    return "live" if worker.last_seen_at >= _live_since(now or timezone.now()) else "stale"


def _has_gpu(worker: Worker) -> bool:
    return GPU_QUEUE in (worker.queues or []) and bool((worker.info or {}).get("gpus"))


def gpu_worker_alive() -> bool:
    """True when a live worker listens on the gpu queue and has at least one GPU."""
    return any(_has_gpu(worker) for worker in live_workers())


def _since(moment: datetime) -> str:
    # timesince joins number and unit with a no-break space, which JSON clients would show as \u00a0
    return timesince(moment).replace("\xa0", " ")


def _no_gpu_worker_message() -> str:
    last = max((w for w in Worker.objects.all() if _has_gpu(w)),
               key=lambda w: w.last_seen_at, default=None)
    when = "none has ever run" if last is None else f"the last one was seen {_since(last.last_seen_at)} ago"
    return (f"No GPU worker is running ({when}): choose cpu or auto, "
            "or ask the administrator to start a GPU worker.")


def job_queue_for(device: str) -> str:
    """The queue for a job asking for ``device`` ("auto", "cpu" or "gpu"): "cpu" for cpu; for auto, "gpu"
    while a GPU worker is live, else "cpu"; for gpu, "gpu" while one is live, else ``ValidationError`` naming
    the fix, unless ``settings.CONDENSE_GPU_JOBS_WAIT`` lets the job wait for one."""
    if device == CPU_QUEUE:
        return CPU_QUEUE
    if device == "auto":
        return GPU_QUEUE if gpu_worker_alive() else CPU_QUEUE
    if device != GPU_QUEUE:
        raise ValidationError(f"device must be auto, cpu or gpu, got {device!r}.")
    if settings.CONDENSE_GPU_JOBS_WAIT or gpu_worker_alive():
        return GPU_QUEUE
    raise ValidationError(_no_gpu_worker_message())
