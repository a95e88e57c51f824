"""End to end in Chromium: sign in, upload an ONNX model, run a pruning job on a
real Celery worker, watch it finish live, download the smaller model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow]


def _export_digits_onnx(path):
    from compression_core.models import ARCHITECTURES, build_architecture

    torch.manual_seed(0)
    model = build_architecture("digits_cnn").eval()
    torch.onnx.export(
        model, torch.randn(1, *ARCHITECTURES["digits_cnn"].input_shape), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
    )
    return path


def _add_model(page, source: str, tmp_path) -> None:
    page.click("#new-model-link")
    page.wait_for_url("**/models/new/")
    if source == "onnx":
        page.check("input[name=source][value=onnx]")
        assert page.is_disabled("#id_architecture")  # architecture fields are for built-in models only
        page.set_input_files("#id_file", str(_export_digits_onnx(tmp_path / "digits_cnn.onnx")))
    else:
        page.check("input[name=source][value=builtin]")
        assert page.is_enabled("#id_architecture")
        page.select_option("#id_architecture", "digits_cnn")  # no file: random weights, a demo
    page.fill("#id_name", f"digits ({source})")
    page.click("#model-submit")
    page.wait_for_selector("#model-name, #form-errors")
    if page.locator("#form-errors").count():
        pytest.fail(f"the {source} upload was refused: {page.inner_text('#form-errors')}")
    assert re.search(r"/models/\d+/$", page.url)




def _wait_until_finished(page, worker) -> None:
    """condense.js polls the API and reloads the page once the job has finished; the results sections only
    exist in the server-rendered, finished page."""
    page.wait_for_selector("#metrics-table, #job-error", timeout=120_000)
    page.wait_for_load_state("load")
    status = page.get_attribute("#job-status", "data-status")
    if status != "succeeded":
        error = page.inner_text("#job-error") if page.locator("#job-error").count() else ""
        pytest.fail(f"job ended {status}: {error}\n{worker.log_path.read_text()[-3000:]}")


@pytest.mark.parametrize("source", ["onnx", "builtin"])
def test_upload_compress_watch_and_download(page, live_server, user, celery_worker_process, tmp_path, source, sign_in):
    import onnxruntime as ort

    sign_in()
    _add_model(page, source, tmp_path)

    # The model page says what was found.
    assert page.inner_text("#model-name") == f"digits ({source})"
    assert page.inner_text("#model-input-shape") == "1 × 8 × 8"
    rows = page.locator("#layer-table tbody tr")
    assert rows.count() >= 4
    assert "Conv2d" in page.inner_text("#layer-table") and "Linear" in page.inner_text("#layer-table")

    page.screenshot(path=str(tmp_path / "model-page.png"), full_page=True)

    # Compress it: L1NormPruner, digits dataset, speedup on.
    page.click("#compress-link")
    page.wait_for_url(re.compile(r".*/jobs/new/\?model=\d+$"))
    page.screenshot(path=str(tmp_path / "job-form.png"), full_page=True)
    page.select_option("#id_algorithm", "L1NormPruner")
    assert page.is_visible('.algo-info[data-algorithm="L1NormPruner"]')
    assert page.is_checked("#id_dependency_aware") and page.is_checked("#id_speedup")
    page.select_option("#id_dataset", "digits")
    page.click("#job-submit")
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    assert page.get_attribute("#job-status", "data-status") in ("queued", "running", "succeeded")
    # Until it ends, the page shows the time so far and the estimate (read at once: a finished job reloads).
    status, elapsed, eta = page.evaluate("() => [document.getElementById('job-status').dataset.status, "
                                         "!!document.getElementById('job-elapsed'), "
                                         "!!document.getElementById('job-eta')]")
    assert elapsed and (eta or status == "succeeded")

    _wait_until_finished(page, celery_worker_process)
    assert page.text_content("#job-status").strip() == "succeeded"
    assert re.fullmatch(r"\d+\s\w+", page.inner_text("#job-elapsed").strip())  # "0 minutes": the run's length
    assert page.get_attribute("#job-progress", "value") in ("1", "1.0", "1.000000")
    assert page.locator("#cancel-button").count() == 0
    log_text = page.inner_text("#job-log")
    assert "status: running" in log_text and "status: succeeded" in log_text

    params_before = float(page.get_attribute('#metrics-table tr[data-metric="params"] td.before', "data-value"))
    params_after = float(page.get_attribute('#metrics-table tr[data-metric="params"] td.after', "data-value"))
    assert params_before > params_after > 0
    assert page.locator('#metrics-table tr[data-metric="accuracy"]').count() == 1
    assert page.locator("#layers-table tbody tr").count() >= 4

    page.screenshot(path=str(tmp_path / "job-page.png"), full_page=True)

    # Download the compressed ONNX model and run it.
    with page.expect_download() as download_info:
        page.click('a[data-artifact="model.onnx"]')
    download = download_info.value
    assert download.suggested_filename.endswith("model.onnx")
    downloaded = tmp_path / "compressed.onnx"
    download.save_as(str(downloaded))
    session = ort.InferenceSession(str(downloaded), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: np.random.rand(1, 1, 8, 8).astype(np.float32)})
    assert output.shape == (1, 10)

    assert page.problems == [], page.problems


def test_quantize_in_the_browser_and_download_the_int8_model(page, live_server, user, celery_worker_process,
                                                             tmp_path, sign_in):
    import onnxruntime as ort

    sign_in()
    _add_model(page, "builtin", tmp_path)
    page.click("#compress-link")
    page.wait_for_url(re.compile(r".*/jobs/new/\?model=\d+$"))

    # The untouched default config list follows the algorithm's kind; options follow the algorithm.
    page.select_option("#id_algorithm", "PostTrainingQuantizer")
    assert '"quant_bits": 8' in page.input_value("#id_config_list")
    assert not page.is_visible("#training-options") and not page.is_visible("#quantize-after")
    assert page.is_visible("#id_observer") and not page.is_visible("#id_speedup")
    page.select_option("#id_algorithm", "QATQuantizer")  # trains, for its own epochs: no fine-tuning field
    assert page.is_visible("#training-options") and page.is_visible("#id_epochs")
    assert not page.is_visible("#id_training_finetune_epochs")
    page.select_option("#id_algorithm", "L1NormPruner")
    assert '"sparse_ratio": 0.5' in page.input_value("#id_config_list")
    assert page.is_visible("#quantize-after") and page.is_visible("#training-options")
    page.select_option("#id_algorithm", "PostTrainingQuantizer")
    page.select_option("#id_dataset", "digits")
    page.click("#job-submit")
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    _wait_until_finished(page, celery_worker_process)

    forms = page.locator("#quantization-forms tbody tr")
    assert [forms.nth(i).get_attribute("data-form") for i in range(forms.count())] == [
        "float", "simulated", "int8_pytorch", "int8_onnx"]
    assert "int8 per_channel_symmetric" in page.inner_text("#quantization-layers")
    page.screenshot(path=str(tmp_path / "quantization-page.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click('a[data-artifact="model.int8.onnx"]')
    downloaded = tmp_path / "model.int8.onnx"
    download_info.value.save_as(str(downloaded))
    session = ort.InferenceSession(str(downloaded), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: np.random.rand(2, 1, 8, 8).astype(np.float32)})
    assert output.shape == (2, 10)
    assert page.problems == [], page.problems


def test_a_running_jobs_page_shows_elapsed_time_and_the_estimate(page, live_server, user, monkeypatch, sign_in,
                                                                 workers_paused):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.jobs.models import Job
    from webapp.jobs.services import job_create
    from webapp.modelhub.services import model_create

    monkeypatch.setattr("webapp.jobs.services.job_publish", lambda job_id: True)  # no worker: the test runs it
    # A run as a worker leaves it between two reports: 90 s in, its estimate 150 s left as of 10 s ago.
    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    job = job_create(owner=user, model=model, algorithm="L1NormPruner", dataset="digits",
                     params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]})
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status="running", started_at=now - timedelta(seconds=90), progress=0.3,
        stage="fine-tuning: epoch 3 of 20, batch 40 of 90, loss 0.41",
        progress_detail={"stage": "finetune", "done": 2, "total": 20, "unit": "epoch", "batch": 40, "batches": 90,
                         "stage_started_at": (now - timedelta(seconds=70)).isoformat(), "eta_s": 150.0,
                         "updated_at": (now - timedelta(seconds=10)).isoformat()})
    sign_in()
    page.goto(f"/jobs/{job.pk}/")
    page.wait_for_function("document.getElementById('job-eta').textContent.endsWith('left')")
    assert page.inner_text("#job-eta") == "about 2 min left"
    assert re.fullmatch(r"1 min \d+ s", page.inner_text("#job-elapsed"))
    assert page.inner_text("#job-stage") == "fine-tuning: epoch 3 of 20, batch 40 of 90, loss 0.41"
    assert re.fullmatch(r"\(this stage: 1 min \d+ s\)", page.inner_text("#job-stage-detail"))
    assert page.problems == [], page.problems
