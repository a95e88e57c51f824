"""Faults on real Celery workers: killed processes, duplicate deliveries, lost messages.

The database decides who runs a job (webapp/jobs/leases.py); these tests kill and duplicate for real
and check that no job is lost, stuck or run twice. Test workers use 6 s leases and 2 s sweeps
(tests/conftest.py WORKER_TIMING).
"""

import os
import re
import signal
import time
import uuid

import pytest

from tests.conftest import WORKER_TIMING, wait_for_job
from webapp.jobs.models import Job

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
# Fine-tuning makes the digits job run 15-30 s on 2 cores: long enough to be killed or duplicated mid-run.
LONG = {**L1_HALF, "training": {"finetune_epochs": 4}}
LEASE_S, SWEEP_S = float(WORKER_TIMING["CONDENSE_LEASE_S"]), float(WORKER_TIMING["CONDENSE_SWEEP_S"])


def _queue() -> str:
    # Unique per test: a killed worker's unacknowledged message must not reach a later test's worker.
    return f"faults-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _job_on(user, queue: str, monkeypatch, params: dict = LONG, publish: bool = True) -> int:
    """A job routed to ``queue`` (read only by this test's workers), published there if ``publish``."""
    from webapp.jobs.publishing import job_publish
    from webapp.jobs.services import job_create
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    with monkeypatch.context() as patch:
        patch.setattr("webapp.jobs.services.job_publish", lambda job_id: None)
        job = job_create(owner=user, model=model, algorithm="L1NormPruner", params=params, dataset="digits",
                         device="cpu")
    Job.objects.filter(pk=job.pk).update(queue=queue)
    if publish:
        assert job_publish(job.pk)
    return job.pk


def _until(check, timeout: float, what: str, worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s\n{worker.log_tail() if worker else ''}")


def _running_attempt(job_id: int, attempt: int):
    return Job.objects.filter(pk=job_id, status="running", attempts=attempt).exclude(lease_owner="").first()


def test_a_job_that_kills_its_pool_process_is_retried_then_failed_with_its_history(user, make_worker, monkeypatch):
    queue = _queue()
    worker = make_worker(queue, f"prefork-{queue}@localhost", pool="prefork")
    job_id = _job_on(user, queue, monkeypatch)
    for attempt in (1, 2):
        running = _until(lambda: _running_attempt(job_id, attempt), 90, f"run {attempt}", worker)
        child = int(running.lease_owner.split("|")[2])
        assert child != worker.process.pid  # the pool child runs the job, not the worker's main process
        os.kill(child, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    job = wait_for_job(job_id, timeout=60, until=("failed", "succeeded"), worker=worker)
    assert job.status == "failed"
    assert job.attempts == 2 and len(job.attempt_history) == 2
    assert [entry["attempt"] for entry in job.attempt_history] == [1, 2]
    # Celery reports the lost child (after billiard's 10 s) or the lease lapses first (6 s here, 30 s by default).
    for entry in job.attempt_history:
        assert re.fullmatch(r"its process (was killed: signal 9 \(SIGKILL\)|\d+ on \S+ is gone \(killed, e\.g\. by "
                            r"the out-of-memory killer\))", entry["reason"]), entry["reason"]
    assert job.error.startswith(f"the worker stopped 2 times while running this job (last: prefork-{queue}@localhost")
    assert "probably out of memory: try a smaller training batch_size" in job.error
    assert job.lease_owner == "" and job.finished_at is not None
    assert worker.process.poll() is None  # the worker itself keeps serving
    logs = list(job.logs.values_list("message", flat=True))
    assert logs.count("status: running") == 2 and logs.count("status: queued") == 2


def test_a_killed_worker_is_replaced_by_one_with_another_name_within_the_bound(user, make_worker, monkeypatch):
    queue = _queue()
    doomed = make_worker(queue, f"doomed-{queue}@localhost")
    job_id = _job_on(user, queue, monkeypatch)
    _until(lambda: _running_attempt(job_id, 1), 90, "the first run", doomed)
    doomed.kill()  # the whole worker, as a re-created container
    killed_at = time.monotonic()
    heir = make_worker(queue, f"heir-{queue}@localhost")
    requeued = _until(lambda: Job.objects.filter(pk=job_id).exclude(status="running").first()
                      or _running_attempt(job_id, 2), 120, "the job taken back", heir)
    noticed_s = time.monotonic() - killed_at
    # The lease lapses LEASE_S after the last heartbeat; a sweep runs every SWEEP_S (plus worker start-up).
    assert noticed_s < LEASE_S + 2 * SWEEP_S + 30, noticed_s
    assert requeued.status in ("queued", "running")
    job = wait_for_job(job_id, timeout=240, worker=heir)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2 and job.worker == heir.name
    [lost] = job.attempt_history
    assert lost["worker"] == doomed.name and lost["attempt"] == 1
    # The heir runs on this host, so it can tell the process is gone; on another host: no heartbeat since.
    assert re.fullmatch(rf"(its process {doomed.process.pid} on \S+ is gone .*|no heartbeat from {doomed.name} since .*)",
                        lost["reason"]), lost["reason"]
    assert job.logs.filter(message__startswith=f"run 1 ended without finishing: {doomed.name}").exists()


def test_a_task_delivered_twice_while_its_run_is_alive_runs_once(user, make_worker, monkeypatch):
    from workers.celery_app import app

    from webapp.jobs.publishing import RUN_JOB_TASK

    queue = _queue()
    first = make_worker(queue, f"first-{queue}@localhost")
    second = make_worker(f"{queue}-dup", f"second-{queue}@localhost")  # up before the run starts
    job_id = _job_on(user, queue, monkeypatch)
    _until(lambda: _running_attempt(job_id, 1), 90, "the first run", first)
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=f"{queue}-dup")  # as Redis redelivers after its timeout
    _until(lambda: f"job {job_id} is held by" in second.log_tail(20000), 60, "the duplicate's decision", second)
    job = wait_for_job(job_id, timeout=240, worker=first)
    assert job.status == "succeeded", job.error
    assert job.attempts == 1 and job.attempt_history == [] and job.worker == first.name
    assert list(job.logs.values_list("message", flat=True)).count("status: running") == 1


def test_a_queued_job_whose_message_never_went_out_is_sent_by_the_sweep(user, make_worker, monkeypatch):
    queue = _queue()
    worker = make_worker(queue, f"sweeper-{queue}@localhost")
    job_id = _job_on(user, queue, monkeypatch, params=L1_HALF, publish=False)  # as if the broker had lost it
    job = wait_for_job(job_id, timeout=120, worker=worker)
    assert job.status == "succeeded", job.error
    assert job.published_at is not None and job.attempts == 1
