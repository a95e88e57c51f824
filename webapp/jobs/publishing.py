"""Putting a job's message on the broker: bounded in time, retried by the sweep, never trusted alone.

The database is the source of truth: a queued job whose message could not be sent, or was lost (a
broker restarted without persistence), is sent again by the sweep (``webapp/jobs/sweep.py``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from workers.celery_app import publish_task

from .models import Job
from .transitions import InvalidTransition, job_log, job_transition

logger = logging.getLogger(__name__)
Status = Job.Status

#: The Celery task that runs a job (``tasks.run_compression_job``), published by name.
RUN_JOB_TASK = "condense.run_compression_job"


def job_time_limits(job: Job) -> tuple[int, int]:
    """(soft, hard) seconds: at the soft limit the job stops at its next step; at the hard limit
    (prefork workers) Celery kills the process running it."""
    soft = job.time_limit_s or settings.CONDENSE_JOB_TIME_LIMIT_S
    return soft, soft + settings.CONDENSE_JOB_HARD_LIMIT_GRACE_S


def send_job_message(job_id: int, queue: str, *, hard_time_limit: int) -> None:
    """Publish the job's task message on ``queue``; raises when the broker does not take it in time."""
    publish_task(RUN_JOB_TASK, [job_id], queue=queue, time_limit=hard_time_limit)


def _waiting_since(job: Job):
    return max(filter(None, (job.created_at, job.heartbeat_at)))


def job_publish(job_id: int) -> bool:
    """Send a queued job's message. On failure the job stays queued, says so in its stage and is
    retried by the sweep; after ``CONDENSE_PUBLISH_GIVE_UP_S`` of failures it fails with a sentence.

        >>> job_publish(job.pk)
        True
    """
    job = Job.objects.filter(pk=job_id, status=Status.QUEUED).first()
    if job is None:
        return False
    try:
        send_job_message(job_id, job.queue, hard_time_limit=job_time_limits(job)[1])
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the job for the sweep, with the reason
        logger.warning("could not publish job %s: %s", job_id, exc)
        job_log(job_id, f"could not publish the job on the task queue: {type(exc).__name__}: {exc}", level="error")
        if timezone.now() - _waiting_since(job) > timedelta(seconds=settings.CONDENSE_PUBLISH_GIVE_UP_S):
            try:
                job_transition(job_id, to=Status.FAILED, expected=(Status.QUEUED,), stage="failed",
                               error="the task queue could not be reached for "
                               f"{settings.CONDENSE_PUBLISH_GIVE_UP_S // 60} minutes, so no worker received "
                               "this job; submit it again, and if this keeps happening tell the administrator")
            except InvalidTransition:
                pass
        else:
            Job.objects.filter(pk=job_id, status=Status.QUEUED).update(
                stage="waiting for the task queue, which could not be reached; retried automatically every "
                f"{settings.CONDENSE_SWEEP_S} s")
        return False
    waiting = "waiting for a GPU worker" if job.queue == "gpu" else "waiting for a worker"
    Job.objects.filter(pk=job_id, status=Status.QUEUED).update(
        published_at=timezone.now(), stage=job.stage if job.stage.startswith("waiting to run again") else waiting)
    return True
