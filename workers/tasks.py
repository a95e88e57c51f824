"""Celery tasks: take an id, call one service."""

from celery import shared_task

from .celery_app import ensure_broker_folders


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="condense.run_compression_job")
def run_compression_job(self, job_id: int) -> None:
    from webapp.jobs.services import job_execute

    job_execute(job_id, task_id=self.request.id or "", worker=self.request.hostname or "")


def enqueue_compression_job(job_id: int, queue: str) -> None:
    ensure_broker_folders()
    run_compression_job.apply_async(args=[job_id], queue=queue)
