"""The periodic sweep every worker runs: the database is the source of truth, the broker a hint.

- A running job whose lease expired (its worker was killed, lost its network, or its host died,
  whatever the worker's name) is re-queued, or failed at the attempt cap, with the worker named.
- A queued job whose message cannot be on the broker any more (never sent, or sent long ago while
  its queue is empty: a broker restarted without persistence) is sent again.
- Scratch folders of job runs whose process died on this host are removed.

Several workers sweeping at once is safe: each change re-checks the job under a row lock, and a
message sent twice is harmless (the second delivery finds the job taken).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from workers.celery_app import queue_length

from .leases import expired_running_jobs, job_lease_lapsed
from .models import Job
from .publishing import job_publish
from .scratch import remove_orphaned_scratch

logger = logging.getLogger(__name__)
Status = Job.Status


@dataclass
class SweepReport:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    republished: list[int] = field(default_factory=list)
    scratch_removed: int = 0


def _lost_messages(now) -> list[int]:
    """Queued jobs whose message is not waiting on the broker: never sent, or sent long enough ago
    that an empty queue means it is gone."""
    stale = now - timedelta(seconds=settings.CONDENSE_REPUBLISH_S)
    # Oldest first: the messages go back in the order the jobs were submitted, not newest first.
    candidates = Job.objects.filter(Q(published_at=None) | Q(published_at__lt=stale), status=Status.QUEUED).order_by(
        "created_at", "pk")
    lost, lengths = [], {}
    for job_id, queue, published_at in candidates.values_list("pk", "queue", "published_at"):
        if published_at is not None:
            if queue not in lengths:
                lengths[queue] = queue_length(queue)
            if lengths[queue] != 0:  # messages wait there (or the broker is unreachable): not proven lost
                continue
        lost.append(job_id)
    return lost


def job_sweep() -> SweepReport:
    """One pass of the sweep; returns what it changed.

        >>> job_sweep().requeued
        [42]
    """
    now = timezone.now()
    report = SweepReport()
    for job_id, reason in expired_running_jobs(now):
        outcome = job_lease_lapsed(job_id, reason=reason)
        if outcome == "failed":
            report.failed.append(job_id)
        elif outcome == "queued":
            report.requeued.append(job_id)
    for job_id in _lost_messages(now):
        if job_publish(job_id):
            report.republished.append(job_id)
    report.scratch_removed = remove_orphaned_scratch()
    if report.requeued or report.failed or report.republished:
        logger.warning("sweep: re-queued %s, failed %s, re-published %s", report.requeued, report.failed,
                       report.republished)
    return report
