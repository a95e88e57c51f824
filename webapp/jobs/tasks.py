"""Celery tasks of jobs: each takes a job id and calls one service.

The web side publishes by task name (``services.RUN_JOB_TASK``) through the
Celery app, so services never import this module.
"""

from celery import shared_task
from celery.signals import worker_ready

from .services import RUN_JOB_TASK, job_execute, job_fail_orphans


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name=RUN_JOB_TASK)
def run_compression_job(self, job_id: int) -> None:
    job_execute(job_id, task_id=self.request.id or "", worker=self.request.hostname or "")


@worker_ready.connect
def fail_orphaned_jobs(sender=None, **_kwargs) -> None:
    """A worker node that starts fails the jobs it left running when it stopped (killed, out of memory)."""
    job_fail_orphans(worker=sender.hostname)
