"""In Chromium: the job form's controls write the config list and follow it, its sections follow the algorithm,
and a cloned job changed with the sparsity control makes a new job with the new sparsity."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.browser]

CONFIG = "textarea[name=config_list]"


@pytest.fixture
def queued_only(monkeypatch, workers_paused):
    """Jobs stay queued: no broker, no worker; these tests look at the form and the job rows."""
    monkeypatch.setattr("webapp.jobs.services.job_publish", lambda job_id: None)


@pytest.fixture
def digits(user):
    from webapp.modelhub.services import model_create

    return model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")




def _config(page) -> list:
    return json.loads(page.input_value(CONFIG))


def _set_sparsity(page, percent: int) -> None:
    # A range input is moved by its value and the input event a drag sends.
    page.eval_on_selector("#sparsity-control", "(el, v) => { el.value = v; "
                          "el.dispatchEvent(new Event('input', {bubbles: true})); }", str(percent))


def _picked(page) -> list[str]:
    return page.eval_on_selector_all("input.layer-pick:checked", "boxes => boxes.map(b => b.value)")


def test_controls_write_the_config_list_and_follow_it(page, live_server, digits, sign_in):
    sign_in(f"/jobs/new/?model={digits.pk}")
    assert _config(page) == [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    assert page.inner_text("#sparsity-value") == "50 %" and page.input_value("#id_dataset") == "digits"
    assert _picked(page) == ["conv1", "conv2"]
    # A channel pruner cannot take the output layer: shown, disabled, with the reason.
    assert page.is_disabled("input.layer-pick[value=fc2]")
    assert "model output" in page.inner_text("#layer-picker")

    _set_sparsity(page, 70)
    assert _config(page) == [{"op_types": ["Conv2d"], "sparse_ratio": 0.7}]
    assert page.inner_text("#sparsity-value") == "70 %"

    page.uncheck("input.layer-pick[value=conv2]")
    page.check("input.layer-pick[value=fc1]")
    assert _config(page) == [{"op_names": ["conv1", "fc1"], "sparse_ratio": 0.7}]
    page.click("#pick-none")
    page.click("#pick-conv")
    assert _config(page) == [{"op_types": ["Conv2d"], "sparse_ratio": 0.7}]

    # Edited JSON moves the controls.
    page.fill(CONFIG, '[{"op_names": ["conv2", "fc1"], "sparse_ratio": 0.25}]')
    assert page.input_value("#sparsity-control") == "25" and page.inner_text("#sparsity-value") == "25 %"
    assert _picked(page) == ["conv2", "fc1"] and not page.is_visible("#config-controls-state")

    # A quantizer: the same layers, a bits control with the widths it takes, no training / speed-up sections.
    page.select_option("#id_algorithm", "PostTrainingQuantizer")
    assert _config(page) == [{"op_names": ["conv2", "fc1"], "quant_bits": 8}]
    assert page.is_visible("#bits-control") and not page.is_visible("#sparsity-control")
    assert page.eval_on_selector_all("#bits-control option:not([disabled])", "o => o.map(x => x.value)") == ["8"]
    for section in ("#training-options", "#speedup-section", "#quantize-after"):
        assert not page.is_visible(section), section
    page.select_option("#id_algorithm", "NaiveQuantizer")
    assert page.eval_on_selector_all("#bits-control option:not([disabled])", "o => o.map(x => x.value)") == [
        "8", "7", "6", "5", "4", "3", "2"]
    page.select_option("#bits-control", "4")
    assert _config(page) == [{"op_names": ["conv2", "fc1"], "quant_bits": 4}]
    page.select_option("#id_algorithm", "QATQuantizer")  # trains for its own epochs: training, no fine-tuning
    assert page.is_visible("#training-options") and not page.is_visible("#id_training_finetune_epochs")
    assert not page.is_visible("#speedup-section")

    # A fine-grained pruner: any layer, no speed-up; a channel pruner again: speed-up.
    page.select_option("#id_algorithm", "LevelPruner")
    assert _config(page) == [{"op_names": ["conv2", "fc1"], "sparse_ratio": 0.25}]
    assert page.is_enabled("input.layer-pick[value=fc2]") and not page.is_visible("#speedup-section")
    assert page.is_visible("#training-options") and page.is_visible("#id_training_finetune_epochs")
    page.select_option("#id_algorithm", "L1NormPruner")
    assert page.is_visible("#speedup-section") and page.is_disabled("input.layer-pick[value=fc2]")

    # What the controls cannot show, they leave alone.
    custom = '[{"op_types": ["Conv2d"], "sparse_ratio": 0.5}, {"op_names": ["fc1"], "sparse_ratio": 0.2}]'
    page.fill(CONFIG, custom)
    assert page.is_visible("#config-controls-state") and "Custom config list" in page.inner_text("#config-controls")
    assert page.is_disabled("#sparsity-control") and page.is_disabled("input.layer-pick[value=conv1]")
    page.select_option("#id_algorithm", "FPGMPruner")
    assert page.input_value(CONFIG) == custom
    page.click("#use-controls")
    assert len(_config(page)) == 1 and page.is_enabled("#sparsity-control")
    assert page.problems == [], page.problems


def test_the_model_choice_changes_the_layers_and_the_datasets(page, live_server, user, digits, sign_in):
    from webapp.modelhub.services import model_create

    cifar = model_create(owner=user, name="cifar", source="builtin", architecture="cifar_cnn")
    sign_in(f"/jobs/new/?model={digits.pk}")
    page.check("input.layer-pick[value=fc1]")
    assert _config(page) == [{"op_names": ["conv1", "conv2", "fc1"], "sparse_ratio": 0.5}]
    assert page.is_enabled("#id_dataset option[value=digits]")

    page.select_option("#id_model", str(cifar.pk))
    names = page.eval_on_selector_all("input.layer-pick", "boxes => boxes.map(b => b.value)")
    assert names[0] == "features.0" and names[-1] == "classifier"
    assert _config(page) == [{"op_names": [], "sparse_ratio": 0.5}]  # the digits layers are not in this model
    page.click("#pick-conv")
    assert _config(page) == [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    # The 8 x 8 digits do not fit a 3 x 32 x 32 input: not offered; random inputs instead.
    assert page.is_disabled("#id_dataset option[value=digits]") and page.input_value("#id_dataset") == ""

    page.select_option("#id_model", str(digits.pk))
    assert page.input_value("#id_dataset") == "digits" and _picked(page) == ["conv1", "conv2"]
    assert page.problems == [], page.problems


def test_clone_a_job_change_its_sparsity_and_submit(page, live_server, user, digits, queued_only, sign_in):
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_create

    job = job_create(owner=user, model=digits, algorithm="L1NormPruner", dataset="digits", device="cpu",
                     params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]},
                     name="half", tags=["sweep"])
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    sign_in(f"/jobs/{job.pk}/")
    page.click("#job-params summary")
    assert json.loads(page.inner_text("#job-params-json")) == job.params
    assert "Authorization: Token $CONDENSE_TOKEN" in page.inner_text("#job-curl")
    page.click("#copy-params")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == job.params

    page.click("#clone-job")
    page.wait_for_url(re.compile(rf".*/jobs/new/\?clone={job.pk}$"))
    assert page.input_value("#id_name") == "half (copy)" and page.input_value("#id_tags") == "sweep"
    assert page.inner_text("#sparsity-value") == "50 %"
    _set_sparsity(page, 80)
    page.click("#job-submit")
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    clone = Job.objects.latest("pk")
    assert clone.pk != job.pk and page.url.endswith(f"/jobs/{clone.pk}/")
    assert clone.params["config_list"] == [{"op_types": ["Conv2d"], "sparse_ratio": 0.8}]
    assert (clone.name, clone.tags, clone.dataset, clone.device) == ("half (copy)", ["sweep"], "digits", "cpu")
    assert page.problems == [], page.problems
