"""The README's five-minute walkthrough, done in Chromium against a real Celery worker.

A first-time user uploads a trained model, runs three pruning jobs on it (the second and third cloned from
the first with another sparsity), watches the runs table update itself, compares the three runs (three
points and the Pareto front), exports the comparison as CSV, runs the example plugin's pruner, deletes a job
and opens the API reference. Each step's wall time is printed; with ``CONDENSE_SCREENSHOTS=docs/screenshots``
the pages the README shows are saved there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow]

SCREENSHOTS = os.environ.get("CONDENSE_SCREENSHOTS", "")


class Steps:
    """Wall time per walkthrough step, printed at the end (the README quotes them)."""

    def __init__(self):
        self.started = self.last = time.monotonic()
        self.rows: list[tuple[str, float]] = []

    def done(self, what: str) -> None:
        now = time.monotonic()
        self.rows.append((what, now - self.last))
        self.last = now

    def table(self) -> str:
        lines = [f"{seconds:6.1f} s  {what}" for what, seconds in self.rows]
        return "\n".join(lines + [f"{time.monotonic() - self.started:6.1f} s  in all"])


def _shot(page, name: str, *, full_page: bool = True) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=full_page)


def _trained_digits_onnx(path: Path) -> Path:
    """digits_cnn trained for a few seconds on scikit-learn's digits (about 95% accurate), exported as ONNX."""
    from compression_core.data import load_builtin_dataset
    from compression_core.models import ARCHITECTURES, build_architecture

    torch.manual_seed(0)
    inputs, labels = load_builtin_dataset("digits", split="train")
    model = build_architecture("digits_cnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for start in range(0, len(inputs), 64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[start:start + 64]), labels[start:start + 64])
            loss.backward()
            optimizer.step()
    model.eval()
    torch.onnx.export(model, torch.randn(1, *ARCHITECTURES["digits_cnn"].input_shape), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path




def _wait_for_job_page(page, worker) -> str:
    page.wait_for_selector("#metrics-table, #job-error", timeout=180_000)
    page.wait_for_load_state("load")
    status = page.get_attribute("#job-status", "data-status")
    if status != "succeeded":
        error = page.inner_text("#job-error") if page.locator("#job-error").count() else ""
        pytest.fail(f"job ended {status}: {error}\n{worker.log_tail()}")
    return re.search(r"/jobs/(\d+)/", page.url).group(1)


def _set_sparsity(page, percent: int) -> None:
    """Move the sparsity control; the config list it writes must follow."""
    page.fill("#sparsity-control", str(percent))
    page.dispatch_event("#sparsity-control", "input")
    page.dispatch_event("#sparsity-control", "change")
    config_list = json.loads(page.input_value("textarea[name=config_list]"))
    assert {entry.get("sparse_ratio") for entry in config_list if "sparse_ratio" in entry} == {percent / 100}


def test_five_minute_walkthrough(page, live_server, user, celery_worker_process, tmp_path, capsys, sign_in):
    steps = Steps()
    sign_in()
    steps.done("sign in")

    # 1. Upload a trained model.
    page.click("#new-model-link")
    page.check("input[name=source][value=onnx]")
    page.set_input_files("#id_file", str(_trained_digits_onnx(tmp_path / "digits.onnx")))
    page.fill("#id_name", "digits classifier")
    page.click("#model-submit")
    page.wait_for_selector("#model-stats")
    steps.done("upload a trained ONNX model and read what was found")
    _shot(page, "model-page")

    # 2. The first job: L1 filter pruning at 30 %, the dataset chosen for us since it fits the model.
    page.click("#compress-link")
    page.wait_for_selector("#job-form")
    assert page.input_value("#id_dataset") == "digits"
    page.select_option("#id_algorithm", "L1NormPruner")
    _set_sparsity(page, 30)
    page.fill("#id_tags", "walkthrough")
    _shot(page, "job-form")
    page.click("#job-submit")
    first = _wait_for_job_page(page, celery_worker_process)
    steps.done("first job (L1NormPruner 30%): form, run, results")
    _shot(page, "job-page")
    params = page.text_content("#job-params-json")
    assert '"sparse_ratio": 0.3' in params and "'" not in params  # JSON, pasteable into the API

    # 3. Two more, cloned from the first with the sparsity control: 50 % and 70 %.
    for percent in (50, 70):
        page.goto(f"/jobs/{first}/")
        page.click("#clone-job")
        page.wait_for_selector("#job-form")
        assert page.input_value("#id_algorithm") == "L1NormPruner"
        _set_sparsity(page, percent)
        page.click("#job-submit")
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    steps.done("clone it twice with 50% and 70%")

    # 4. The runs table updates itself while they run (no reload: a marker on window survives).
    page.goto("/jobs/")
    page.evaluate("window.__walkthrough = 1")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-table tr[data-job-id] td[data-col=status]')]"
        ".filter(td => td.textContent.trim() === 'succeeded').length >= 3", timeout=240_000)
    assert page.evaluate("window.__walkthrough") == 1
    rows = page.locator("#runs-table tr[data-job-id]")
    assert rows.count() == 3
    steps.done("watch the runs table until all three succeed")
    _shot(page, "runs-table")

    # 5. Compare the three: three points, the original as reference, the Pareto front; export CSV.
    for index in range(3):
        rows.nth(index).locator("input.run-select").check()
    page.click("#compare-button")
    page.wait_for_selector("#compare-accuracy-latency")
    assert page.locator("#compare-accuracy-latency circle.point").count() == 3
    assert page.locator("#compare-accuracy-latency .reference").count() == 1
    assert page.locator("#compare-accuracy-latency .pareto-front").count() == 1
    assert page.locator("#compare-accuracy-latency circle.point.pareto").count() >= 1
    _shot(page, "compare")
    with page.expect_download() as download_info:
        page.click("#export-csv")
    exported = tmp_path / "runs.csv"
    download_info.value.save_as(str(exported))
    records = list(csv.DictReader(io.StringIO(exported.read_text())))
    job_rows = [row for row in records if row.get("id")]
    assert len(job_rows) == 3
    steps.done("compare the three runs and export CSV")

    # 6. The example plugin's pruner runs like a built-in one.
    page.goto("/algorithms/")
    assert page.locator("#algo-RandomChannelPruner").count() == 1
    _shot(page, "algorithms", full_page=False)
    page.goto("/jobs/new/")
    page.select_option("#id_algorithm", "RandomChannelPruner")
    _set_sparsity(page, 50)
    page.click("#job-submit")
    plugin_job = _wait_for_job_page(page, celery_worker_process)
    steps.done("run the example plugin's RandomChannelPruner")

    # 7. Delete that job (after confirming).
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#job-delete-button")
    page.wait_for_url(re.compile(r".*/jobs/$"))
    assert page.locator(f'#runs-table tr[data-job-id="{plugin_job}"]').count() == 0
    steps.done("delete a job")
    page.set_viewport_size({"width": 390, "height": 844})
    _shot(page, "runs-table-phone", full_page=False)
    page.set_viewport_size({"width": 1280, "height": 900})

    # 8. The interactive API reference, linked from every page, served from the project.
    external = []
    page.on("request", lambda request: not request.url.startswith(live_server.url)
            and not request.url.startswith("data:") and external.append(request.url))
    page.click("#nav-api")
    page.wait_for_selector("text=/api/v1/jobs/", timeout=30_000)
    assert external == []
    _shot(page, "api-reference", full_page=False)
    steps.done("open the API reference")

    with capsys.disabled():
        print("\nwalkthrough steps:\n" + steps.table())
    assert page.problems == [], page.problems
