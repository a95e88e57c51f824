"""Inspections in a budgeted child process: accepted uploads come back whole, hostile ones stop at the budget."""

import io
import zipfile

import pytest

from compression_core.jobs.intake import IntakeRequest, intake_run
from compression_core.jobs.sandbox import IntakeBudget, IntakeRefused, intake_in_sandbox


def test_a_builtin_model_is_inspected_in_the_child(tmp_path):
    request = IntakeRequest(kind="model", workdir=str(tmp_path), source="builtin", architecture="digits_cnn")
    outcome = intake_in_sandbox(request, IntakeBudget(memory_mb=1024, cpu_s=60, wall_s=120))
    assert outcome["summary"]["input_shape"] == [1, 8, 8]
    assert outcome["summary"]["prunable_layers"] == ["conv1", "conv2", "fc1", "fc2"]
    assert outcome == intake_run(request) | {"summary": outcome["summary"]}


def test_an_inspection_needing_more_memory_than_the_budget_is_stopped(tmp_path):
    # ResNet-50 at 3 x 1024 x 1024 (the largest input allowed): activations of hundreds of MB.
    request = IntakeRequest(kind="model", workdir=str(tmp_path), source="builtin", architecture="resnet50",
                            input_shape=[3, 1024, 1024])
    with pytest.raises(IntakeRefused, match=r"more than its 100 MB of memory .*CONDENSE_INSPECT_MEMORY_MB"):
        intake_in_sandbox(request, IntakeBudget(memory_mb=100, cpu_s=120, wall_s=120))


def test_the_cpu_budget_starts_after_the_imports_and_stops_the_child(tmp_path):
    # A builtin ResNet-50 inspected at a large input: seconds of CPU work past a 1 s budget.
    request = IntakeRequest(kind="model", workdir=str(tmp_path), source="builtin", architecture="resnet50",
                            input_shape=[3, 512, 512])
    with pytest.raises(IntakeRefused, match=r"more than 1 s of CPU time .*CONDENSE_INSPECT_CPU_S"):
        intake_in_sandbox(request, IntakeBudget(memory_mb=3072, cpu_s=1, wall_s=120))


def test_the_wall_clock_budget_kills_the_child(tmp_path):
    request = IntakeRequest(kind="model", workdir=str(tmp_path), source="builtin", architecture="resnet50",
                            input_shape=[3, 512, 512])
    with pytest.raises(IntakeRefused, match=r"longer than 2 s .*CONDENSE_INSPECT_WALL_S"):
        intake_in_sandbox(request, IntakeBudget(memory_mb=3072, cpu_s=300, wall_s=2))


def test_a_refusal_comes_back_as_the_engines_sentence(tmp_path):
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", b"hello")
    request = IntakeRequest(kind="dataset", workdir=str(tmp_path), path=str(path))
    with pytest.raises(IntakeRefused, match="holds no images"):
        intake_in_sandbox(request, IntakeBudget(memory_mb=1024, cpu_s=60, wall_s=120))


def test_in_process_mode_gives_the_same_sentences(tmp_path):
    buffer = io.BytesIO(b"not a zip at all")
    path = tmp_path / "cut.zip"
    path.write_bytes(buffer.getvalue())
    request = IntakeRequest(kind="dataset", workdir=str(tmp_path), path=str(path))
    with pytest.raises(IntakeRefused) as isolated:
        intake_in_sandbox(request, IntakeBudget(memory_mb=1024, cpu_s=60, wall_s=120))
    with pytest.raises(IntakeRefused) as inline:
        intake_in_sandbox(request, IntakeBudget(isolated=False))
    assert str(isolated.value) == str(inline.value)
