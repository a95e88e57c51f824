"""The browser dashboard through Django's test client (no worker, no browser)."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from webapp.jobs.models import Job
from webapp.modelhub.models import ModelArtifact

pytestmark = pytest.mark.django_db

L1_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


@pytest.fixture
def other_client(client, other_user):
    client.force_login(other_user)
    return client


@pytest.fixture
def digits(digits_model):
    return digits_model


@pytest.fixture
def enqueued(no_enqueue):
    return no_enqueue


def _job_post(model, **overrides):
    data = {
        "model": model.pk,
        "algorithm": "L1NormPruner",
        "config_list": json.dumps(L1_HALF),
        "dependency_aware": "on",
        "speedup": "on",
        "dataset": "digits",
        "device": "cpu",
        "name": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _make_job(owner, model):
    from webapp.jobs.services import job_create

    return job_create(owner=owner, model=model, algorithm="L1NormPruner", params={"config_list": L1_HALF},
                      dataset="digits")


def _finish(job, *, tmp_onnx: bytes = b"onnx-bytes"):
    """Move a job to succeeded with made-up results, and write its artifact."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from webapp.jobs.services import Status, job_storage_prefix, job_transition

    job_transition(job.pk, to=Status.RUNNING, stage="starting")
    name = f"{job_storage_prefix(job.pk)}/model.onnx"
    default_storage.delete(name)  # job ids repeat between tests; the media folder is the session's
    default_storage.save(name, ContentFile(tmp_onnx))
    metrics = {
        "before": {"params": 11_689_512, "flops": 1_818_000_000, "onnx_bytes": 46_758_048, "weights_bytes": 46_000_000,
                   "latency_cpu_b1_ms": 10.0, "latency_cpu_b16_ms": 80.0, "accuracy": 0.95},
        "after": {"params": 5_844_756, "flops": 909_000_000, "onnx_bytes": 23_379_024, "weights_bytes": 23_000_000,
                  "latency_cpu_b1_ms": 5.0, "latency_cpu_b16_ms": 40.0, "accuracy": 0.93},
        "fidelity": {"cosine_similarity": 0.987654, "top1_agreement": 0.9, "max_abs_diff": 0.5, "mean_abs_diff": 0.01},
        "timings": {"load_s": 0.1, "total_s": 2.5},
        "finetune": {"epochs": 2, "metric": "accuracy", "distillation": True, "pruned": 0.412,
                     "per_epoch": [0.871, 0.93], "finetuned": 0.93},
    }
    layers = [{
        "name": "conv1", "type": "Conv2d", "params_before": 160, "params_after": 80, "flops_before": 10240,
        "flops_after": 5120, "sparsity": 0.5, "weight_shape_before": [16, 1, 3, 3], "weight_shape_after": [8, 1, 3, 3],
        "channels_before": {"out_channels": 16}, "channels_after": {"out_channels": 8},
    }]
    return job_transition(
        job.pk, to=Status.SUCCEEDED, progress=1.0, stage="done", metrics=metrics, layers=layers,
        warnings=["a made-up warning"], artifacts=[{"name": "model.onnx", "kind": "onnx", "bytes": len(tmp_onnx)}],
    )


# -- access ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/models/", "/models/new/", "/models/1/", "/jobs/", "/jobs/new/",
                                 "/jobs/1/", "/jobs/1/download/model.onnx"])
def test_pages_require_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_login_page_signs_in_and_lands_on_home(client, user):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'id="login-form"' in page.content.decode()
    response = client.post("/accounts/login/", {"username": "alice", "password": "wonderland-42"})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:home")
    home = client.get("/")
    assert home.status_code == 200 and "alice" in home.content.decode()
    bad = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert "didn&#x27;t match" in bad.content.decode() or "didn't match" in bad.content.decode()


def test_logout_is_a_post_form(client_in):
    html = client_in.get("/").content.decode()
    assert re.search(r'<form method="post" action="/accounts/logout/"', html)
    assert client_in.post("/accounts/logout/").status_code == 302
    assert client_in.get("/").status_code == 302


# -- models ---------------------------------------------------------------------------


def test_upload_builtin_model_redirects_to_its_page(client_in, user):
    response = client_in.post("/models/new/", {"source": "builtin", "architecture": "digits_cnn", "name": "tiny",
                                               "input_shape": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    model = ModelArtifact.objects.get(owner=user)
    assert response["Location"] == f"/models/{model.pk}/"
    assert model.name == "tiny" and model.architecture == "digits_cnn" and model.input_shape == [1, 8, 8]
    page = client_in.get(response["Location"])
    assert "inspected and stored" in page.content.decode()


def test_upload_form_lists_builtin_architectures(client_in):
    html = client_in.get("/models/new/").content.decode()
    assert 'value="digits_cnn"' in html and 'value="resnet18"' in html
    assert 'name="source"' in html and 'type="file"' in html


def test_upload_random_bytes_as_onnx_shows_the_error_and_stores_nothing(client_in, user, media_root):
    files_before = sorted(p for p in media_root.rglob("*") if p.is_file())
    garbage = SimpleUploadedFile("model.onnx", bytes(range(256)) * 64, content_type="application/octet-stream")
    response = client_in.post("/models/new/", {"source": "onnx", "file": garbage, "name": "junk"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="form-errors"' in html
    errors = response.context["form"].non_field_errors()
    assert errors and "onnx" in " ".join(errors).lower()
    assert ModelArtifact.objects.count() == 0
    assert sorted(p for p in media_root.rglob("*") if p.is_file()) == files_before


def test_onnx_source_ignores_the_architecture_select(client_in, user):
    """The architecture select belongs to the built-in choice; with ONNX a left-over
    value must not turn into a service error."""
    response = client_in.post("/models/new/", {"source": "onnx", "architecture": "digits_cnn"})
    assert response.status_code == 200
    assert "upload an ONNX file" in " ".join(response.context["form"].non_field_errors())
    assert ModelArtifact.objects.count() == 0


def test_upload_with_unreadable_input_shape_is_a_field_error(client_in):
    response = client_in.post("/models/new/", {"source": "builtin", "architecture": "digits_cnn",
                                               "input_shape": "three by eight"})
    assert response.status_code == 200
    assert "input_shape" in response.context["form"].errors
    assert ModelArtifact.objects.count() == 0


def test_upload_with_wrong_input_shape_shows_the_engine_message(client_in):
    response = client_in.post("/models/new/", {"source": "builtin", "architecture": "digits_cnn",
                                               "input_shape": "3,32,32"}, follow=True)
    model = ModelArtifact.objects.get()
    assert model.status == "rejected" and "does not run on an input of shape" in model.status_reason
    html = response.content.decode()
    assert "does not run on an input of shape" in html and 'id="delete-model"' in html


def test_model_page_shows_totals_and_layer_table(client_in, digits):
    response = client_in.get(f"/models/{digits.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="layer-table"' in html
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert f'data-layer="{layer}"' in html
    assert "Conv2d" in html and "16 × 1 × 3 × 3" in html
    assert 'id="model-input-shape">1 × 8 × 8<' in html
    assert f'data-value="{digits.summary["params"]}"' in html
    assert f'href="/jobs/new/?model={digits.pk}"' in html


def test_home_and_lists_show_own_rows(client_in, digits, enqueued):
    job = _make_job(digits.owner, digits)
    html = client_in.get("/").content.decode()
    assert f'href="/models/{digits.pk}/"' in html and f'href="/jobs/{job.pk}/"' in html
    assert 'class="badge badge-queued"' in html
    assert f'data-model-id="{digits.pk}"' in client_in.get("/models/").content.decode()
    assert f'data-job-id="{job.pk}"' in client_in.get("/jobs/").content.decode()


# -- jobs -----------------------------------------------------------------------------


def test_job_form_is_generated_from_the_registry(client_in, digits):
    from compression_core.algorithms import registry

    response = client_in.get(f"/jobs/new/?model={digits.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(rf'<option value="{digits.pk}" selected>', html)
    for spec in registry.all_algorithms():
        assert f'<option value="{spec.name}"' in html
        assert spec.paper_url in html
    assert re.search(r'<input type="checkbox" name="dependency_aware"[^>]*checked', html)
    assert re.search(r'<input type="checkbox" name="speedup"[^>]*checked', html)
    assert "&quot;sparse_ratio&quot;: 0.5" in html  # the prefilled config list
    assert '<option value="digits"' in html and '<option value="gpu"' in html


def test_job_form_creates_a_job_and_shows_it(client_in, digits, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", _job_post(digits))
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.get()
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert enqueued == [(job.pk, "cpu")]
    assert job.algorithm == "L1NormPruner" and job.dataset == "digits" and job.speedup is True
    assert job.params["config_list"] == L1_HALF and job.params["dependency_aware"] is True

    page = client_in.get(response["Location"])
    html = page.content.decode()
    assert 'id="job-status"' in html and 'data-status="queued"' in html
    assert '<progress id="job-progress"' in html
    assert f'data-api-url="/api/v1/jobs/{job.pk}/"' in html
    assert 'id="cancel-button"' in html
    assert "status: queued" in html  # the log so far


def test_job_form_unchecked_boxes_turn_options_off(client_in, digits, enqueued, django_capture_on_commit_callbacks,
                                                   gpu_worker_info):
    from webapp.fleet.services import worker_heartbeat

    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info)
    data = _job_post(digits, dependency_aware=None, speedup=None, dataset="", device="gpu", name="my run")
    with django_capture_on_commit_callbacks(execute=True):
        assert client_in.post("/jobs/new/", data).status_code == 302
    job = Job.objects.get()
    assert job.params["dependency_aware"] is False and job.speedup is False
    assert job.dataset == "" and job.device == "gpu" and job.name == "my run"
    assert enqueued == [(job.pk, "gpu")]


def test_job_form_refuses_a_gpu_when_no_gpu_worker_runs(client_in, digits, enqueued):
    page = client_in.post("/jobs/new/", _job_post(digits, device="gpu")).content.decode()
    assert "No GPU worker is running" in page and "choose cpu or auto" in page
    assert Job.objects.count() == 0 and enqueued == []


def test_job_form_sends_training_options_and_each_algorithms_own_parameters(client_in, digits, enqueued,
                                                                             django_capture_on_commit_callbacks):
    page = client_in.get(f"/jobs/new/?model={digits.pk}").content.decode()
    assert 'id="training-options"' in page and 'name="training_finetune_epochs"' in page
    # AGP and Lottery Ticket both have total_iteration, with other defaults: each gets its own field
    agp = re.search(r'data-algorithms="([^"]*)"[^>]*>\s*<label[^>]*for="id_total_iteration"', page)
    assert agp and "AGPPruner" in agp.group(1).split() and "LotteryTicketPruner" not in agp.group(1).split()
    assert 'name="total_iteration__LotteryTicketPruner"' in page

    data = _job_post(digits, algorithm="LotteryTicketPruner", total_iteration__LotteryTicketPruner="2",
                     training_steps="7", training_finetune_epochs="2", training_distillation="on",
                     training_lr="0.01", training_optimizer="sgd", training_batch_size="32")
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.get()
    assert job.params["total_iteration"] == 2 and job.params["training_steps"] == 7
    assert job.params["pruning_algorithm"] == "LevelPruner"  # the Lottery Ticket default, not AGP's
    training = job.params["training"]
    assert (training["finetune_epochs"], training["distillation"], training["lr"], training["optimizer"],
            training["batch_size"]) == (2, True, 0.01, "sgd", 32)


def test_job_form_data_pruner_without_dataset_is_refused(client_in, digits, enqueued,
                                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", _job_post(digits, algorithm="TaylorFOWeightPruner", dataset=""))
    assert response.status_code == 200
    assert "TaylorFOWeightPruner needs data" in response.content.decode()
    assert Job.objects.count() == 0 and enqueued == []


def test_job_form_invalid_json_shows_the_message(client_in, digits, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", _job_post(digits, config_list='[{"op_types": ["Conv2d"],'))
    assert response.status_code == 200
    assert "not valid JSON" in response.content.decode()
    assert Job.objects.count() == 0 and enqueued == []
    response = client_in.post("/jobs/new/", _job_post(digits, config_list='{"op_types": ["Conv2d"]}'))
    assert "must be a JSON list" in response.content.decode()
    assert Job.objects.count() == 0


def test_job_form_shows_service_validation_errors(client_in, digits, enqueued, django_capture_on_commit_callbacks):
    bad = json.dumps([{"op_types": ["Conv2d"], "sparse_ratio": 1.5}])
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", _job_post(digits, config_list=bad))
    assert response.status_code == 200
    assert "must be &lt; 1" in response.content.decode()
    none_selected = json.dumps([{"op_types": ["LSTM"], "sparse_ratio": 0.5}])
    response = client_in.post("/jobs/new/", _job_post(digits, config_list=none_selected))
    assert "selects no layer L1NormPruner can prune" in response.content.decode()
    assert Job.objects.count() == 0 and enqueued == []


def test_cancel_a_queued_job(client_in, digits, enqueued):
    job = _make_job(digits.owner, digits)
    response = client_in.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert response.status_code == 200
    assert Job.objects.get(pk=job.pk).status == "cancelled"
    html = response.content.decode()
    assert "cancelled" in html and 'id="cancel-button"' not in html
    # A second cancel is refused with a message, not a crash.
    again = client_in.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert "only queued or running jobs can be cancelled" in again.content.decode()
    assert client_in.get(f"/jobs/{job.pk}/cancel/").status_code == 405


def test_finished_job_page_shows_results_and_downloads(client_in, digits, enqueued):
    job = _finish(_make_job(digits.owner, digits), tmp_onnx=b"\x08\x07fake-onnx")
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-status="succeeded"' in html and 'id="cancel-button"' not in html
    assert 'id="metrics-table"' in html
    assert "11.7 M" in html and "5.84 M" in html and "1.82 GMACs" in html and "46.8 MB" in html
    assert "2.00×" in html and "-2.0 pts" in html
    assert "0.9877" in html and "90.0 %" in html  # fidelity
    assert "a made-up warning" in html
    assert 'id="finetune-table"' in html and "distillation from the original" in html
    assert "Accuracy right after pruning" in html and "41.2 %" in html and "After epoch 2" in html
    assert 'data-layer="conv1"' in html and "16 × 1 × 3 × 3 → 8 × 1 × 3 × 3" in html
    assert "out_channels 16 → 8" in html
    link = f"/jobs/{job.pk}/download/model.onnx"
    assert f'href="{link}"' in html

    response = client_in.get(link)
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="job{job.pk}-model.onnx"'
    assert b"".join(response.streaming_content) == b"\x08\x07fake-onnx"
    assert client_in.get(f"/jobs/{job.pk}/download/model.safetensors").status_code == 404
    assert client_in.get(f"/jobs/{job.pk}/download/..%2F..%2Fsecret_key").status_code == 404


def test_failed_job_page_shows_the_error(client_in, digits, enqueued):
    from webapp.jobs.services import Status, job_transition

    job = _make_job(digits.owner, digits)
    job_transition(job.pk, to=Status.RUNNING)
    job_transition(job.pk, to=Status.FAILED, error="the pruner <exploded>", stage="failed")
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="job-error"' in html and "the pruner &lt;exploded&gt;" in html
    assert 'data-status="failed"' in html
    assert 'id="job-traceback"' not in html  # no traceback was logged: no empty box


def test_failed_job_page_shows_the_sentence_and_the_traceback_collapsed(client_in, user, enqueued):
    from webapp.jobs.services import job_create, job_execute
    from webapp.modelhub.services import model_create
    from tests.compression_core.failing_models import reshape_onnx

    # batch 1 written into its Reshape, input dims all symbolic: the importer keeps the literal, the job fails
    model = model_create(owner=user, name="batch-1 export", source="onnx", input_shape=[1, 8, 8],
                         upload=SimpleUploadedFile("fixed.onnx", reshape_onnx([1, 144]).SerializeToString()))
    # As a model stored before uploads checked the batch: today job_create refuses it, the worker must
    # still fail it with one sentence.
    ModelArtifact.objects.filter(pk=model.pk).update(summary={k: v for k, v in model.summary.items() if k != "batch"})
    model.refresh_from_db()
    job = job_create(owner=user, model=model, algorithm="L1NormPruner", params={"config_list": L1_HALF},
                     dataset="digits")
    job_execute(job.pk, task_id="task-page")
    job.refresh_from_db()
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    error_card = html[html.index('id="job-error"'):html.index("</section>", html.index('id="job-error"'))]
    sentence = re.search(r'id="job-error-sentence"><strong>(.*?)</strong>', error_card).group(1)
    assert sentence.startswith("the model has a fixed batch size of 1 in layer `Reshape`")
    assert "Traceback" not in sentence
    traceback_box = re.search(r'<details class="traceback" id="job-traceback">\s*<summary>Technical details '
                              r'\(traceback\)</summary>\s*<pre class="code">(.*?)</pre>', error_card, re.S)
    assert traceback_box and traceback_box.group(1).startswith("Traceback (most recent call last)")
    assert "is invalid for input of size" in traceback_box.group(1)
    # in the log, the traceback is collapsed too, and appears nowhere else in the page uncollapsed
    log = html[html.index('id="job-log"'):]
    assert re.search(r'<details class="log-msg"><summary>Technical details \(traceback\)</summary>Traceback', log)
    outside_details = re.sub(r"<details.*?</details>", "", html, flags=re.S)
    assert "Traceback" not in outside_details and "RuntimeError" not in outside_details


# -- ownership ------------------------------------------------------------------------


def test_other_users_rows_are_404(client, user, other_user, digits, enqueued):
    job = _finish(_make_job(user, digits))
    client.force_login(other_user)
    assert client.get(f"/models/{digits.pk}/").status_code == 404
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/jobs/{job.pk}/download/model.onnx").status_code == 404
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 404
    html = client.get("/").content.decode()
    assert f'/models/{digits.pk}/' not in html and f'/jobs/{job.pk}/' not in html
    # The job form neither offers nor accepts someone else's model.
    form_html = client.get(f"/jobs/new/?model={digits.pk}").content.decode()
    assert f'<option value="{digits.pk}"' not in form_html
    response = client.post("/jobs/new/", _job_post(digits))
    assert response.status_code == 200
    assert Job.objects.filter(owner=other_user).count() == 0


# -- number formatting ----------------------------------------------------------------


def test_format_filters():
    from webapp.dashboard.templatetags import condense_format as f

    assert f.count(11_689_512) == "11.7 M" and f.count(512) == "512" and f.count(1_500) == "1.5 k"
    assert f.count(999_960) == "1 M"
    assert f.macs(1_818_000_000) == "1.82 GMACs" and f.macs(5_120) == "5.12 KMACs"
    assert f.bytes_(46_758_048) == "46.8 MB" and f.bytes_(900) == "900 B"
    assert f.ms(1.23456) == "1.23 ms" and f.percent(0.5) == "50.0 %"
    assert f.shape([3, 224, 224]) == "3 × 224 × 224" and f.shape(None) == "—"
    assert f.count(None) == "—" and f.count("n/a") == "—"
    rows = {r["key"]: r for r in f.metric_rows({"before": {"params": 10, "latency_gpu_b1_ms": 2.0},
                                                 "after": {"params": 5, "latency_gpu_b1_ms": 4.0}})}
    assert rows["params"]["change"] == "2.00×" and rows["params"]["improved"] is True
    assert rows["latency_gpu_b1_ms"]["label"] == "GPU latency, batch 1 (median)"
    # Two medians without a paired timing (jobs from before it) are shown, never coloured.
    assert rows["latency_gpu_b1_ms"]["improved"] is None
    assert rows["latency_gpu_b1_ms"]["change"] == "0.50× (timed apart, unverified)"
    slow = f.metric_rows({"before": {"latency_cpu_b1_ms": 0.166}, "after": {"latency_cpu_b1_ms": 90.0}})
    assert slow[0]["change"].startswith("0.00184×") and slow[0]["improved"] is None
    assert f.channel_changes({"in_channels": 1, "out_channels": 16}, {"in_channels": 1, "out_channels": 8}) \
        == "out_channels 16 → 8"
    assert f.channel_changes({"in_channels": 4}, {"in_channels": 4}) == "—"


def _timing(runtime, batch, low, high, *, form="compressed", value=None, flags=(), verdict="faster", notes=(),
            headline=False):
    value = value if value is not None else (low + high) / 2
    return {"runtime": runtime, "form": form, "label": f"{form} on {runtime}", "batch": batch,
            "before": {"median_ms": 2.0, "p10_ms": 1.9, "p90_ms": 2.2, "rounds": 40, "repeats": 8},
            "after": {"median_ms": 2.0 / value, "p10_ms": 1.8 / value, "p90_ms": 2.3 / value, "rounds": 40,
                      "repeats": 8},
            "ratio": {"value": value, "low": low, "high": high}, "flags": list(flags), "notes": list(notes),
            "verdict": verdict, "headline": headline}


def test_job_page_shows_paired_latency_with_its_interval_flags_and_machine(client_in, digits, enqueued):
    from webapp.jobs.models import Job as JobModel

    job = _finish(_make_job(digits.owner, digits))
    metrics = dict(job.metrics)
    metrics["latency"] = {
        "machine": {"cpu": "Test CPU 9000", "logical_cores": 8, "available_cores": 4, "threads": 4,
                    "torch": "2.x", "onnxruntime": "1.x", "gpu": None, "load_start": 0.5, "load_end": 3.5},
        "rows": [
            _timing("pytorch-cpu", 1, 1.9, 2.1, headline=True),
            _timing("pytorch-cpu", 16, 0.6, 1.9, value=1.3, flags=["noisy"], verdict="noisy", headline=True,
                    notes=["the 95% interval of the ratio is wide (0.60x to 1.90x over 40 rounds)"]),
            _timing("onnxruntime-cpu", 1, 0.4, 0.6, value=0.5, flags=["regression"], verdict="regression",
                    notes=["the compressed model is slower here: 2.00x the original's time"]),
            _timing("onnxruntime-cpu", 16, 400.0, 500.0, value=467.0, flags=["implausible"], verdict="implausible",
                    notes=["467.00x is more than 3.00x, the most this change can give (its MACs went down 2.00x)"]),
        ],
        "skipped": [{"runtime": "pytorch-cuda", "reason": "this worker has no CUDA device"}],
        "fastest": {"1": {"runtime": "pytorch-cpu", "form": "compressed", "label": "pruned float32, PyTorch eager",
                          "median_ms": 1.0}},
    }
    JobModel.objects.filter(pk=job.pk).update(metrics=metrics)
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="latency-table"' in html
    verdicts = re.findall(r'data-runtime="([a-z-]+)" data-form="compressed" data-batch="(\d+)" '
                          r'data-verdict="([a-z-]+)"', html)
    assert verdicts == [("pytorch-cpu", "1", "faster"), ("pytorch-cpu", "16", "noisy"),
                        ("onnxruntime-cpu", "1", "regression"), ("onnxruntime-cpu", "16", "implausible")]
    table = html[html.index('id="latency-table"'):]
    ratios = re.findall(r'<td class="num ratio (\w+)">([^<]+)</td>', table[:table.index("</table>")])
    assert ratios == [("better", "2.00× (1.9–2.1)"), ("uncertain", "1.30× (0.6–1.9)"),
                      ("worse", "0.50× (0.4–0.6)"), ("uncertain", "467.00× (400–500)")]
    assert "the 95% interval of the ratio is wide" in html and "slower (regression)" in html
    assert "implausible: not a real speedup" in html and "its MACs went down 2.00x" in html
    assert 'id="latency-fastest-b1"' in html and "PyTorch, CPU" in html
    assert 'data-skipped="pytorch-cuda"' in html
    assert "Test CPU 9000, 8 logical cores (4 available to the worker), 4 threads" in html
    assert "load average 0.5 at the start, 3.5 at the end" in html
    # The before/after table's headline latency follows the paired verdicts: green at b1, grey (noisy) at b16.
    assert re.search(r'data-metric="latency_cpu_b1_ms">.*?class="num ratio better" data-verdict="faster"', html, re.S)
    assert re.search(r'data-metric="latency_cpu_b16_ms">.*?class="num ratio uncertain" data-verdict="noisy"', html,
                     re.S)


def test_auto_and_sensitivity_results_are_drawn(client_in, digits, enqueued):
    from webapp.jobs.services import Status, job_transition

    job = _make_job(digits.owner, digits)
    job_transition(job.pk, to=Status.RUNNING, stage="starting")
    curves = {"conv1": [0.95, 0.9, 0.5], "conv2+fc1": [0.96, None, None]}
    metrics = {
        "before": {"params": 1000, "accuracy": 0.96},
        "sensitivity": {"baseline_metric": 0.96, "metric": "accuracy", "sparsities": [0.25, 0.5, 0.75],
                        "sensitivity": curves},
        "auto": {"target": "flops", "target_ratio": 0.5, "reached_ratio": 0.46, "target_met": True,
                 "accuracy_floor": 0.9, "final_metric": 0.88, "accuracy_floor_met": False, "tolerated_drop": 0.05,
                 "ratios": {"conv1": 0.5, "conv2+fc1": 0.25}, "baseline_metric": 0.96,
                 "sparsities": [0.25, 0.5, 0.75], "sensitivity": curves},
    }
    job_transition(job.pk, to=Status.SUCCEEDED, progress=1.0, stage="done", metrics=metrics)
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="job-sensitivity"' in html and html.count('<svg class="chart"') == 2
    assert html.count('data-group="conv1"') >= 2 and 'data-group="conv2+fc1"' in html
    assert "46.0 % of the original (met)" in html
    assert "88.0 % reached (not met)" in html
    assert 'data-group="conv2+fc1"><th scope="row"><code>conv2+fc1</code></th><td class="num">25.0 %' in html


def test_sensitivity_chart_escapes_layer_names():
    from webapp.dashboard.templatetags.condense_charts import sensitivity_chart

    svg = sensitivity_chart({"sparsities": [0.5], "sensitivity": {"<script>": [0.5]}, "baseline_metric": 1.0})
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert sensitivity_chart({}) == ""


def test_job_form_offers_quantizers_and_quantizing_after_pruning(client_in, digits, enqueued,
                                                                django_capture_on_commit_callbacks):
    page = client_in.get(f"/jobs/new/?model={digits.pk}").content.decode()
    for name in ("PostTrainingQuantizer", "QATQuantizer", "NaiveQuantizer"):
        assert f'<option value="{name}"' in page
    assert 'id="quantize-after"' in page and 'name="quantize_after"' in page
    assert "&quot;quant_bits&quot;: 8" in page  # the quantizers' default config list, swapped in by the page

    data = _job_post(digits, quantize_after="PostTrainingQuantizer", quantize_params='{"observer": "minmax"}',
                     training_finetune_epochs="1")
    with django_capture_on_commit_callbacks(execute=True):
        assert client_in.post("/jobs/new/", data).status_code == 302
    job = Job.objects.get()
    assert job.params["quantization"]["algorithm"] == "PostTrainingQuantizer"
    assert job.params["quantization"]["params"]["observer"] == "minmax"
    assert job.params["training"]["finetune_epochs"] == 1

    # A post-training quantizer has no training options: the form does not send them.
    quantizer = _job_post(digits, algorithm="PostTrainingQuantizer", config_list='[{"op_types": ["Linear"]}]',
                          mode__PostTrainingQuantizer="dynamic", training_finetune_epochs="0")
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", quantizer)
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.latest("pk")
    assert job.params["mode"] == "dynamic" and "training" not in job.params

    # A quantization-aware trainer takes the training options, but trains for its own epochs.
    qat = _job_post(digits, algorithm="QATQuantizer", config_list='[{"op_types": ["Conv2d", "Linear"]}]',
                    epochs="2", training_finetune_epochs="2", training_lr="0.0001")
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", qat)
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.latest("pk")
    assert job.params["epochs"] == 2 and job.params["training"]["lr"] == 0.0001
    assert job.params["training"]["finetune_epochs"] == 0

    response = client_in.post("/jobs/new/", _job_post(digits, quantize_after="PostTrainingQuantizer",
                                                      quantize_params="[1, 2]"))
    assert "must be a JSON object" in response.content.decode()


def test_quantization_job_page_compares_the_forms_and_lists_bits(client_in, digits, enqueued):
    from webapp.jobs.services import job_create, job_execute

    job = job_create(owner=digits.owner, model=digits, algorithm="PostTrainingQuantizer", params={},
                     dataset="digits")
    job_execute(job.pk, task_id="task-page")
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-status="succeeded"' in html, html[:3000]
    assert 'id="quantization-forms"' in html
    for form in ("float", "simulated", "int8_pytorch", "int8_onnx"):
        assert f'data-form="{form}"' in html
    assert "CPU b1 latency" in html and "CPU b16 latency" in html
    assert re.search(r'data-layer="conv1".*?data-bits="8"', html, re.S)
    assert "int8 per_channel_symmetric" in html
    for name in ("model.int8.pt", "model.int8.onnx", "calibration.json"):
        assert f'/jobs/{job.pk}/download/{name}"' in html


def test_quantization_and_timing_tables_keep_the_pipeline_order_whatever_the_json_order():
    # PostgreSQL's jsonb gives keys back sorted by length, not in the order the pipeline wrote them.
    from webapp.dashboard.templatetags import condense_format as f

    forms = {"int8_onnx": {"bytes": 25, "latency_cpu_b1_ms": 1.0},
             "float": {"bytes": 100, "accuracy": 0.9, "latency_cpu_b1_ms": 4.0},
             "simulated": {"accuracy": 0.89}, "int8_pytorch": {"bytes": 50, "latency_cpu_b1_ms": 2.0}}
    latency = {"rows": [_timing("onnxruntime-cpu", 1, 3.8, 4.2, form="int8_onnx")]}
    table = f.quantization_table({"forms": forms}, latency)
    assert [row["key"] for row in table["rows"]] == ["float", "simulated", "int8_pytorch", "int8_onnx"]
    assert table["columns"] == ["CPU b1"]
    onnx = table["rows"][3]
    assert onnx["size_ratio"] == "4.00×" and onnx["latency"][0]["speedup"] == "4.00× (3.8–4.2)"
    assert onnx["latency"][0]["css"] == "better"
    assert table["rows"][2]["latency"][0]["speedup"] == ""  # no paired timing of that form: no ratio
    assert table["rows"][1]["accuracy_change"] == "-1.0 pts"
    rows = f.timing_rows({"timings": {"total_s": 3.0, "load_s": 1.0, "quantize_s": 2.0}})
    assert [row["key"] for row in rows] == ["load_s", "quantize_s", "total_s"]
