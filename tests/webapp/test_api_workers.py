"""GET /api/v1/workers/: the pool as any signed-in user sees it; other users' jobs only as a count."""

from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.fleet.models import Worker
from webapp.fleet.services import worker_heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(user, other_user, gpu_worker_info, running_job, celery_broker):
    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info, started=True)
    worker_heartbeat(name="cpu1@host", queues=["cpu"], info={**gpu_worker_info, "gpus": []}, started=True)
    Worker.objects.filter(name="cpu1@host").update(last_seen_at=timezone.now() - timedelta(minutes=5))
    mine = running_job(user, "gpu1@host", name="my resnet")
    running_job(other_user, "gpu1@host", name="bob's secret model")
    running_job(other_user, "gpu1@host", name="bob's other secret")
    return mine


def test_the_pool_lists_workers_devices_versions_load_and_queues(api, pool):
    response = api.get("/api/v1/workers/")
    assert response.status_code == 200
    body = response.json()
    workers = {worker["name"]: worker for worker in body["workers"]}
    gpu, cpu = workers["gpu1@host"], workers["cpu1@host"]
    assert (gpu["live"], gpu["state"], cpu["live"], cpu["state"]) == (True, "live", False, "stale")
    assert gpu["queues"] == ["gpu", "cpu"] and gpu["last_seen_at"] and gpu["started_at"] and gpu["stopped_at"] is None
    assert gpu["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_024_112_640,
                            "capability": "9.0"}]
    assert cpu["gpus"] == [] and gpu["cpu"]["logical_cores"] >= 1 and gpu["memory"]["total_bytes"] > 0
    assert set(gpu["versions"]) == {"python", "torch", "cuda", "onnxruntime"}
    assert set(gpu["load"]) == {"loadavg_1m", "loadavg_5m", "cpu_count"}
    assert {queue["name"]: (queue["broker_length"], queue["queued_jobs"]) for queue in body["queues"]} == {
        "cpu": (0, 0), "gpu": (0, 0)}


def test_only_your_own_jobs_are_named(api, other_api, pool):
    mine = api.get("/api/v1/workers/")
    gpu = next(worker for worker in mine.json()["workers"] if worker["name"] == "gpu1@host")
    assert gpu["jobs"] == [{"id": pool.pk, "name": "my resnet", "algorithm": "L1NormPruner", "progress": 0.25,
                            "stage": "pruning"}]
    assert gpu["other_jobs"] == 2
    assert "secret" not in mine.content.decode()

    theirs = other_api.get("/api/v1/workers/").json()
    gpu = next(worker for worker in theirs["workers"] if worker["name"] == "gpu1@host")
    assert sorted(job["name"] for job in gpu["jobs"]) == ["bob's other secret", "bob's secret model"]
    assert gpu["other_jobs"] == 1


def test_an_empty_pool(api, celery_broker):
    body = api.get("/api/v1/workers/").json()
    assert body["workers"] == [] and [queue["name"] for queue in body["queues"]] == ["cpu", "gpu"]


def test_a_worker_reporting_less_still_renders(api, celery_broker):
    worker_heartbeat(name="old@host", queues=["cpu"], info={"cpu": {"model": "old CPU"}})
    worker = api.get("/api/v1/workers/").json()["workers"][0]
    assert worker["cpu"] == {"model": "old CPU"} and worker["gpus"] == [] and worker["load"] == {}


def test_signed_out_is_refused(client):
    assert client.get("/api/v1/workers/").status_code in (401, 403)


def test_the_schema_documents_the_endpoint(api):
    import yaml

    response = api.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert "/api/v1/workers/" in schema["paths"]
    pool = schema["components"]["schemas"]["WorkerPool"]
    assert set(pool["properties"]) == {"workers", "queues"}
    worker = schema["components"]["schemas"]["Worker"]["properties"]
    assert {"live", "gpus", "jobs", "other_jobs", "versions", "load"} <= set(worker)
