"""A job's progress by time: the plan shares the bar out by estimated seconds, the estimate follows measured rates,
training reports its batch windows."""

import re
import time

import pytest

from compression_core.algorithms import get_algorithm
from compression_core.evaluation import TrainingOptions
from compression_core.jobs import ModelSource, Recipe, run_job, stages
from compression_core.jobs.progress import PACE_PRIOR_S, STAGES, PlannedStage, ProgressEstimate, ProgressPlan
from compression_core.jobs.stages import Reporter

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
DIGITS_TRAIN = 1437  # rows of the digits train split


def _plan(algorithm, params, *, epochs=0, train_samples=DIGITS_TRAIN, batch_size=64):
    return ProgressPlan.for_job(get_algorithm(algorithm), params,
                                training=TrainingOptions(finetune_epochs=epochs, batch_size=batch_size),
                                train_samples=train_samples, speedup=True, latency_rows=2, latency_budget_s=1.0)


PLANS = {
    "pruning": lambda: _plan("L1NormPruner", {**L1_HALF, "dependency_aware": True}, epochs=3),
    "training pruner": lambda: _plan("SlimPruner", {**L1_HALF, "training_steps": 200}),
    "quantization-aware training": lambda: _plan("QATQuantizer", {"config_list": [], "epochs": 4}),
    "prune then quantize": lambda: _plan("L1NormPruner", {**L1_HALF, "quantization": {
        "algorithm": "PostTrainingQuantizer", "params": {"config_list": []}}}),
    "analysis": lambda: _plan("SensitivityAnalysis", {"config_list": [], "sparsities": [0.25, 0.5, 0.75]}),
}


@pytest.mark.parametrize("kind", PLANS)
def test_the_plans_fractions_are_monotone_and_reach_one(kind):
    spans = PLANS[kind]().fractions()
    assert list(spans) == list(STAGES)
    ends = [0.0] + [end for _, end in spans.values()]
    assert all(start == pytest.approx(previous) for (start, _), previous in zip(spans.values(), ends))
    assert all(start <= end for start, end in spans.values())
    assert spans["measure_original"][1] > 0 and spans["done"] == (1.0, 1.0)
    assert max(end for _, end in spans.values()) == pytest.approx(1.0)


def test_the_stages_that_train_weigh_by_their_steps():
    assert PLANS["training pruner"]().stages["prune"].steps == 200
    assert PLANS["quantization-aware training"]().stages["quantize"].steps == 4 * 18  # 80 % of 1437 rows, by 64
    assert PLANS["prune then quantize"]().stages["quantize"].steps == 0
    analysis = PLANS["analysis"]().fractions()
    assert analysis["analyse"][1] - analysis["analyse"][0] > 0.5 and analysis["prune"][0] == analysis["prune"][1]


def test_fine_tuning_20_epochs_owns_most_of_the_bar():
    for samples, batch_size in ((DIGITS_TRAIN, 64), (60_000, 128)):
        spans = _plan("L1NormPruner", L1_HALF, epochs=20, train_samples=samples, batch_size=batch_size).fractions()
        start, end = spans["finetune"]
        assert start < 0.25 and end - start > 0.55, (samples, spans["finetune"])
    # The old fixed table gave fine-tuning 5 % of the bar whatever its length: now 400 epochs are nearly all of it.
    start, end = _plan("L1NormPruner", L1_HALF, epochs=400, train_samples=60_000).fractions()["finetune"]
    assert start < 0.01 and end > 0.99


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_estimate_waits_for_a_basis_then_follows_the_measured_rate():
    plan = ProgressPlan([PlannedStage("load", 2.0), PlannedStage("measure_original", 2.0),
                         PlannedStage("finetune", 0.0, steps=1000), PlannedStage("export", 2.0)])
    clock = FakeClock()
    estimate = ProgressEstimate(plan, clock=clock)
    seen = [estimate.update("load", 0.0)]
    clock.now = 4.0  # loading took twice its plan, and so will measuring: the fixed stages ahead go at that pace
    seen.append(estimate.update("measure_original", 0.0))
    assert [e.eta_s for e in seen] == [None, None]  # fine-tuning ahead, no training step timed
    clock.now = 8.0
    seen.append(estimate.update("finetune", 0.0))
    assert seen[-1].eta_s is None
    clock.now = 18.0  # the first point: the warm-up before it is not the training's rate
    seen.append(estimate.update("finetune", 0.1))
    assert seen[-1].eta_s is None
    pace = (8.0 + PACE_PRIOR_S) / (4.0 + PACE_PRIOR_S)  # loading and measuring: 8 s for 4 planned
    assert 1.5 < pace < 2.0 and estimate.pace == pytest.approx(pace)
    clock.now = 28.0  # a tenth of the steps in 10 s: 80 s of fine-tuning left, then the export at that pace
    seen.append(estimate.update("finetune", 0.2))
    assert seen[-1].eta_s == pytest.approx(80.0 + 2.0 * pace)
    clock.now = 58.0
    seen.append(estimate.update("finetune", 0.5))
    assert seen[-1].eta_s == pytest.approx(50.0 + 2.0 * pace)
    clock.now = 60.0
    seen.append(estimate.update("load", 0.0))  # a late report of an earlier stage does not move the bar back
    clock.now = 108.0
    seen.append(estimate.update("export", 0.0))
    seen.append(estimate.update("done", 0.0))
    fractions = [e.fraction for e in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1].eta_s == 0.0
    # Once measured, the bar moves with time: half of the fine-tuning is about half of the bar.
    assert 0.35 < seen[5].fraction < 0.65


def test_a_training_reports_its_epochs_and_batch_windows(monkeypatch):
    monkeypatch.setattr(stages, "WINDOW_S", 0.0)
    seen = []
    report = Reporter(lambda fraction, message, detail=None: seen.append((fraction, message, detail)))
    report("quantize", "quantizing")
    hook = stages.TrainingReports(report, "quantize", "quantization-aware training", per_epoch=25, epochs=2,
                                  log_epochs=True, loss_of=lambda: 0.4125)
    for _ in range(50):
        hook(None)
    messages = [message for _, message, _ in seen]
    assert messages == ["quantizing",
                        "quantization-aware training: epoch 1 of 2, batch 10 of 25, loss 0.412",
                        "quantization-aware training: epoch 1 of 2, batch 20 of 25, loss 0.412",
                        "quantization-aware training: epoch 1 of 2",
                        "quantization-aware training: epoch 2 of 2, batch 10 of 25, loss 0.412",
                        "quantization-aware training: epoch 2 of 2, batch 20 of 25, loss 0.412",
                        "quantization-aware training: epoch 2 of 2"]
    assert report.log == ["quantizing", "quantization-aware training: epoch 1 of 2",
                          "quantization-aware training: epoch 2 of 2"]
    window = seen[1][2]
    assert (window["stage"], window["done"], window["total"], window["unit"]) == ("quantize", 0, 2, "epoch")
    assert (window["batch"], window["batches"], window["in_log"]) == (10, 25, False)
    assert seen[3][2]["in_log"] is True and seen[3][2]["done"] == 1
    assert [f for f, _, _ in seen] == sorted(f for f, _, _ in seen)


def test_windows_are_sent_at_most_every_window_s():
    seen = []
    report = Reporter(lambda fraction, message: seen.append(message))
    report("finetune", "fine-tuning: epoch 1 of 1")
    hook = stages.TrainingReports(report, "finetune", "fine-tuning", per_epoch=10_000, epochs=1)
    for _ in range(5000):  # far quicker than WINDOW_S: no window
        hook(None)
    assert seen == ["fine-tuning: epoch 1 of 1"]


def test_a_real_job_reports_per_batch_and_its_estimate_tracks_the_time_left(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "WINDOW_S", 0.2)
    epochs = 20
    recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
                    params={**L1_HALF, "training": {"finetune_epochs": epochs, "batch_size": 16}}, dataset="digits",
                    output_dir=str(tmp_path), latency_runs=3, latency_budget_s=0.2, latency_batch_sizes=(1,))
    reports = []

    def progress(fraction, message, detail=None):
        reports.append((time.monotonic(), fraction, message, detail))

    run_job(recipe, progress=progress)
    finished = time.monotonic()
    fractions = [fraction for _, fraction, _, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and reports[-1][3]["eta_s"] == 0.0

    # Fine-tuning is most of this job: its bar starts well below the middle.
    first_epoch = next(r for r in reports if r[2] == f"fine-tuning: epoch 1 of {epochs}")
    assert first_epoch[1] < 0.5

    windows = [r for r in reports if r[3]["in_log"] is False]
    assert windows and all(re.fullmatch(rf"fine-tuning: epoch \d+ of {epochs}, batch \d+ of 90, loss [\d.e+-]+", r[2])
                           for r in windows)
    assert all(r[3]["stage"] == "finetune" and r[3]["unit"] == "epoch" and r[3]["batches"] == 90 for r in windows)

    # Epoch by epoch the estimate comes down, and it is near the time that was actually left (loosely: a shared
    # machine's speed changes under it).
    epoch_reports = [r for r in reports if re.fullmatch(rf"fine-tuning: epoch \d+ of {epochs}", r[2])]
    etas = [r[3]["eta_s"] for r in epoch_reports if r[3]["eta_s"] is not None]
    assert len(etas) >= epochs - 2 and etas[-1] < etas[0]
    middle = epoch_reports[epochs // 2]
    actual_left = finished - middle[0]
    assert actual_left / 4 < middle[3]["eta_s"] < actual_left * 4, (middle[3]["eta_s"], actual_left)


def test_a_pruner_that_trains_reports_its_training_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "WINDOW_S", 0.0)
    recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8],
                    algorithm="TaylorFOWeightPruner", params={**L1_HALF, "training_steps": 40}, dataset="digits",
                    output_dir=str(tmp_path), latency_runs=3, latency_budget_s=0.2, latency_batch_sizes=(1,))
    reports = []
    run_job(recipe, progress=lambda fraction, message, detail=None: reports.append((fraction, message, detail)))
    windows = [(message, detail) for _, message, detail in reports if not detail["in_log"]]
    assert [message.split(", loss")[0] for message, _ in windows] == [
        f"pruning with TaylorFOWeightPruner: training step {step} of about 40" for step in (10, 20, 30, 40)]
    assert [(d["stage"], d["done"], d["total"], d["unit"]) for _, d in windows] == [
        ("prune", step, 40, "step") for step in (10, 20, 30, 40)]
    assert [f for f, _, _ in reports] == sorted(f for f, _, _ in reports)
