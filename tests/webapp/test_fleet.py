"""The worker registry: heartbeats, liveness by time, and which queue a job goes to."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from webapp.fleet.models import Worker
from webapp.fleet.selectors import gpu_worker_alive, job_queue_for, live_workers, worker_state
from webapp.fleet.services import worker_heartbeat, worker_stopped
from webapp.jobs.selectors import queued_job_counts, running_jobs_by_worker
from webapp.jobs.services import job_create, job_transition

pytestmark = pytest.mark.django_db

CPU_INFO = {"cpu": {"model": "test CPU", "logical_cores": 4, "available_cores": 4}, "gpus": []}


def _age(name: str, seconds: float) -> None:
    """Pretend the worker's last heartbeat was ``seconds`` ago."""
    Worker.objects.filter(name=name).update(last_seen_at=timezone.now() - timedelta(seconds=seconds))


def test_a_heartbeat_creates_then_updates_one_row():
    first = worker_heartbeat(name="cpu1@host", queues=["cpu"], info=CPU_INFO, started=True)
    _age("cpu1@host", 5)
    second = worker_heartbeat(name="cpu1@host", queues=["cpu", "gpu"], info={**CPU_INFO, "load": {"loadavg_1m": 1.5}})
    assert Worker.objects.count() == 1 and second.pk == first.pk
    assert second.queues == ["cpu", "gpu"] and second.info["load"] == {"loadavg_1m": 1.5}
    assert second.started_at == first.started_at  # a later beat of the same process keeps its start
    assert second.last_seen_at > first.last_seen_at and second.stopped_at is None


def test_a_restart_resets_started_at_and_clears_stopped():
    first = worker_heartbeat(name="cpu1@host", queues=["cpu"], info=CPU_INFO, started=True)
    worker_stopped(name="cpu1@host")
    assert worker_state(Worker.objects.get()) == "stopped"
    again = worker_heartbeat(name="cpu1@host", queues=["cpu"], info=CPU_INFO, started=True)
    assert again.stopped_at is None and again.started_at > first.started_at


def test_the_first_beat_without_started_still_sets_started_at():
    worker = worker_heartbeat(name="cpu1@host", queues=["cpu"], info=CPU_INFO)
    assert worker.started_at == worker.last_seen_at


def test_liveness_follows_the_last_heartbeat_and_the_timeout(settings):
    settings.CONDENSE_WORKER_TIMEOUT_S = 45
    for name in ("fresh@host", "old@host", "stopped@host"):
        worker_heartbeat(name=name, queues=["cpu"], info=CPU_INFO, started=True)
    _age("fresh@host", 30)
    _age("old@host", 60)
    worker_stopped(name="stopped@host")
    assert [w.name for w in live_workers()] == ["fresh@host"]
    assert {w.name: worker_state(w) for w in Worker.objects.all()} == {
        "fresh@host": "live", "old@host": "stale", "stopped@host": "stopped"}
    settings.CONDENSE_WORKER_TIMEOUT_S = 90
    assert sorted(w.name for w in live_workers()) == ["fresh@host", "old@host"]


def test_stopping_an_unknown_worker_is_harmless():
    worker_stopped(name="never@host")
    assert not Worker.objects.exists()


def test_a_gpu_worker_needs_the_gpu_queue_a_gpu_and_a_recent_beat(gpu_worker_info):
    assert not gpu_worker_alive()
    worker_heartbeat(name="cpu1@host", queues=["gpu", "cpu"], info=CPU_INFO)  # listens on gpu, has none
    worker_heartbeat(name="gpu-idle@host", queues=["cpu"], info=gpu_worker_info)  # has one, not on gpu
    assert not gpu_worker_alive()
    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info)
    assert gpu_worker_alive()
    _age("gpu1@host", 600)
    assert not gpu_worker_alive()


def test_job_queue_for_each_device_with_and_without_a_gpu_worker(gpu_worker_info):
    assert job_queue_for("cpu") == "cpu"
    assert job_queue_for("auto") == "cpu"
    with pytest.raises(ValidationError) as refused:
        job_queue_for("gpu")
    assert refused.value.messages == ["No GPU worker is running (none has ever run): choose cpu or auto, "
                                      "or ask the administrator to start a GPU worker."]

    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info, started=True)
    assert (job_queue_for("cpu"), job_queue_for("auto"), job_queue_for("gpu")) == ("cpu", "gpu", "gpu")

    _age("gpu1@host", 600)
    assert job_queue_for("auto") == "cpu"
    with pytest.raises(ValidationError) as refused:
        job_queue_for("gpu")
    assert "(the last one was seen 10 minutes ago)" in refused.value.messages[0]


def test_the_wait_setting_queues_gpu_jobs_without_a_gpu_worker(settings):
    settings.CONDENSE_GPU_JOBS_WAIT = True
    assert job_queue_for("gpu") == "gpu"
    assert job_queue_for("auto") == "cpu"  # auto never waits: a CPU worker can run it now


def test_an_unknown_device_is_refused():
    with pytest.raises(ValidationError, match="device must be auto, cpu or gpu"):
        job_queue_for("tpu")


def test_running_jobs_are_grouped_by_worker_and_queued_ones_counted(user, digits_model, running_job):
    first = running_job(user, "cpu1@host", name="first")
    second = running_job(user, "cpu1@host", name="second")
    other = running_job(user, "gpu1@host")
    job_transition(running_job(user, "cpu1@host").pk, to="failed", error="out of memory")
    for _ in range(2):
        job_create(owner=user, model=digits_model, algorithm="L1NormPruner", dataset="digits",
                   params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]})
    assert {name: [job.pk for job in jobs] for name, jobs in running_jobs_by_worker().items()} == {
        "cpu1@host": [first.pk, second.pk], "gpu1@host": [other.pk]}
    assert queued_job_counts() == {"cpu": 2}
