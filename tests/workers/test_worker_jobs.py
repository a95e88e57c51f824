"""Jobs on a real Celery worker process over a real broker (Redis in CI)."""

import pytest

from webapp.jobs.models import Job

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


def test_worker_runs_a_job_to_success(api, user, wait_job):
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    response = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "L1NormPruner", "params": L1_HALF,
                                          "dataset": "digits"}, format="json")
    assert response.status_code == 201
    job = wait_job(response.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.progress == 1.0 and job.attempts == 1 and job.task_id
    assert job.metrics["after"]["params"] < job.metrics["before"]["params"]
    stages = list(job.logs.values_list("message", flat=True))
    assert stages[0] == "status: queued" and "status: running" in stages and stages[-1] == "status: succeeded"
    assert any("pruning with L1NormPruner" in s for s in stages)


def test_worker_runs_a_job_on_an_uploaded_npz_dataset(api, user, wait_job):
    import io

    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile

    from compression_core.data import load_builtin_dataset
    from webapp.modelhub.services import model_create

    x, y = load_builtin_dataset("digits", "test")
    buffer = io.BytesIO()
    np.savez(buffer, x=x[:100].numpy(), y=y[:100].numpy())
    upload = SimpleUploadedFile("digits.npz", buffer.getvalue(), content_type="application/octet-stream")
    dataset = api.post("/api/v1/datasets/", {"name": "digits npz", "file": upload})
    assert dataset.status_code == 201, dataset.json()
    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    response = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "L1NormPruner", "params": L1_HALF,
                                          "dataset_id": dataset.json()["id"]}, format="json")
    assert response.status_code == 201, response.json()
    job = wait_job(response.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.dataset_upload_id == dataset.json()["id"]
    assert 0.0 <= job.metrics["before"]["accuracy"] <= 1.0 and 0.0 <= job.metrics["after"]["accuracy"] <= 1.0


def test_worker_runs_a_data_dependent_pruner_with_fine_tuning(api, user, wait_job):
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    params = {**L1_HALF, "training_steps": 10, "training": {"finetune_epochs": 2, "distillation": True}}
    response = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "TaylorFOWeightPruner", "params": params,
                                          "dataset": "digits"}, format="json")
    assert response.status_code == 201, response.json()
    job = wait_job(response.json()["id"])
    assert job.status == "succeeded", job.error
    finetune = job.metrics["finetune"]
    assert finetune["epochs"] == 2 and len(finetune["per_epoch"]) == 2 and finetune["distillation"] is True
    assert job.metrics["after"]["params"] < job.metrics["before"]["params"]
    logs = [line.message for line in job.logs.all()]
    assert any("fine-tuning: epoch 2 of 2" in message for message in logs)


def test_worker_prunes_fine_tunes_then_quantizes(api, user, wait_job):
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    params = {**L1_HALF, "training": {"finetune_epochs": 1},
              "quantization": {"algorithm": "QATQuantizer", "params": {"epochs": 1}}}
    response = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "L1NormPruner", "params": params,
                                          "dataset": "digits"}, format="json")
    assert response.status_code == 201, response.json()
    job = wait_job(response.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.metrics["pruned"]["params"] < job.metrics["before"]["params"]
    forms = job.metrics["quantization"]["forms"]
    assert forms["int8_pytorch"]["bytes"] < forms["float"]["bytes"]
    assert {"model.plan.json", "model.int8.pt", "model.int8.onnx", "calibration.json"} <= {
        artifact["name"] for artifact in job.artifacts}
    logs = [line.message for line in job.logs.all()]
    assert any("quantizing with QATQuantizer" in message for message in logs)


def test_worker_reports_failure_instead_of_hanging(api, user, wait_job, monkeypatch):
    from webapp.jobs.publishing import job_publish
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    with monkeypatch.context() as patch:  # held back until the recipe is broken, or the worker may be first
        patch.setattr("webapp.jobs.services.job_publish", lambda job_id: None)
        job_id = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "LevelPruner", "params": L1_HALF},
                          format="json").json()["id"]
    # Break the stored recipe behind the API's back: the worker must fail cleanly.
    Job.objects.filter(pk=job_id).update(algorithm="VanishedPruner")
    assert job_publish(job_id)
    job = wait_job(job_id)
    assert job.status == "failed"
    assert "unknown algorithm 'VanishedPruner'" in job.error
    assert "\n" not in job.error and "Traceback" not in job.error and "Error:" not in job.error
    assert job.logs.filter(level="error", message__startswith="Traceback (most recent call last)").exists()


@pytest.mark.slow
def test_running_job_can_be_cancelled(api, user, wait_job):
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="r18", source="builtin", architecture="resnet18")
    job_id = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "L1NormPruner", "params": L1_HALF},
                      format="json").json()["id"]
    wait_job(job_id, until=("running", "succeeded", "failed"))
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 200
    job = wait_job(job_id)
    assert job.status == "cancelled"
    assert job.finished_at is not None
