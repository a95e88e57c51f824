"""Leases, the sweep and run scratch folders, driven through the services on the test database."""

import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.jobs.leases import job_claim, job_lease_lapsed, job_lease_rebind
from webapp.jobs.models import Job
from webapp.jobs.scratch import remove_orphaned_scratch, scratch_root
from webapp.jobs.services import job_create, job_execute
from webapp.jobs.sweep import job_sweep

pytestmark = pytest.mark.django_db

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


@pytest.fixture
def job(user, digits_model, no_enqueue):
    return job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")


@pytest.fixture
def published(monkeypatch):
    sent = []
    monkeypatch.setattr("webapp.jobs.sweep.job_publish", lambda job_id: sent.append(job_id) or True)
    monkeypatch.setattr("webapp.jobs.leases.job_publish", lambda job_id: sent.append(job_id) or True)
    return sent


def _expire(job_id: int) -> None:
    Job.objects.filter(pk=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_a_claim_holds_a_lease_and_a_second_delivery_does_nothing(job):
    claimed, lease = job_claim(job.pk, task_id="t1", worker="w1@host")
    assert claimed.status == "running" and claimed.attempts == 1 and lease.attempt == 1
    assert claimed.lease_owner == lease.owner and lease.owner.startswith("w1@host|")
    assert claimed.lease_expires_at > timezone.now()
    assert job_claim(job.pk, task_id="t1", worker="w2@host") is None  # redelivered while alive
    after = Job.objects.get(pk=job.pk)
    assert after.attempts == 1 and after.worker == "w1@host" and after.lease_owner == lease.owner


def test_an_expired_lease_is_taken_over_and_counted(job, settings):
    settings.CONDENSE_JOB_MAX_ATTEMPTS = 3
    _, first = job_claim(job.pk, task_id="t1", worker="w1@host")
    _expire(job.pk)
    claimed, second = job_claim(job.pk, task_id="t1", worker="w2@host")
    assert second.attempt == 2 and second.owner != first.owner
    assert claimed.worker == "w2@host" and claimed.stage.startswith("restarting: w1@host stopped (its lease expired")
    [entry] = claimed.attempt_history
    assert entry["attempt"] == 1 and entry["worker"] == "w1@host" and "lease expired" in entry["reason"]


def test_past_the_attempt_cap_a_takeover_fails_the_job_with_its_history(job):
    job_claim(job.pk, task_id="t1", worker="w1@host")
    _expire(job.pk)
    job_claim(job.pk, task_id="t1", worker="w2@host")
    _expire(job.pk)
    assert job_claim(job.pk, task_id="t1", worker="w3@host") is None
    failed = Job.objects.get(pk=job.pk)
    assert failed.status == "failed" and failed.attempts == 2 and len(failed.attempt_history) == 2
    assert failed.error.startswith("the worker stopped 2 times while running this job (last: w2@host, last seen at ")
    assert failed.lease_owner == "" and failed.lease_expires_at is None


def test_the_sweep_requeues_an_expired_run_and_sends_it_again(job, published):
    job_claim(job.pk, task_id="t1", worker="gone@host")
    Job.objects.filter(pk=job.pk).update(published_at=timezone.now())
    assert job_sweep().requeued == []  # the lease is live
    _expire(job.pk)
    report = job_sweep()
    assert report.requeued == [job.pk]
    requeued = Job.objects.get(pk=job.pk)
    assert requeued.status == "queued" and requeued.lease_owner == "" and requeued.published_at is None
    assert requeued.stage.startswith("waiting to run again: gone@host stopped (no heartbeat from gone@host since ")
    assert job.pk in published


def test_the_sweep_sends_again_a_message_lost_with_its_broker(job, published, settings, celery_broker):
    # celery_broker: a broker whose folders exist (a fresh checkout has no var/broker), with an empty queue.
    Job.objects.filter(pk=job.pk).update(published_at=timezone.now())
    assert job_sweep().republished == []  # sent a moment ago: it may be waiting on the broker
    Job.objects.filter(pk=job.pk).update(published_at=timezone.now() - timedelta(seconds=settings.CONDENSE_REPUBLISH_S + 1))
    assert job_sweep().republished == [job.pk]  # the queue is empty: the message is gone


def test_messages_lost_with_the_broker_are_sent_again_oldest_first(job, user, digits_model, published, celery_broker):
    # bench/fault_recovery.py found the backlog re-sent newest first after a Redis restart, so the jobs that
    # had waited longest (a job re-queued after its worker was killed among them) waited longest again.
    newer = job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")
    empty_queue = f"lost-{uuid.uuid4().hex[:8]}"  # on the real broker, and certainly empty, as after a restart
    Job.objects.filter(pk__in=[job.pk, newer.pk]).update(
        queue=empty_queue, published_at=timezone.now() - timedelta(minutes=5))
    assert job_sweep().republished == [job.pk, newer.pk]


def test_a_redelivery_takes_over_at_once_from_a_dead_local_holder(job):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _, lease = job_claim(job.pk, task_id="t1", worker="w1@host")
    owner = lease.owner.split("|")
    Job.objects.filter(pk=job.pk).update(lease_owner="|".join([owner[0], owner[1], dead.stdout.strip(), owner[3]]))
    claimed, second = job_claim(job.pk, task_id="t1", worker="w1@host")  # its lease has not expired
    assert second.attempt == 2 and claimed.attempt_history[0]["worker"] == "w1@host"


def test_a_lapse_for_another_holder_changes_nothing(job):
    _, lease = job_claim(job.pk, task_id="t1", worker="w1@host")
    assert job_lease_lapsed(job.pk, reason="stale report", holder="someone-else") is None
    assert Job.objects.get(pk=job.pk).lease_owner == lease.owner


def test_a_restarted_node_expires_its_former_runs_but_not_the_one_it_has_just_claimed(job, user, digits_model,
                                                                                    published):
    # bench/fault_recovery.py found it: the new node's pool child claimed a job before the node's beat thread
    # ran the rebind, which expired that live lease; the node's own sweep then re-queued the job it was running.
    fresh = job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")
    job_claim(job.pk, task_id="t1", worker="w1@host")
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(minutes=5))  # the node's former life
    booted = timezone.now()
    job_claim(fresh.pk, task_id="t2", worker="w1@host")
    assert job_lease_rebind(worker="w1@host", started_before=booted) == 1
    assert Job.objects.get(pk=job.pk).lease_expires_at < timezone.now()
    assert Job.objects.get(pk=fresh.pk).lease_expires_at > timezone.now()
    assert job_sweep().requeued == [job.pk]
    assert Job.objects.get(pk=fresh.pk).status == "running"


def test_a_run_past_its_soft_time_limit_fails_with_what_to_change(user, digits_model, no_enqueue):
    # 60 epochs take far longer than the 1 s limit on any machine; the run stops at the first report past it.
    params = {**L1_HALF, "training": {"finetune_epochs": 60}}
    job = job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=params, dataset="digits",
                     time_limit_s=1)
    job_execute(job.pk, task_id="t1", worker="w1@host")
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("the job ran past its time limit of 0 min and was stopped during '")
    assert "larger time_limit_s" in job.error


def test_run_scratch_folders_are_removed_in_every_outcome(user, digits_model, no_enqueue):
    ok = job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")
    job_execute(ok.pk, task_id="t1", worker="w1@host")
    broken = job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")
    Job.objects.filter(pk=broken.pk).update(algorithm="VanishedPruner")
    job_execute(broken.pk, task_id="t2", worker="w1@host")
    assert {Job.objects.get(pk=ok.pk).status, Job.objects.get(pk=broken.pk).status} == {"succeeded", "failed"}
    # This process's run folders (other test processes on the machine may be running jobs of their own).
    assert list(scratch_root().glob(f"job-*-pid-{os.getpid()}")) == []


def test_scratch_of_a_dead_process_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"job-9-run-1-pid-{dead.stdout.strip()}"
    alive = tmp_path / f"job-9-run-2-pid-{os.getpid()}"
    for folder in (orphan, alive):
        (folder / "tmp").mkdir(parents=True)
    assert remove_orphaned_scratch(tmp_path) == 1
    assert not orphan.exists() and alive.exists()


def test_the_job_page_shows_the_runs_that_stopped_and_the_sentence(client, user, job):
    job_claim(job.pk, task_id="t1", worker="w1@host")
    _expire(job.pk)
    job_claim(job.pk, task_id="t1", worker="w2@host")
    _expire(job.pk)
    job_claim(job.pk, task_id="t1", worker="w3@host")
    client.force_login(user)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="job-runs"' in page and page.count('<td class="mono">w') == 2
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", page)  # times shown plainly, not ISO
    assert "w1@host" in page and "w2@host" in page and "at most 2 times in all" in page
    assert "the worker stopped 2 times while running this job" in page


def test_a_cancelled_job_whose_worker_vanished_ends_cancelled_not_rerun(job, published):
    from webapp.jobs.services import job_cancel

    job_claim(job.pk, task_id="t1", worker="gone@host")
    job_cancel(job=Job.objects.get(pk=job.pk))  # asks the run to stop, but its worker is gone
    _expire(job.pk)
    assert job_sweep().requeued == []
    ended = Job.objects.get(pk=job.pk)
    assert ended.status == "cancelled" and ended.attempt_history[0]["worker"] == "gone@host"
    assert published == []
