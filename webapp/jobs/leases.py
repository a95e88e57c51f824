"""Who runs a job: a lease in the database, renewed by a heartbeat, never the broker's word.

A worker process that claims a job holds its lease (``lease_owner``, ``lease_expires_at``) and renews
it every ``CONDENSE_HEARTBEAT_S`` while the job runs. A task delivered again (Redis redelivers a
message after its visibility timeout, a worker restart replays unacknowledged ones) finds the lease
live and does nothing; only an expired lease (or one held by a process known to be dead) is taken
over. Each run counts an attempt; past ``CONDENSE_JOB_MAX_ATTEMPTS`` the job fails with the history.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from compression_core.jobs import JobCancelled

from .models import Job
from .publishing import job_publish
from .transitions import job_log, job_transition

logger = logging.getLogger(__name__)
Status = Job.Status


class LeaseLost(JobCancelled):
    """The job's lease is no longer ours (it expired and another run took the job over): stop quietly."""


@dataclass(frozen=True)
class Lease:
    """The claim one process holds on a running job."""

    job_id: int
    owner: str
    attempt: int
    worker: str


def _owner_token(worker: str) -> str:
    # host and pid let a sweeper on the same host tell a dead holder at once, without waiting for expiry.
    return f"{worker}|{socket.gethostname()}|{os.getpid()}|{uuid.uuid4().hex[:8]}"


def _holder_is_dead_here(owner: str) -> bool:
    """True when ``owner`` is a process on this host that no longer exists."""
    parts = owner.split("|")
    if len(parts) != 4 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, owned by another user
        return False
    return False


def _lease_until(now=None):
    return (now or timezone.now()) + timedelta(seconds=settings.CONDENSE_LEASE_S)


def _lease_is_live(job: Job, now) -> bool:
    if not job.lease_owner or job.lease_expires_at is None or job.lease_expires_at <= now:
        return False
    return not _holder_is_dead_here(job.lease_owner)


def _holder_name(job: Job) -> str:
    return job.lease_owner.split("|", 1)[0] or job.worker or "an unknown worker"


def _last_seen(job: Job):
    return job.heartbeat_at or job.started_at


def _history_entry(job: Job, reason: str) -> dict:
    seen = _last_seen(job)
    return {
        "attempt": job.attempts,
        "worker": _holder_name(job),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "last_seen_at": seen.isoformat() if seen else None,
        "stage": job.stage,
        "reason": reason,
    }


def _gave_up_message(job: Job, entry: dict) -> str:
    seen = _last_seen(job)
    when = f", last seen at {seen:%Y-%m-%d %H:%M:%S} UTC" if seen else ""
    runs = "once" if job.attempts == 1 else f"{job.attempts} times"
    return (f"the worker stopped {runs} while running this job (last: {entry['worker']}{when}, "
            f"during '{entry['stage'] or 'start'}': {entry['reason']}); probably out of memory: try a smaller "
            "training batch_size, a smaller input shape or model, or ask the administrator for a worker with "
            "more memory; the model and recipe are kept, so the job can be submitted again")


def _end_lost_run(job: Job, reason: str) -> str:
    """Record the run that stopped; fail the job at the attempt cap. Row locked by the caller.

    Returns ``"failed"`` or ``"cancelled"`` (the job ended) or ``"retry"`` (the caller re-queues or takes
    the job over).
    """
    entry = _history_entry(job, reason)
    job.attempt_history = [*job.attempt_history, entry]
    job.save(update_fields=["attempt_history"])
    job_log(job.pk, f"run {job.attempts} ended without finishing: {entry['worker']}: {reason}", level="warning")
    if job.cancel_requested:  # its user asked to stop it: no reason to run it again
        job_transition(job.pk, to=Status.CANCELLED, expected=(Status.RUNNING,), stage="cancelled")
        return "cancelled"
    if job.attempts >= settings.CONDENSE_JOB_MAX_ATTEMPTS:
        job_transition(job.pk, to=Status.FAILED, expected=(Status.RUNNING,), stage="failed",
                       error=_gave_up_message(job, entry))
        return "failed"
    return "retry"


def job_claim(job_id: int, task_id: str, worker: str) -> tuple[Job, Lease] | None:
    """Take the job for this process, or return ``None`` when it is not ours to run.

    A queued job is claimed; a running job is taken over only when its lease expired or its holder
    is a dead process on this host; a live lease means somebody is on it and the task does nothing.

        >>> claimed = job_claim(job.pk, task_id="t1", worker="cpu1@host")
    """
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            logger.warning("job %s no longer exists", job_id)
            return None
        if job.status == Status.RUNNING:
            if _lease_is_live(job, now):
                logger.info("job %s is held by %s until %s; task %s does nothing", job_id, job.lease_owner,
                            job.lease_expires_at, task_id)
                return None
            reason = f"its lease expired at {job.lease_expires_at:%H:%M:%S} UTC with no heartbeat" \
                if job.lease_expires_at else "it held no lease"
            if _end_lost_run(job, reason) != "retry":
                return None
            job.refresh_from_db()
            stage = f"restarting: {_holder_name(job)} stopped ({reason})"
        elif job.status == Status.QUEUED:
            stage = "starting" if job.attempts == 0 else f"restarting after {job.attempts} unfinished run(s)"
        else:
            logger.info("job %s is %s; task %s has nothing to do", job_id, job.status, task_id)
            return None
        lease = Lease(job_id, _owner_token(worker), job.attempts + 1, worker)
        fields = dict(task_id=task_id, worker=worker, attempts=lease.attempt, progress=0.0, progress_detail={},
                      stage=stage, lease_owner=lease.owner, lease_expires_at=_lease_until(now), heartbeat_at=now)
        if job.status == Status.QUEUED:
            job = job_transition(job_id, to=Status.RUNNING, **fields)
        else:
            for key, value in fields.items():
                setattr(job, key, value)
            job.started_at = now
            job.save()
            job_log(job_id, stage, level="warning")
        return job, lease


def lease_renew(lease: Lease, **fields) -> bool:
    """Extend the lease (and write ``fields``: ``progress``, ``stage``, ``progress_detail``); False when it is no
    longer ours."""
    now = timezone.now()
    return bool(Job.objects.filter(pk=lease.job_id, status=Status.RUNNING, lease_owner=lease.owner).update(
        lease_expires_at=_lease_until(now), heartbeat_at=now, **fields))


class LeaseKeeper:
    """A thread renewing a lease every ``CONDENSE_HEARTBEAT_S`` while a job runs in this process.

    Between progress reports (which renew too) a long step, a big export or a slow epoch, must not
    look like a dead worker. ``CONDENSE_HEARTBEAT_S = 0`` leaves renewal to the progress reports alone
    (tests that run a job inside a test transaction, which another connection cannot see).
    """

    def __init__(self, lease: Lease):
        self.lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LeaseKeeper":
        if settings.CONDENSE_HEARTBEAT_S > 0:
            self._thread = threading.Thread(target=self._beat, name=f"lease-job-{self.lease.job_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(settings.CONDENSE_HEARTBEAT_S):
                try:
                    if not lease_renew(self.lease):
                        return  # taken over or finished: the job's own thread finds out at its next report
                except Exception:  # noqa: BLE001 - a database blip must not kill the heartbeat; the next beat retries
                    logger.exception("could not renew the lease of job %s", self.lease.job_id)
                    close_old_connections()
        finally:
            connection.close()


def job_lease_lapsed(job_id: int, *, reason: str, holder: str | None = None) -> str | None:
    """Deal with a running job whose worker stopped: re-queue it, or fail it at the attempt cap.

    ``holder`` (a lease owner) forces the lapse although the lease has not expired yet, when the
    caller knows that holder is dead (the pool child was killed). Returns ``"failed"``, ``"cancelled"``,
    ``"queued"`` or ``None`` when the job was not (or no longer) lapsed.
    """
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.RUNNING:
            return None
        if holder is not None and job.lease_owner != holder:
            return None
        if holder is None and _lease_is_live(job, now):
            return None
        ended = _end_lost_run(job, reason)
        if ended != "retry":
            return ended
        job_transition(job_id, to=Status.QUEUED, expected=(Status.RUNNING,), progress=0.0, progress_detail={},
                       published_at=None, stage=f"waiting to run again: {_holder_name(job)} stopped ({reason})")
        transaction.on_commit(lambda: job_publish(job_id))  # if this fails, the sweep sends it later
        return "queued"


def expired_running_jobs(now=None) -> list[tuple[int, str]]:
    """(job id, reason) of running jobs whose lease expired."""
    now = now or timezone.now()
    expired = Job.objects.filter(status=Status.RUNNING).exclude(lease_expires_at__gt=now)
    found = []
    for job in expired.only("pk", "lease_owner", "worker", "heartbeat_at"):
        name, seen = _holder_name(job), job.heartbeat_at
        if _holder_is_dead_here(job.lease_owner):
            _, host, pid, _ = job.lease_owner.split("|")
            reason = f"its process {pid} on {host} is gone (killed, e.g. by the out-of-memory killer)"
        elif seen:
            reason = f"no heartbeat from {name} since {seen:%H:%M:%S} UTC"
        else:
            reason = f"{name} held no lease"
        found.append((job.pk, reason))
    return found


def job_lease_rebind(*, worker: str, started_before) -> int:
    """Expire now every lease a worker node took before it (re)started at ``started_before``: nothing of
    that former life can still be running. Runs claimed since are the new node's own, live (its pool may
    take a job before its beat thread gets here). Returns how many were expired (the sweep re-queues or
    fails them).

        >>> job_lease_rebind(worker="cpu1@host", started_before=controller.startup_time)
        1
    """
    return Job.objects.filter(status=Status.RUNNING, worker=worker, started_at__lt=started_before).exclude(
        lease_expires_at=None).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def job_worker_lost(job_id: int, *, task_id: str, reason: str) -> str | None:
    """The process running ``task_id`` died (Celery saw its pool child exit): lapse the lease now
    rather than at its expiry. Acts only while that dead process still holds the job."""
    job = Job.objects.filter(pk=job_id, status=Status.RUNNING, task_id=task_id).only("lease_owner").first()
    if job is None or not _holder_is_dead_here(job.lease_owner):
        return None
    return job_lease_lapsed(job_id, reason=reason, holder=job.lease_owner)
