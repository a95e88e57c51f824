"""Malformed and out-of-range input gets a 400 that names the field, never a 500 (issue 13, first part)."""

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.compression_core import hostile_files
from tests.webapp.uploads import assert_rejected, stored_files
from webapp.jobs.models import Job
from webapp.modelhub.models import ModelArtifact

pytestmark = pytest.mark.django_db

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def api(user):
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)  # a 500 is the response under test, not an exception
    client.force_authenticate(user)
    return client


def _detail(response) -> str:
    return json.dumps(response.json())


def test_a_json_body_nested_too_deeply_is_a_400(api, digits_model):
    response = api.generic("POST", "/api/v1/jobs/", DEEP, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested" in _detail(response)
    assert Job.objects.count() == 0


def test_form_fields_nested_too_deeply_are_400s_naming_the_field(api, digits_model):
    response = api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": DEEP})
    assert response.status_code == 400 and "params" in response.json()
    response = api.post("/api/v1/models/", {"name": "m", "source": "builtin", "architecture": "digits_cnn",
                                            "input_shape": DEEP})
    assert response.status_code == 400 and "input_shape" in _detail(response)
    assert Job.objects.count() == 0 and ModelArtifact.objects.exclude(pk=digits_model.pk).count() == 0


@pytest.mark.parametrize("shape", [[10**30], [3, 2**63, 8], [0, 8, 8], [-1, 8, 8], ["8", 8, 8], [8.5, 8, 8]])
def test_an_input_shape_out_of_range_is_a_400(api, shape):
    response = api.post("/api/v1/models/", {"name": "m", "source": "builtin", "architecture": "digits_cnn",
                                            "input_shape": json.dumps(shape)})
    assert response.status_code == 400, response.content[:300]
    assert "input_shape" in _detail(response)
    assert ModelArtifact.objects.count() == 0


def test_a_number_of_classes_out_of_range_is_a_400(api):
    response = api.post("/api/v1/models/", {"name": "m", "source": "builtin", "architecture": "resnet18",
                                            "num_classes": 2**70})
    assert response.status_code == 400 and "num_classes" in response.json()
    assert ModelArtifact.objects.count() == 0


def test_a_job_name_too_long_is_a_400(api, digits_model):
    response = api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": L1_HALF,
                                          "name": "x" * 201}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    assert Job.objects.count() == 0


def _safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("content", [
    _safetensors(DEEP.encode()),                        # a header nested too deeply
    _safetensors(b"{not json"),                         # a header that is not JSON
    struct.pack("<Q", 10**12) + b"{}",                  # a header longer than the file
], ids=["deep-header", "bad-header", "short-file"])
def test_a_malformed_safetensors_upload_is_a_400(api, content):
    upload = SimpleUploadedFile("weights.safetensors", content, content_type="application/octet-stream")
    response = api.post("/api/v1/models/", {"name": "m", "source": "builtin", "architecture": "digits_cnn",
                                            "file": upload})
    assert response.status_code == 400, response.content[:300]
    assert "safetensors" in _detail(response)
    assert ModelArtifact.objects.count() == 0


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return os.system, ("touch /tmp/condense-pwned",)


def test_a_pickle_named_safetensors_is_rejected_without_unpickling_it(api):
    # A pickle that would run code if unpickled: the inspection reads it with torch's weights-only loader.
    hostile = pickle.dumps(_RunsCodeWhenUnpickled(), protocol=4)
    upload = SimpleUploadedFile("weights.safetensors", hostile, content_type="application/octet-stream")
    response = api.post("/api/v1/models/", {"name": "m", "source": "builtin", "architecture": "digits_cnn",
                                            "file": upload})
    body = assert_rejected(response, "neither a valid safetensors file nor a PyTorch file")
    assert body["summary"] == {} and not Path("/tmp/condense-pwned").exists()


@pytest.mark.parametrize("after", ["²", "-1", "1e3", "9" * 30])
def test_a_log_cursor_that_is_not_a_line_id_is_a_400(api, digits_model, no_enqueue, after):
    job_id = api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": L1_HALF},
                      format="json").json()["id"]
    response = api.get(f"/api/v1/jobs/{job_id}/logs/", {"after": after})
    assert response.status_code == 400, response.content[:300]
    assert "after" in _detail(response)


@pytest.mark.parametrize("query", [{"limit": "1e23"}, {"limit": str(10**23)}, {"offset": str(10**23)},
                                   {"limit": "-5"}, {"offset": "x"}])
def test_pagination_is_bounded(api, digits_model, query):
    response = api.get("/api/v1/models/", query)
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 200:
        assert len(response.json()["results"]) <= 200


def test_the_job_form_refuses_a_config_list_nested_too_deeply(client, user, digits_model):
    client.force_login(user)
    response = client.post("/jobs/new/", {"model": digits_model.pk, "algorithm": "L1NormPruner", "config_list": DEEP,
                                          "device": "cpu", "speedup": "on"})
    assert response.status_code == 200 and "The config list is not valid JSON: nested deeper than" in \
        response.content.decode()
    assert Job.objects.count() == 0


def test_guessing_passwords_at_the_token_endpoint_is_throttled(user, settings):
    from django.core.cache import cache
    from rest_framework.test import APIClient

    # Ten usernames, so the per-username lock-out (tests/webapp/test_accounts_lockout.py) stays out of the way
    # and the address's cap (50) is not reached: this is DRF's throttle alone.
    cache.clear()  # the throttle counts in the cache; start from zero and leave nothing for other tests
    client = APIClient()
    try:
        answers = [client.post("/api/v1/auth/token/", {"username": f"user{i}", "password": "guess"}).status_code
                   for i in range(10)]
        assert answers == [400] * 10
        blocked = client.post("/api/v1/auth/token/", {"username": "alice", "password": "wonderland-42"})
        assert blocked.status_code == 429  # even the right password waits: guessing must not pay off
        assert "throttled" in blocked.json()["detail"] and "available in" in blocked.json()["detail"]
        assert int(blocked["Retry-After"]) > 0
    finally:
        cache.clear()


def test_the_api_schema_needs_a_signed_in_user(api):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/schema/").status_code in (401, 403)
    assert api.get("/api/v1/schema/?format=json").status_code == 200


@pytest.mark.parametrize("params, field", [
    ({**L1_HALF, "training": {"finetune_epochs": 3000}}, "finetune_epochs"),
    ({**L1_HALF, "training": {"batch_size": 10**12}}, "batch_size"),
    ({**L1_HALF, "training_steps": 10**9}, "training_steps"),
])
def test_unbounded_work_is_refused_with_the_parameter_and_its_range(api, digits_model, no_enqueue, params, field):
    response = api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "TaylorFOWeightPruner",
                                          "params": params, "dataset": "digits"}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert field in _detail(response) and "must be <=" in _detail(response)
    assert Job.objects.count() == 0 and no_enqueue == []


@pytest.mark.parametrize("build, upload_fields, fragment", [
    (lambda p: hostile_files.relu_chain(p, 20_000), {"input_shape": "[4]"},
     "has 20,000 ONNX nodes (subgraphs and functions included), more than the limit of 15,000 "
     "(CONDENSE_ONNX_MAX_NODES)"),
    (lambda p: hostile_files.shape_builder(p, "ConstantOfShape", [20000, 20000]), {},
     "builds, in its ConstantOfShape node (output 'y'), a tensor of 400,000,000 elements"),
    (lambda p: hostile_files.declared_initializer(p, [10**15]), {},
     "declares initializer 'unused' of shape [1000000000000000]"),
], ids=["20000-relu", "constant-of-shape", "unused-initializer"])
def test_a_hostile_onnx_is_rejected_cheaply_in_the_budgeted_child(api, settings, tmp_path, media_root, build,
                                                                   upload_fields, fragment):
    # The real path: the inspection runs in `python -m compression_core intake` under a small budget.
    settings.CONDENSE_INSPECT_ISOLATED = True
    settings.CONDENSE_INSPECT_MEMORY_MB = 300
    settings.CONDENSE_INSPECT_CPU_S = 30
    before = stored_files(media_root)
    hostile = build(tmp_path / "hostile.onnx")
    response = api.post("/api/v1/models/", {"source": "onnx", **upload_fields, "file": SimpleUploadedFile(
        "hostile.onnx", hostile.read_bytes(), content_type="application/octet-stream")})
    assert_rejected(response, fragment)
    assert stored_files(media_root) == before


def test_an_operator_limit_reaches_the_inspection(api, settings, digits_onnx):
    settings.CONDENSE_ONNX_MAX_NODES = 3
    response = api.post("/api/v1/models/", {"source": "onnx", "file": SimpleUploadedFile(
        "digits.onnx", digits_onnx, content_type="application/octet-stream")})
    assert "more than the limit of 3 (CONDENSE_ONNX_MAX_NODES)" in assert_rejected(response, "nodes")["status_reason"]
