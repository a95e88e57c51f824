"""The job form (datasets that fit the model, sections per algorithm, devices, tags, cloning) and the job page's
parameters block (JSON, the equivalent API call, the command-line recipe), through Django's test client."""

from __future__ import annotations

import html as html_lib
import json
import re

import numpy as np
import pytest

from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db

L1_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


@pytest.fixture
def cifar_model(user):
    from webapp.modelhub.services import model_create

    return model_create(owner=user, name="cifar", source="builtin", architecture="cifar_cnn")


@pytest.fixture
def rgb_dataset(user, upload, make_npz):
    """An upload of 3 x 32 x 32 images: the input of cifar_cnn (digits_cnn takes them resized and grey)."""
    from webapp.datahub.services import dataset_create

    x = np.random.default_rng(0).random((20, 3, 32, 32), dtype=np.float32)
    return dataset_create(owner=user, name="rgb", upload=upload("rgb.npz", make_npz(x=x, y=np.arange(20) % 10)))


@pytest.fixture
def features_dataset(user, upload, make_npz):
    """An upload of 10 features per sample: fits no image model."""
    from webapp.datahub.services import dataset_create

    x = np.random.default_rng(0).random((20, 10), dtype=np.float32)
    return dataset_create(owner=user, name="features", upload=upload("f.npz", make_npz(x=x)))


def _json_script(page: str, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', page, re.S)
    assert match, f"no #{element_id} in the page"
    return json.loads(match.group(1))


def _pre(page: str, element_id: str) -> str:
    match = re.search(rf'<pre class="code" id="{element_id}">(.*?)</pre>', page, re.S)
    assert match, f"no pre#{element_id} in the page"
    return html_lib.unescape(match.group(1))


def _selected(page: str, name: str) -> str | None:
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert select, f"no select {name}"
    option = re.search(r'<option value="([^"]*)"[^>]*selected', select.group(1))
    return option.group(1) if option else None


def _post(model, **overrides):
    data = {"model": model.pk, "algorithm": "L1NormPruner", "config_list": json.dumps(L1_HALF),
            "dependency_aware": "on", "speedup": "on", "dataset": "digits", "device": "cpu", "name": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# -- datasets that fit the model ------------------------------------------------------------------------------


def test_dataset_fit_rule_is_the_engines(digits_model, cifar_model, rgb_dataset, features_dataset):
    from webapp.datahub.selectors import dataset_fit_error

    assert rgb_dataset.status == "ready", rgb_dataset.status_reason
    assert dataset_fit_error([1, 8, 8], builtin="digits") == ""
    assert "gives inputs of shape [1, 8, 8], but the model takes [3, 32, 32]" in dataset_fit_error(
        [3, 32, 32], builtin="digits")
    assert dataset_fit_error([3, 32, 32], upload=rgb_dataset) == ""
    assert dataset_fit_error([1, 8, 8], upload=rgb_dataset) == ""  # images are resized and made grey
    assert "the model takes [1, 8, 8]" in dataset_fit_error([1, 8, 8], upload=features_dataset)


def test_form_lists_and_defaults_the_datasets_that_fit_each_model(client_in, digits_model, cifar_model,
                                                                  rgb_dataset, digits_dataset, features_dataset):
    page = client_in.get(f"/jobs/new/?model={digits_model.pk}").content.decode()
    models = _json_script(page, "job-form-models")
    rgb, my_digits = f"upload:{rgb_dataset.pk}", f"upload:{digits_dataset.pk}"
    assert f'<option value="upload:{features_dataset.pk}"' in page  # listed, for the page to filter
    digits_fit, cifar_fit = models[str(digits_model.pk)], models[str(cifar_model.pk)]
    assert digits_fit["datasets"][0] == "digits" and set(digits_fit["datasets"]) == {"digits", rgb, my_digits}
    assert digits_fit["default"] == "digits"  # the built-in one that fits
    assert set(cifar_fit["datasets"]) == {rgb, my_digits}  # the 8 x 8 digits resized; no built-in fits
    assert cifar_fit["default"] == rgb  # the upload of the model's own shape
    assert _selected(page, "dataset") == "digits"
    assert '<option value="">None (random inputs)</option>' in page

    page = client_in.get(f"/jobs/new/?model={cifar_model.pk}").content.decode()
    assert _selected(page, "dataset") == rgb
    # An explicit choice (the dataset page's link) is kept.
    page = client_in.get(f"/jobs/new/?model={digits_model.pk}&dataset={my_digits}").content.decode()
    assert _selected(page, "dataset") == my_digits


def test_dataset_comes_before_the_training_options(client_in, digits_model):
    page = client_in.get("/jobs/new/").content.decode()
    assert page.index('name="dataset"') < page.index('id="training-options"') < page.index('name="speedup"')
    assert page.index('id="config-controls"') < page.index('name="dataset"')


def test_a_dataset_that_does_not_fit_is_refused_by_the_form(client_in, cifar_model, no_enqueue):
    response = client_in.post("/jobs/new/", _post(cifar_model, dataset="digits"))
    assert response.status_code == 200
    assert "gives inputs of shape [1, 8, 8], but the model takes [3, 32, 32]" in response.content.decode()
    assert "dataset" in response.context["form"].errors and Job.objects.count() == 0


# -- sections per algorithm -----------------------------------------------------------------------------------


def test_sections_follow_the_registry():
    from compression_core.algorithms import all_algorithms, get_algorithm
    from webapp.dashboard.forms import algorithm_sections, quant_bits_choices

    assert algorithm_sections(get_algorithm("L1NormPruner")) == [
        "sparsity", "layers", "training", "finetune", "quantize_after", "speedup"]
    assert "speedup" not in algorithm_sections(get_algorithm("LevelPruner"))  # fine-grained: nothing to remove
    assert algorithm_sections(get_algorithm("PostTrainingQuantizer")) == ["bits", "layers"]
    assert algorithm_sections(get_algorithm("QATQuantizer")) == ["bits", "layers", "training"]
    assert "speedup" not in algorithm_sections(get_algorithm("SensitivityAnalysis"))
    for spec in all_algorithms():
        sections = algorithm_sections(spec)
        assert ("training" in sections) == ("training" in spec.params_schema["properties"])
        assert ("bits" in sections) == (spec.kind == "quantization")
    assert quant_bits_choices(get_algorithm("PostTrainingQuantizer")) == [8]
    assert quant_bits_choices(get_algorithm("NaiveQuantizer")) == [8, 7, 6, 5, 4, 3, 2]
    assert quant_bits_choices(get_algorithm("DoReFaQuantizer")) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert quant_bits_choices(get_algorithm("BNNQuantizer")) == [1]
    assert quant_bits_choices(get_algorithm("PowerOfTwoQuantizer")) == [4, 3, 2]  # the example plugin's
    assert quant_bits_choices(get_algorithm("L1NormPruner")) == []
    assert quant_bits_choices(get_algorithm("L1NormPruner")) == []


def test_page_marks_sections_and_gives_each_algorithms_controls(client_in, digits_model):
    page = client_in.get("/jobs/new/").content.decode()
    algorithms = _json_script(page, "job-form-algorithms")
    assert algorithms["PostTrainingQuantizer"]["bits"] == [8]
    assert algorithms["L1NormPruner"]["sections"][-1] == "speedup"
    for section in ("sparsity", "bits", "layers", "training", "finetune", "quantize_after", "speedup"):
        assert f'data-section="{section}"' in page
    assert re.search(r'<input type="range" id="sparsity-control" min="0" max="95"', page)
    assert '<select id="bits-control">' in page and 'id="layer-picker"' in page
    layers = _json_script(page, "job-form-models")[str(digits_model.pk)]["layers"]
    assert [(layer["name"], layer["type"]) for layer in layers] == [
        ("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("fc2", "Linear")]
    assert layers[-1]["reason"] == "model output" and layers[0]["reason"] == ""


def test_layer_picks_say_why_channels_stay():
    from webapp.dashboard.forms import model_layer_picks

    summary = {
        "layers": [{"name": "stem", "type": "Conv2d"}, {"name": "block.conv", "type": "Conv2d"},
                   {"name": "head", "type": "Linear"}],
        "prunable_layers": ["stem", "block.conv", "head"],
        "prunability": {"groups": [{"layers": ["stem", "block.conv"], "prunable": True, "reason": None},
                                   {"layers": ["head"], "prunable": False, "reason": "model output"}],
                        "unprunable": [{"layer": "block.conv", "reason": "a reshape holds its channels"}]},
    }
    assert model_layer_picks(summary) == [
        {"name": "stem", "type": "Conv2d", "reason": "", "note": ""},
        {"name": "block.conv", "type": "Conv2d", "reason": "", "note": "a reshape holds its channels"},
        {"name": "head", "type": "Linear", "reason": "model output", "note": ""}]
    failed = {**summary, "prunability": {"error": "tracing failed", "groups": [], "unprunable": []}}
    assert {pick["reason"] for pick in model_layer_picks(failed)} == {
        "channel pruning cannot be planned: tracing failed"}


def test_speedup_is_off_for_an_algorithm_it_does_not_apply_to(client_in, digits_model, no_enqueue):
    data = _post(digits_model, algorithm="LevelPruner")
    assert client_in.post("/jobs/new/", data).status_code == 302
    assert Job.objects.get().speedup is False


# -- devices --------------------------------------------------------------------------------------------------


def test_gpu_is_offered_only_while_a_gpu_worker_runs(client_in, digits_model, gpu_worker_info):
    from webapp.fleet.services import worker_heartbeat

    page = client_in.get("/jobs/new/").content.decode()
    assert '<option value="gpu" disabled>GPU (no GPU worker is running)</option>' in page
    assert "no GPU worker is running; start one" in page

    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info)
    page = client_in.get("/jobs/new/").content.decode()
    assert '<option value="gpu">GPU</option>' in page and "no GPU worker is running" not in page


# -- tags -----------------------------------------------------------------------------------------------------


def test_tags_are_split_stripped_and_checked(client_in, digits_model, no_enqueue):
    assert client_in.post("/jobs/new/", _post(digits_model, tags=" baseline, 50% ,,baseline")).status_code == 302
    assert Job.objects.get().tags == ["baseline", "50%"]

    too_many = ", ".join(f"t{i}" for i in range(11))
    refused = client_in.post("/jobs/new/", _post(digits_model, tags=too_many)).content.decode()
    assert "at most 10 tags, got 11" in refused
    too_long = client_in.post("/jobs/new/", _post(digits_model, tags="x" * 41)).content.decode()
    assert "a tag has at most 40 characters" in too_long
    assert Job.objects.count() == 1


def test_api_takes_tags(api, digits_model, no_enqueue):
    body = {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": {"config_list": L1_HALF},
            "dataset": "digits", "tags": ["api", " run 2 "]}
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 201, response.json()
    assert Job.objects.get(pk=response.json()["id"]).tags == ["api", "run 2"]
    for tags, message in ((["y" * 41], "no more than 40 characters"), ([0], "must be a string, got int"),
                          ([f"t{i}" for i in range(11)], "no more than 10 elements")):
        refused = api.post("/api/v1/jobs/", {**body, "tags": tags}, format="json")
        assert refused.status_code == 400 and message in json.dumps(refused.json()), refused.json()
    assert Job.objects.count() == 1


# -- cloning --------------------------------------------------------------------------------------------------


@pytest.fixture
def rich_job(user, digits_model, no_enqueue):
    from webapp.jobs.services import job_create

    params = {"config_list": [{"op_names": ["conv1", "fc1"], "sparse_ratio": 0.3}], "dependency_aware": False,
              "training": {"finetune_epochs": 2, "optimizer": "sgd", "lr": 0.02},
              "quantization": {"algorithm": "NaiveQuantizer", "params": {}}}
    return job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=params, speedup=False,
                      dataset="digits", device="cpu", name="thirty", tags=["clone-me", "b"])


def test_clone_link_opens_the_form_filled_with_the_job(client_in, rich_job):
    detail = client_in.get(f"/jobs/{rich_job.pk}/").content.decode()
    assert f'<a class="button" id="clone-job" href="/jobs/new/?clone={rich_job.pk}">' in detail

    response = client_in.get(f"/jobs/new/?clone={rich_job.pk}")
    assert response.status_code == 200
    page = response.content.decode()
    form = response.context["form"]
    assert json.loads(form["config_list"].value()) == rich_job.params["config_list"]
    assert _selected(page, "model") == str(rich_job.model_id)
    assert _selected(page, "algorithm") == "L1NormPruner"
    assert _selected(page, "dataset") == "digits" and _selected(page, "device") == "cpu"
    assert _selected(page, "quantize_after") == "NaiveQuantizer"
    assert _selected(page, "training_optimizer") == "sgd"
    assert re.search(r'name="training_finetune_epochs" value="2"', page)
    assert re.search(r'name="training_lr" value="0.02"', page)
    assert not re.search(r'name="dependency_aware"[^>]*checked', page)
    assert not re.search(r'name="speedup"[^>]*checked', page)
    assert 'value="clone-me, b"' in page and 'value="thirty (copy)"' in page


def test_the_cloned_form_posted_back_makes_an_equal_job(client_in, rich_job):
    form = client_in.get(f"/jobs/new/?clone={rich_job.pk}").context["form"]
    data = {}
    for field in form:
        value = field.value()
        if value in (None, False, ""):
            continue
        data[field.html_name] = "on" if value is True else value
    response = client_in.post("/jobs/new/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    clone = Job.objects.latest("pk")
    assert clone.pk != rich_job.pk and clone.name == "thirty (copy)" and clone.tags == rich_job.tags
    for attribute in ("model_id", "algorithm", "params", "speedup", "dataset", "device"):
        assert getattr(clone, attribute) == getattr(rich_job, attribute), attribute


def test_another_users_job_cannot_be_cloned(client, other_user, rich_job):
    client.force_login(other_user)
    assert client.get(f"/jobs/new/?clone={rich_job.pk}").status_code == 404
    assert client.get("/jobs/new/?clone=abc").status_code == 404


# -- the parameters block of the job page ---------------------------------------------------------------------


def test_job_page_shows_params_as_json_with_the_api_call_and_the_recipe(client_in, rich_job):
    from compression_core.jobs import Recipe

    page = client_in.get(f"/jobs/{rich_job.pk}/").content.decode()
    assert "{&#x27;" not in page and "True" not in _pre(page, "job-params-json")  # no Python dict any more
    assert json.loads(_pre(page, "job-params-json")) == rich_job.params
    assert '"op_names": ["conv1", "fc1"],' in _pre(page, "job-params-json")  # short lists on one line
    assert 'id="copy-params" data-copy-target="job-params-json"' in page

    curl = _pre(page, "job-curl")
    assert curl.startswith("curl -X POST http://testserver/api/v1/jobs/ \\\n")
    assert '-H "Authorization: Token $CONDENSE_TOKEN"' in curl
    body = json.loads(re.search(r"-d '(.*)'$", curl, re.S).group(1))
    assert body == {"model": rich_job.model_id, "algorithm": "L1NormPruner", "params": rich_job.params,
                    "speedup": False, "dataset": "digits", "device": "cpu", "name": "thirty",
                    "tags": ["clone-me", "b"]}

    recipe_json = json.loads(_pre(page, "job-cli"))
    assert recipe_json["model"] == {"architecture": "digits_cnn"} and recipe_json["dataset"] == "digits"
    recipe = Recipe.from_dict(recipe_json)
    assert (recipe.algorithm, recipe.params, recipe.input_shape, recipe.speedup) == (
        "L1NormPruner", rich_job.params, [1, 8, 8], False)
    assert "python -m compression_core run recipe.json" in page and 'id="job-cli-files"' not in page


def test_curl_body_posted_to_the_api_creates_an_equal_job(client_in, user, rich_job):
    from rest_framework.test import APIClient

    from webapp.accounts.services import api_token_create

    page = client_in.get(f"/jobs/{rich_job.pk}/").content.decode()
    body = re.search(r"-d '(.*)'$", _pre(page, "job-curl"), re.S).group(1)
    _, key = api_token_create(owner=user, name="curl", expires_in_days=1)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = api.post("/api/v1/jobs/", body, content_type="application/json")
    assert response.status_code == 201, response.json()
    again = Job.objects.get(pk=response.json()["id"])
    for attribute in ("model_id", "algorithm", "params", "speedup", "dataset", "dataset_upload_id", "device",
                      "name", "tags"):
        assert getattr(again, attribute) == getattr(rich_job, attribute), attribute


def test_recipe_of_an_uploaded_model_and_dataset_names_their_files(client_in, user, upload, digits_onnx,
                                                                   digits_dataset, no_enqueue):
    from webapp.jobs.services import job_create
    from webapp.modelhub.services import model_create

    model = model_create(owner=user, name="my onnx", source="onnx", upload=upload("net.onnx", digits_onnx))
    assert model.status == "ready", model.status_reason
    job = job_create(owner=user, model=model, algorithm="L1NormPruner", params={"config_list": L1_HALF},
                     dataset_upload=digits_dataset)
    page = client_in.get(f"/jobs/{job.pk}/").content.decode()
    recipe = json.loads(_pre(page, "job-cli"))
    assert recipe["model"]["path"].endswith(".onnx") and "architecture" not in recipe["model"]
    assert recipe["dataset"]["path"].endswith(".npz") and recipe["dataset"]["format"] == "npz"
    files = re.search(r'<ul class="hint" id="job-cli-files">(.*?)</ul>', page, re.S).group(1)
    assert "the model file you uploaded as" in files and "my onnx" in files and "my digits" in files
    body = json.loads(re.search(r"-d '(.*)'$", _pre(page, "job-curl"), re.S).group(1))
    assert body["dataset_id"] == digits_dataset.pk and "dataset" not in body
