"""Where a run stands: the worker's reporter stores it, the API and the job page show elapsed time and the estimate."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from compression_core.algorithms import get_algorithm
from compression_core.evaluation import TrainingOptions
from compression_core.jobs.progress import ProgressPlan
from compression_core.jobs.stages import Reporter
from webapp.jobs.leases import job_claim
from webapp.jobs.models import Job
from webapp.jobs.services import _progress_reporter, job_create, job_execute

pytestmark = pytest.mark.django_db

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


@pytest.fixture
def job(user, digits_model, no_enqueue):
    return job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")


def test_the_reporter_writes_where_the_run_stands_and_logs_only_the_steps(job):
    _, lease = job_claim(job.pk, task_id="t1", worker="w1@host")
    plan = ProgressPlan.for_job(get_algorithm("L1NormPruner"), L1_HALF,
                                training=TrainingOptions(finetune_epochs=400),
                                train_samples=60_000, speedup=True, latency_rows=2, latency_budget_s=1.0)
    report = Reporter(_progress_reporter(lease, soft_limit_s=3600), plan=plan)
    report("load", "loading model")
    report("finetune", "fine-tuning: epoch 1 of 400", done=0, total=400, unit="epoch")
    report.window("finetune", "fine-tuning: epoch 1 of 400, batch 120 of 469, loss 0.41", done=0, total=400,
                  unit="epoch", batch=(120, 469))
    job.refresh_from_db()
    assert job.stage == "fine-tuning: epoch 1 of 400, batch 120 of 469, loss 0.41"
    detail = job.progress_detail
    assert {k: detail[k] for k in ("stage", "done", "total", "unit", "batch", "batches")} == {
        "stage": "finetune", "done": 0, "total": 400, "unit": "epoch", "batch": 120, "batches": 469}
    assert "in_log" not in detail and detail["eta_s"] is None  # the first point of a training: no rate yet
    assert detail["stage_started_at"] <= detail["updated_at"]
    assert 0.0 < job.progress < 0.1  # 400 epochs ahead: the bar has hardly moved
    report.window("finetune", "fine-tuning: epoch 1 of 400, batch 240 of 469, loss 0.38", done=0, total=400,
                  unit="epoch", batch=(240, 469))
    job.refresh_from_db()
    assert job.progress_detail["batch"] == 240 and job.progress_detail["eta_s"] > 0  # a rate: an estimate
    logged = list(job.logs.order_by("id").values_list("message", flat=True))
    assert logged[logged.index("status: running") + 1:] == ["loading model", "fine-tuning: epoch 1 of 400"]


def test_the_api_gives_elapsed_time_and_the_estimate_aged_since_the_report(api, job):
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status="running", started_at=now - timedelta(seconds=90), progress_detail={
        "stage": "finetune", "done": 3, "total": 400, "unit": "epoch",
        "stage_started_at": (now - timedelta(seconds=60)).isoformat(), "eta_s": 120.0,
        "updated_at": (now - timedelta(seconds=10)).isoformat()})
    body = api.get(f"/api/v1/jobs/{job.pk}/").json()
    assert body["progress_detail"]["stage"] == "finetune" and body["progress_detail"]["total"] == 400
    assert 89 <= body["elapsed_s"] <= 95 and 104 <= body["eta_s"] <= 110.5

    Job.objects.filter(pk=job.pk).update(status="succeeded", finished_at=now)
    body = api.get(f"/api/v1/jobs/{job.pk}/").json()
    assert body["elapsed_s"] == 90.0 and body["eta_s"] is None


def test_a_queued_job_has_no_times_and_a_finished_run_ends_on_done(api, job):
    body = api.get(f"/api/v1/jobs/{job.pk}/").json()
    assert (body["elapsed_s"], body["eta_s"], body["progress_detail"]) == (None, None, {})
    job_execute(job.pk, task_id="t1", worker="w1@host")
    body = api.get(f"/api/v1/jobs/{job.pk}/").json()
    assert body["status"] == "succeeded", body["error"]
    assert body["progress_detail"]["stage"] == "done" and body["progress_detail"]["eta_s"] == 0.0
    assert body["elapsed_s"] > 0 and body["eta_s"] is None


def test_the_job_page_shows_elapsed_time_and_the_estimate_while_running(client_in, job):
    Job.objects.filter(pk=job.pk).update(status="running", started_at=timezone.now() - timedelta(minutes=3))
    html = client_in.get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert re.search(r'id="job-elapsed">\s*3 min [0-9]+ s</span>', html)
    assert '<span id="job-eta">estimating…</span>' in html
    Job.objects.filter(pk=job.pk).update(status="failed", finished_at=timezone.now())
    html = client_in.get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert 'id="job-elapsed"' in html and 'id="job-eta"' not in html
