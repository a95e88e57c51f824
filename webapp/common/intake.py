"""Uploads are stored at once and inspected in a worker: the status every upload carries, the budget and
limits of its inspection, the message that asks a worker for it, and the claim that keeps two workers from
inspecting one upload.

A web request never parses a model or decodes an image: it checks the declared fields and the size,
stores the bytes, answers with status ``inspecting`` and publishes a task on the ``inspect`` queue. The
worker inspects in a child process under :func:`intake_budget` (``compression_core.jobs.sandbox``) and
sets ``ready`` or ``rejected`` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from compression_core.io import SETTING_NAMES, IntakeLimits
from compression_core.jobs.sandbox import IntakeBudget

from workers.celery_app import publish_task, queue_length

logger = logging.getLogger(__name__)

#: The Celery queue inspections run on: workers for it answer in seconds, whatever jobs the others run.
INSPECT_QUEUE = "inspect"
#: Inspections an upload gets: a second worker takes over from one that died; after that it is rejected.
MAX_INSPECT_ATTEMPTS = 2


class IntakeStatus(models.TextChoices):
    INSPECTING = "inspecting", "Inspecting"
    READY = "ready", "Ready"
    REJECTED = "rejected", "Rejected"


class InspectedUpload(models.Model):
    """What models and datasets share: where their inspection stands."""

    status = models.CharField(max_length=16, choices=IntakeStatus.choices, default=IntakeStatus.INSPECTING)
    status_reason = models.TextField(blank=True)
    inspect_started_at = models.DateTimeField(null=True, blank=True)
    inspect_attempts = models.PositiveSmallIntegerField(default=0)
    inspect_published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


def intake_budget() -> IntakeBudget:
    """The operator's budget for one inspection (``CONDENSE_INSPECT_*``)."""
    return IntakeBudget(
        memory_mb=settings.CONDENSE_INSPECT_MEMORY_MB, cpu_s=settings.CONDENSE_INSPECT_CPU_S,
        wall_s=settings.CONDENSE_INSPECT_WALL_S, file_mb=settings.CONDENSE_INSPECT_FILE_MB,
        threads=settings.CONDENSE_INSPECT_THREADS, isolated=settings.CONDENSE_INSPECT_ISOLATED,
    )


def intake_limits() -> dict[str, Any]:
    """The caps the engine checks before it materialises anything: the fields of ``IntakeLimits`` from their
    ``CONDENSE_*`` settings (plain values, for the child process and job recipes)."""
    return asdict(IntakeLimits(**{field: getattr(settings, name) for field, name in SETTING_NAMES.items()}))


def inspection_enqueue(model_class: type[InspectedUpload], task_name: str, pk: int) -> None:
    """Publish the inspection once the row that holds the upload is committed (a worker must find it)."""
    transaction.on_commit(lambda: inspection_publish(model_class, task_name, pk))


def inspection_publish(model_class: type[InspectedUpload], task_name: str, pk: int) -> bool:
    """Ask a worker on the ``inspect`` queue to inspect upload ``pk``; False (and the upload stays
    ``inspecting``, retried by the sweep) when the broker does not take the message."""
    try:
        publish_task(task_name, [pk], queue=INSPECT_QUEUE, time_limit=settings.CONDENSE_INSPECT_WALL_S + 120)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the upload for the sweep
        logger.warning("could not publish the inspection of %s %s: %s", model_class.__name__, pk, exc)
        return False
    model_class.objects.filter(pk=pk).update(inspect_published_at=timezone.now())
    return True


def inspection_claim(model_class: type[InspectedUpload], pk: int) -> bool:
    """Take upload ``pk`` for inspection: True for exactly one caller while it is ``inspecting`` and nobody
    holds it (or its holder has been silent past the wall-clock budget: that worker died)."""
    stale = timezone.now() - timedelta(seconds=settings.CONDENSE_INSPECT_WALL_S + 60)
    return bool(model_class.objects.filter(
        Q(inspect_started_at=None) | Q(inspect_started_at__lt=stale), pk=pk, status=IntakeStatus.INSPECTING,
    ).update(inspect_started_at=timezone.now(), inspect_attempts=F("inspect_attempts") + 1))


def inspection_finish(model_class: type[InspectedUpload], pk: int, *, status: str, reason: str = "",
                      **fields) -> bool:
    """Set the outcome of an inspection this caller claimed; False when the upload is no longer inspecting
    (deleted meanwhile, or a worker that took over finished first)."""
    return bool(model_class.objects.filter(pk=pk, status=IntakeStatus.INSPECTING).update(
        status=status, status_reason=reason[:4000], **fields))


def stalled_inspections(model_class: type[InspectedUpload]) -> tuple[list[int], list[int]]:
    """(to publish again, to reject): uploads whose message was never sent or is gone from an empty queue,
    and uploads whose workers died mid-inspection ``MAX_INSPECT_ATTEMPTS`` times."""
    now = timezone.now()
    waiting = now - timedelta(seconds=settings.CONDENSE_REPUBLISH_S)
    held_too_long = now - timedelta(seconds=settings.CONDENSE_INSPECT_WALL_S + 60)
    inspecting = model_class.objects.filter(status=IntakeStatus.INSPECTING)
    unsent = list(inspecting.filter(inspect_started_at=None, inspect_published_at=None,
                                    created_at__lt=waiting).values_list("pk", flat=True))
    lost = inspecting.filter(Q(inspect_started_at=None, inspect_published_at__lt=waiting)
                             | Q(inspect_started_at__lt=held_too_long))
    republish, reject = unsent, []
    queue_empty = None
    for pk, attempts, started in lost.values_list("pk", "inspect_attempts", "inspect_started_at"):
        if attempts >= MAX_INSPECT_ATTEMPTS:
            reject.append(pk)
            continue
        if started is None:
            if queue_empty is None:
                queue_empty = queue_length(INSPECT_QUEUE) == 0
            if not queue_empty:  # its message may still be waiting there
                continue
        republish.append(pk)
    return republish, reject


#: Why an upload whose inspecting workers died twice is rejected.
STALLED_REASON = ("the inspection stopped twice without an answer (its worker died, perhaps out of memory); "
                  "check the file, then upload it again")


def inspection_sweep(model_class: type[InspectedUpload], task_name: str,
                     reject: Callable[[InspectedUpload, str], object]) -> tuple[list[int], list[int]]:
    """Publish again the inspections whose message was lost; ``reject`` the uploads whose inspecting worker
    died ``MAX_INSPECT_ATTEMPTS`` times. Returns (republished, rejected) ids."""
    republish, rejected = stalled_inspections(model_class)
    for upload in model_class.objects.filter(pk__in=rejected):
        reject(upload, STALLED_REASON)
    for pk in republish:
        inspection_publish(model_class, task_name, pk)
    return republish, rejected
