"""The model upload form and the model page's batch check, through Django's test client."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.modelhub.models import ModelArtifact

pytestmark = pytest.mark.django_db


def _zip_upload(make_zip, files: dict, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_zip(files), content_type="application/zip")


def test_zip_with_external_data_through_the_form(client_in, user, make_zip, dynamic_external_onnx):
    response = client_in.post("/models/new/", {"source": "onnx", "name": "", "input_shape": "",
                                               "file": _zip_upload(make_zip, dynamic_external_onnx, "export.zip")})
    assert response.status_code == 302, response.content.decode()[:3000]
    model = ModelArtifact.objects.get(owner=user)
    assert model.name == "export" and model.file.name.endswith(".onnx") and model.summary["batch"]["fixed"] is False
    html = client_in.get(response["Location"]).content.decode()
    assert 'id="batch-check"' in html and 'id="fixed-batch-warning"' not in html
    assert html.count('<tr data-batch="') == 2 and "dynamic" in html


def test_batch_1_export_page_says_jobs_run_at_any_batch(client_in, user, make_zip, pinned_external_onnx):
    response = client_in.post("/models/new/", {"source": "onnx", "name": "pinned", "input_shape": "",
                                               "file": _zip_upload(make_zip, pinned_external_onnx, "pinned.zip")})
    assert response.status_code == 302, response.content.decode()[:3000]
    model = ModelArtifact.objects.get(owner=user)
    node = model.summary["batch"]["literal_reshapes"][0]["node"]
    html = client_in.get(response["Location"]).content.decode()
    # the importer frees the literal batch: a warning card, but no refusal
    assert 'id="fixed-batch-warning"' not in html and 'class="card card-warn" id="batch-check"' in html
    assert "fixed in the file (declared 1); jobs run at any size" in html
    assert 'id="literal-reshape-table"' in html and node in html and "[1, 256]" in html and "dynamic_axes" in html


def test_fixed_batch_model_page_warns_and_names_the_reshape(client_in, user):
    from tests.compression_core.failing_models import reshape_onnx

    # every input dim symbolic: the importer keeps the literal batch, and the form needs the input shape
    upload = SimpleUploadedFile("fixed.onnx", reshape_onnx([1, 144]).SerializeToString(),
                                content_type="application/octet-stream")
    response = client_in.post("/models/new/", {"source": "onnx", "name": "fixed", "input_shape": "1,8,8",
                                               "file": upload})
    assert response.status_code == 302, response.content.decode()[:3000]
    model = ModelArtifact.objects.get(owner=user)
    node = model.summary["batch"]["literal_reshapes"][0]["node"]
    html = client_in.get(response["Location"]).content.decode()
    assert 'id="fixed-batch-warning"' in html and 'id="literal-reshape-table"' in html
    assert node in html and "[1, 144]" in html and "dynamic_axes" in html


def test_lone_external_data_onnx_shows_the_fix_in_the_form(client_in, dynamic_external_onnx):
    lone = SimpleUploadedFile("m.onnx", dynamic_external_onnx["m.onnx"], content_type="application/octet-stream")
    response = client_in.post("/models/new/", {"source": "onnx", "name": "", "input_shape": "", "file": lone},
                              follow=True)
    model = ModelArtifact.objects.get()
    assert response.redirect_chain == [(f"/models/{model.pk}/", 302)]
    html = response.content.decode()
    assert 'id="inspection-rejected"' in html and 'id="compress-link"' not in html
    reason = model.status_reason
    assert "'m.onnx.data'" in reason and ".zip" in reason and "external_data=False" in reason
    assert "external_data=False" in html and not model.file
