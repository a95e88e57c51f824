import io
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from compression_core.models import build_architecture
from webapp.modelhub.models import ModelArtifact

pytestmark = pytest.mark.django_db


def _stored_files(media_root) -> list[Path]:
    return [p for p in Path(media_root).rglob("*") if p.is_file()]


def test_upload_onnx_shows_what_was_found(api, upload, digits_onnx):
    response = api.post("/api/v1/models/", {"source": "onnx", "name": "digits", "file": upload("d.onnx", digits_onnx)})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["input_shape"] == [1, 8, 8]
    assert body["file_format"] == "onnx"
    summary = body["summary"]
    assert summary["output_shape"] == [1, 10]
    # The exporter folds each BatchNorm into the convolution before it.
    reference = build_architecture("digits_cnn")
    bn_params = sum(p.numel() for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert summary["params"] == sum(p.numel() for p in reference.parameters()) - bn_params
    types = [layer["type"] for layer in summary["layers"]]
    assert types.count("Conv2d") == 2 and types.count("Linear") == 2
    assert summary["onnxruntime_max_abs_diff"] < 1e-4
    assert all({"name", "type", "params", "flops", "weight_shape"} <= set(layer) for layer in summary["layers"])


def test_builtin_architecture_random_init_and_with_weights(api, upload):
    response = api.post("/api/v1/models/", {"source": "builtin", "architecture": "resnet18"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["input_shape"] == [3, 224, 224]
    assert abs(response.json()["summary"]["flops"] - 1.82e9) / 1.82e9 < 0.02

    model = build_architecture("digits_cnn")
    weights = safetensors_save({k: v.contiguous() for k, v in model.state_dict().items()})
    response = api.post("/api/v1/models/", {"source": "builtin", "architecture": "digits_cnn",
                                            "file": upload("w.safetensors", weights)})
    assert response.status_code == 201, response.json()
    assert response.json()["file_format"] == "safetensors"

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    response = api.post("/api/v1/models/", {"source": "builtin", "architecture": "digits_cnn",
                                            "file": upload("w.pt", buffer.getvalue())})
    assert response.status_code == 201, response.json()


def _whole_model_pickle() -> bytes:
    buffer = io.BytesIO()
    torch.save(build_architecture("digits_cnn"), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, make_content, message",
    [
        ("notes.onnx", lambda onnx: b"these are not the weights you are looking for" * 10, "not"),
        ("cut.onnx", lambda onnx: onnx[: len(onnx) // 2], "not a valid ONNX model"),
        ("model.onnx", lambda onnx: _whole_model_pickle(), "pickle"),
    ],
)
def test_bad_uploads_get_400_and_leave_nothing(api, upload, digits_onnx, media_root, name, make_content, message):
    files_before = _stored_files(media_root)
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload(name, make_content(digits_onnx))})
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert ModelArtifact.objects.count() == 0
    assert _stored_files(media_root) == files_before


def test_wrong_weights_for_architecture_are_refused(api, upload):
    weights = safetensors_save({k: v.contiguous() for k, v in build_architecture("mnist_cnn").state_dict().items()})
    response = api.post("/api/v1/models/", {"source": "builtin", "architecture": "digits_cnn",
                                            "file": upload("w.safetensors", weights)})
    assert response.status_code == 400
    assert ModelArtifact.objects.count() == 0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"source": "builtin", "architecture": "alexnet9000"}, "unknown architecture"),
        ({"source": "onnx"}, "upload an ONNX file"),
        ({"source": "builtin", "architecture": "digits_cnn", "input_shape": "[0, 8]"}, "positive integers"),
        ({"source": "zip"}, "not a valid choice"),
    ],
)
def test_invalid_model_requests(api, data, message):
    response = api.post("/api/v1/models/", data)
    assert response.status_code == 400
    assert message in str(response.json())


def test_users_see_only_their_own_models(api, other_api, digits_model):
    assert [m["id"] for m in api.get("/api/v1/models/").json()["results"]] == [digits_model.pk]
    assert other_api.get("/api/v1/models/").json()["results"] == []
    assert other_api.get(f"/api/v1/models/{digits_model.pk}/").status_code == 404
    assert other_api.delete(f"/api/v1/models/{digits_model.pk}/").status_code == 404


def test_token_auth_and_anonymous_refused(client, user):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/models/").status_code in (401, 403)
    token = client.post("/api/v1/auth/token/", {"username": "alice", "password": "wonderland-42"}).json()["token"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/models/").status_code == 200


def test_openapi_schema_and_catalogues(api):
    schema = api.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/jobs/{job_id}/" in schema.json()["paths"]
    assert {"LevelPruner", "L1NormPruner"} <= {a["name"] for a in api.get("/api/v1/algorithms/").json()}
    assert {"digits_cnn", "resnet18"} <= {a["name"] for a in api.get("/api/v1/architectures/").json()}
    assert "digits" in {d["name"] for d in api.get("/api/v1/datasets/").json()}


def test_model_summary_has_a_prunability_report(api, client, user):
    response = api.post("/api/v1/models/", {"source": "builtin", "architecture": "resnet18"}, format="json")
    report = response.json()["summary"]["prunability"]
    groups = {tuple(g["layers"]): g for g in report["groups"]}
    # conv1 feeds layer1's residual adds: one group with every conv that writes into that stream
    stem = next(g for layers, g in groups.items() if "conv1" in layers)
    assert {"layer1.0.conv2", "layer1.1.conv2"} <= set(stem["layers"]) and stem["channels"] == 64
    assert stem["prunable"] is True
    fc_group = next(g for layers, g in groups.items() if "fc" in layers)
    assert fc_group["prunable"] is False and "output" in fc_group["reason"]

    client.force_login(user)
    html = client.get(f"/models/{response.json()['id']}/").content.decode()
    assert 'id="group-table"' in html and "layer1.0.conv2" in html
