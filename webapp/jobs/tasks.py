"""Celery tasks of jobs and the worker's own heartbeat loop; each calls one service.

The web side publishes by task name (``publishing.RUN_JOB_TASK``) through the Celery app, so
services never import this module.
"""

from __future__ import annotations

import logging
import re
import threading

from celery import shared_task
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.signals import task_failure, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connection

from compression_core.analysis import worker_report
from webapp.datahub.services import dataset_inspection_sweep
from webapp.fleet.services import worker_heartbeat, worker_stopped
from webapp.modelhub.services import model_inspection_sweep

from .leases import job_lease_rebind, job_worker_lost
from .publishing import RUN_JOB_TASK
from .services import job_execute, job_hard_time_limit
from .sweep import job_sweep

logger = logging.getLogger(__name__)


# reject_on_worker_lost is off: when the process running a job dies, the lease (not a re-delivered
# message) decides what happens next, through job_worker_lost below and the sweep.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=False, name=RUN_JOB_TASK)
def run_compression_job(self, job_id: int) -> None:
    job_execute(job_id, task_id=self.request.id or "", worker=self.request.hostname or "")


@task_failure.connect(sender=run_compression_job)
def _job_process_lost(sender=None, task_id=None, exception=None, args=None, **_kwargs) -> None:
    """In the worker's main process: the pool child running a job died or hit the hard time limit."""
    if not args:
        return
    if isinstance(exception, WorkerLostError):
        # "Worker exited prematurely: signal 9 (SIGKILL) Job: 0." -> "its process was killed: signal 9 (SIGKILL)"
        found = re.search(r"(signal \d+ \(\w+\)|exitcode \d+)", str(exception))
        how = f"its process was killed: {found.group(1)}" if found and "signal" in found.group(1) else \
            f"its process exited: {found.group(1) if found else exception}"
        job_worker_lost(args[0], task_id=task_id, reason=how)
    elif isinstance(exception, TimeLimitExceeded):
        job_hard_time_limit(args[0], task_id=task_id)


class WorkerBeat:
    """A thread in each worker's main process: every ``CONDENSE_SWEEP_S`` it reports the worker
    (devices, versions, load) and runs the sweep."""

    def __init__(self, node: str, queues: list[str], started_at):
        self.node, self.queues, self.started_at = node, queues, started_at
        self._first = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="condense-worker-beat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def beat(self) -> None:
        worker_heartbeat(name=self.node, queues=self.queues, info=worker_report(), started=self._first)
        self._first = False
        job_sweep()
        # Uploads too: an inspection whose message was lost is sent again, one whose worker died is retried.
        model_inspection_sweep()
        dataset_inspection_sweep()

    def _run(self) -> None:
        try:
            # Whatever this node name held when it stopped cannot be running now.
            job_lease_rebind(worker=self.node, started_before=self.started_at)
            while True:
                close_old_connections()
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - a database or broker blip must not end the loop
                    logger.exception("worker heartbeat/sweep failed; retrying in %s s", settings.CONDENSE_SWEEP_S)
                if self._stop.wait(settings.CONDENSE_SWEEP_S):
                    return
        finally:
            connection.close()


_beat: WorkerBeat | None = None


@worker_ready.connect
def _start_worker_beat(sender=None, **_kwargs) -> None:
    global _beat
    queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    # The worker's start, before its pool or consumer existed: a job claimed since is this node's own run.
    _beat = WorkerBeat(sender.hostname, queues, started_at=sender.controller.startup_time)
    _beat.start()


@worker_shutdown.connect
def _stop_worker_beat(**_kwargs) -> None:
    if _beat is not None:
        _beat.stop()
        worker_stopped(name=_beat.node)
