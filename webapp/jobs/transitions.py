"""The one place a job's status changes, and its log.

Every status change goes through :func:`job_transition`, which checks the current status under a row
lock; services, leases and publishing all call it.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from webapp.common.exceptions import ServiceConflict

from .models import Job, JobLog

Status = Job.Status

ALLOWED_TRANSITIONS = {
    Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
    # RUNNING -> QUEUED: its worker vanished (lease expired) and the job waits for another run.
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED},
    Status.SUCCEEDED: set(),
    Status.FAILED: set(),
    Status.CANCELLED: set(),
}

#: The longest log line kept; a longer traceback keeps its end, where the error is.
JOB_LOG_CHARS = 10000


class InvalidTransition(ServiceConflict):
    pass


def job_log(job_id: int, message: str, level: str = "info") -> None:
    JobLog.objects.create(job_id=job_id, message=message[:JOB_LOG_CHARS], level=level)


@transaction.atomic
def job_transition(job_id: int, *, to: str, expected: tuple[str, ...] | None = None, **fields) -> Job:
    """Move a job to status ``to``, checking the current status under a row lock.

    ``expected`` narrows the statuses the caller is willing to move from.
    Raises :class:`InvalidTransition` when the move is not allowed. Leaving
    ``running`` always drops the lease.

        >>> job_transition(job.pk, to="cancelled", expected=("queued",))
    """
    job = Job.objects.select_for_update().get(pk=job_id)
    allowed_from = [s for s, targets in ALLOWED_TRANSITIONS.items() if to in targets]
    if job.status not in allowed_from or (expected and job.status not in expected):
        raise InvalidTransition(f"job {job_id} is {job.status}; it cannot become {to}")
    was = job.status
    job.status = to
    now = timezone.now()
    if to == Status.RUNNING:
        job.started_at = now
    if was == Status.RUNNING:
        job.lease_owner, job.lease_expires_at = "", None
    if to in Job.TERMINAL:
        job.finished_at = now
    for key, value in fields.items():
        setattr(job, key, value)
    job.save()
    job_log(job_id, f"status: {to}", level="error" if to == Status.FAILED else "info")
    return job
