"""Writes to the worker registry: a worker's heartbeat and its clean shutdown.

Example (a worker process, every few seconds)::

    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=worker_report(), started=first_beat)
"""

from __future__ import annotations

from django.utils import timezone

from .models import Worker


def worker_heartbeat(*, name: str, queues: list[str], info: dict, started: bool = False) -> Worker:
    """Record that worker ``name`` is alive now, listening on ``queues``, on the machine ``info`` describes.
    ``started``: the first beat of a worker process, which (re)sets ``started_at``. Clears ``stopped_at``."""
    now = timezone.now()
    fields = {"queues": list(queues), "info": info, "last_seen_at": now, "stopped_at": None}
    if started:
        fields["started_at"] = now
    worker, _ = Worker.objects.update_or_create(name=name, defaults=fields, create_defaults={**fields,
                                                                                              "started_at": now})
    return worker


def worker_stopped(*, name: str) -> None:
    """Worker ``name`` shut down cleanly: it is no longer live, whatever its last beat."""
    Worker.objects.filter(name=name).update(stopped_at=timezone.now())
