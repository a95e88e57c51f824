"""The job page's results on the metrics of real jobs (digits_cnn on the built-in digits, run in this process):
the before/after table never shows a row of dashes, and every chart has axis titles with their units."""

from __future__ import annotations

import re

import pytest

from webapp.dashboard.templatetags.condense_charts import (
    Frame, axes, layer_chart, nice_ticks, sensitivity_chart, training_chart,
)
from webapp.dashboard.templatetags.condense_format import DASH, metric_rows

L1_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
#: The four kinds of job whose results the page draws: a pruning with fine-tuning, an analysis (nothing after),
#: a simulated and a quantization-aware quantization.
JOBS = {
    "pruning": ("L1NormPruner", {"config_list": L1_HALF, "training": {"finetune_epochs": 2}}),
    "analysis": ("SensitivityAnalysis", {"config_list": L1_HALF, "sparsities": [0.25, 0.5, 0.75]}),
    "naive": ("NaiveQuantizer", {}),
    "qat": ("QATQuantizer", {"epochs": 2}),
}


@pytest.fixture(scope="module")
def real_results(tmp_path_factory) -> dict[str, dict]:
    """Each kind's ``metrics`` and ``layers`` as the worker stores them."""
    from compression_core.jobs import ModelSource, Recipe, run_job

    results = {}
    for kind, (algorithm, params) in JOBS.items():
        recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm=algorithm,
                        params=params, dataset="digits", output_dir=str(tmp_path_factory.mktemp(kind)),
                        latency_runs=2, latency_batch_sizes=(1,), latency_budget_s=0.1)
        result = run_job(recipe)
        results[kind] = {"metrics": result.metrics, "layers": result.layers}
    return results


def _titles(svg: str) -> dict[str, str]:
    return dict(re.findall(r'class="axis-title" data-axis="(x|y)"[^>]*>([^<]*)<', svg))


def _tick_values(svg: str, axis: str) -> list[float]:
    return [float(text) for text in re.findall(rf'class="tick" data-axis="{axis}"[^>]*>([^<]*)<', svg)]


# -- the before/after table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(JOBS))
def test_metric_rows_of_real_jobs_hold_values_never_dashes(real_results, kind):
    metrics = real_results[kind]["metrics"]
    rows = metric_rows(metrics)
    assert {"params", "flops", "accuracy"} <= {row["key"] for row in rows}
    for row in rows:
        assert row["before_text"] != DASH, row
        if metrics.get("after"):
            assert row["after_text"] != DASH and row["change"] != DASH, row


def test_an_analysis_measures_only_the_model_and_its_table_has_one_column(real_results, client_in, digits_model,
                                                                          no_enqueue):
    from webapp.jobs.services import Status, job_create, job_transition

    metrics = real_results["analysis"]["metrics"]
    assert "after" not in metrics  # what made its table a column of dashes
    job = job_create(owner=digits_model.owner, model=digits_model, algorithm="SensitivityAnalysis",
                     params=JOBS["analysis"][1], dataset="digits")
    job_transition(job.pk, to=Status.RUNNING, stage="starting")
    job_transition(job.pk, to=Status.SUCCEEDED, progress=1.0, stage="done", metrics=metrics)
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    table = html[html.index('id="metrics-table"'):html.index("</table>", html.index('id="metrics-table"'))]
    assert 'data-sides="one"' in table and "Before / after" not in table and DASH not in table
    assert table.count("<tr data-metric=") == len(metric_rows(metrics)) >= 4


def test_a_compression_keeps_only_the_rows_measured_on_both_sides():
    rows = metric_rows({"before": {"params": 10, "latency_gpu_b1_ms": 2.0}, "after": {"params": 5}})
    assert [(row["key"], row["change"]) for row in rows] == [("params", "2.00\u00d7")]


def test_the_job_page_draws_real_results_with_titled_axes(real_results, client_in, digits_model, no_enqueue):
    from webapp.jobs.services import Status, job_create, job_transition

    job = job_create(owner=digits_model.owner, model=digits_model, algorithm="L1NormPruner",
                     params=JOBS["pruning"][1], dataset="digits")
    job_transition(job.pk, to=Status.RUNNING, stage="starting")
    job_transition(job.pk, to=Status.SUCCEEDED, progress=1.0, stage="done",
                   metrics=real_results["pruning"]["metrics"], layers=real_results["pruning"]["layers"])
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    for chart in ("training-chart", "loss-chart", "layer-chart"):
        assert f'id="{chart}"' in html
    assert 'data-sides="one"' not in html and "Before / after" in html


# -- the charts ---------------------------------------------------------------------------------------------


def test_sensitivity_chart_is_in_percent_on_both_axes(real_results):
    report = real_results["analysis"]["metrics"]["sensitivity"]
    svg = sensitivity_chart(report)
    assert _titles(svg) == {"x": "Sparsity of the group (%)", "y": "Accuracy (%)"}
    assert _tick_values(svg, "x") == [0, 25, 50, 75, 100]
    values = [v * 100 for curve in report["sensitivity"].values() for v in curve if v is not None]
    values.append(report["baseline_metric"] * 100)
    y_ticks = _tick_values(svg, "y")
    # The ticks span the curves in percent (a fraction's axis would end at 1).
    assert y_ticks[0] <= min(values) and y_ticks[-1] >= max(values) > 1
    assert f"unpruned: {report['baseline_metric'] * 100:.1f} %" in svg
    assert svg.count("<polyline") == len(report["sensitivity"])


def test_sensitivity_chart_names_the_metric_it_draws():
    svg = sensitivity_chart({"metric": "agreement with the original", "sparsities": [0.5],
                             "sensitivity": {"conv1": [0.8]}, "baseline_metric": 1.0})
    assert _titles(svg)["y"] == "Agreement with the original (%)"


def test_layer_chart_has_one_pair_of_bars_per_layer(real_results):
    layers = real_results["pruning"]["layers"]
    svg = layer_chart(layers)
    weighted = [layer for layer in layers if layer["params_before"] > 0]
    assert svg.count('class="bar-before"') == svg.count('class="bar-after"') == len(weighted) >= 3
    assert _titles(svg) == {"x": "Parameters per layer (thousands)", "y": "Layer"}
    conv1 = next(layer for layer in layers if layer["name"] == "conv1")
    assert f'class="bar-after" data-layer="conv1" data-value="{conv1["params_after"]}"' in svg
    assert conv1["params_after"] < conv1["params_before"]
    assert layer_chart([]) == ""


def test_training_chart_has_one_point_per_epoch_and_a_loss_curve(real_results):
    finetune = real_results["pruning"]["metrics"]["finetune"]
    assert [entry["epoch"] for entry in finetune["history"]] == [1, 2]
    assert all(entry["loss"] > 0 and entry["metric"] == value
               for entry, value in zip(finetune["history"], finetune["per_epoch"]))
    html = training_chart(finetune)
    training, loss = html.split('<svg class="chart" id="loss-chart"')
    assert training.count('class="point"') == finetune["epochs"] == 2 and 'class="start" data-epoch="0"' in training
    assert loss.count('class="point"') == 2
    assert _titles(training) == {"x": "Epoch of fine-tuning", "y": "Accuracy (%)"}
    assert _titles(loss) == {"x": "Epoch of fine-tuning", "y": "Training loss (mean per step)"}
    assert max(_tick_values(training, "y")) >= finetune["finetuned"] * 100


def test_training_chart_of_quantization_aware_training_draws_its_loss(real_results, client_in, digits_model,
                                                                     no_enqueue):
    from webapp.jobs.services import Status, job_create, job_transition

    training = real_results["qat"]["metrics"]["quantization"]["training"]
    svg = training_chart(training, "Epoch of quantization-aware training")
    assert svg.count('<svg class="chart" id="training-chart"') == 1 and 'id="loss-chart"' not in svg
    assert svg.count('class="point"') == training["epochs"] == len(training["history"]) == 2
    assert _titles(svg) == {"x": "Epoch of quantization-aware training", "y": "Training loss (mean per step)"}

    job = job_create(owner=digits_model.owner, model=digits_model, algorithm="QATQuantizer",
                     params=JOBS["qat"][1], dataset="digits")
    job_transition(job.pk, to=Status.RUNNING, stage="starting")
    job_transition(job.pk, to=Status.SUCCEEDED, progress=1.0, stage="done", metrics=real_results["qat"]["metrics"])
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    section = html[html.index('id="quantization-training"'):html.index("Bits per layer")]
    assert section.count('class="point"') == 2


def test_training_chart_of_a_job_without_history_draws_the_metric_only():
    html = training_chart({"epochs": 3, "metric": "accuracy", "pruned": 0.4, "per_epoch": [0.8, 0.85, 0.9]})
    assert html.count('class="point"') == 3 and 'id="loss-chart"' not in html
    assert training_chart({}) == training_chart({"per_epoch": []}) == ""


def test_every_chart_titles_both_axes_with_units(real_results):
    metrics = real_results["pruning"]["metrics"]
    charts = [sensitivity_chart(real_results["analysis"]["metrics"]["sensitivity"]),
              layer_chart(real_results["pruning"]["layers"]), *training_chart(metrics["finetune"]).split("</svg>")[:2]]
    for svg in charts:
        titles = _titles(svg)
        assert set(titles) == {"x", "y"}
        assert re.search(r"\(.+\)$", titles["x"]) or titles["x"].startswith("Epoch"), titles


def test_the_shared_axis_helper_places_titles_and_ticks():
    frame = Frame(x_low=0, x_high=10, y_low=0, y_high=1)
    svg = axes(frame, x_title="Batch size (samples)", y_title="Latency (ms)", x_ticks=[(0, "0"), (10, "10")],
               y_ticks=[(0.5, "0.5")])
    assert _titles(svg) == {"x": "Batch size (samples)", "y": "Latency (ms)"}
    assert _tick_values(svg, "x") == [0, 10] and _tick_values(svg, "y") == [0.5]
    assert 'transform="rotate(-90' in svg


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 38) == [0, 10, 20, 30, 40]
    assert nice_ticks(9.7, 12.5) == [9, 10, 11, 12, 13]
    assert nice_ticks(5, 5) == [5]
