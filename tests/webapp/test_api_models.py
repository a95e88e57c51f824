import io
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from compression_core.models import build_architecture
from tests.webapp.uploads import assert_rejected
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
def test_bad_uploads_are_refused_and_leave_no_file(api, upload, digits_onnx, media_root, name, make_content, message):
    files_before = _stored_files(media_root)
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload(name, make_content(digits_onnx))})
    if response.status_code == 400:  # told from the first bytes, in the request: no row either
        assert message in response.json()["detail"] and ModelArtifact.objects.count() == 0
    else:
        assert_rejected(response, message)
        assert list(ModelArtifact.objects.values_list("status", "file")) == [("rejected", "")]
    assert _stored_files(media_root) == files_before


def test_wrong_weights_for_architecture_are_refused(api, upload):
    weights = safetensors_save({k: v.contiguous() for k, v in build_architecture("mnist_cnn").state_dict().items()})
    response = api.post("/api/v1/models/", {"source": "builtin", "architecture": "digits_cnn",
                                            "file": upload("w.safetensors", weights)})
    assert_rejected(response, "do not match architecture 'digits_cnn'")
    assert not ModelArtifact.objects.get().file


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


# -- ONNX with external data, and the batch check ---------------------------------------


def _with_location(model_bytes: bytes, location: str) -> bytes:
    import onnx
    from onnx import TensorProto

    proto = onnx.load_model_from_string(model_bytes)
    for tensor in proto.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    return proto.SerializeToString()


def _stored_onnx_is_self_contained(model: dict, media_root) -> None:
    import onnx
    from compression_core.io.onnx import external_locations

    stored = ModelArtifact.objects.get(pk=model["id"])
    folder = Path(stored.file.path).parent
    assert [p.suffix for p in folder.iterdir()] == [".onnx"]  # one file: the data was inlined
    assert external_locations(onnx.load(stored.file.path, load_external_data=False)) == []
    assert model["size_bytes"] == Path(stored.file.path).stat().st_size


def test_zip_with_external_data_is_stored_as_one_file(api, upload, make_zip, dynamic_external_onnx, media_root):
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("export.zip", make_zip(dynamic_external_onnx))})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["file_format"] == "onnx" and body["input_shape"] == [1, 8, 8] and body["name"] == "export"
    _stored_onnx_is_self_contained(body, media_root)
    batch = body["summary"]["batch"]
    assert batch["fixed"] is False and batch["fixed_batch"] is None
    assert [(r["batch"], r["torch"], r["onnxruntime"]) for r in batch["runs"]] == [(1, "ok", "ok"), (2, "ok", "ok")]
    assert all(r["max_abs_diff"] < 1e-4 for r in batch["runs"])


def test_api_takes_the_data_file_as_a_second_part(api, upload, dynamic_external_onnx, media_root):
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("m.onnx", dynamic_external_onnx["m.onnx"]),
                                            "data": [upload("m.onnx.data", dynamic_external_onnx["m.onnx.data"])]})
    assert response.status_code == 201, response.json()
    _stored_onnx_is_self_contained(response.json(), media_root)
    assert response.json()["summary"]["onnxruntime_max_abs_diff"] < 1e-4


def test_lone_external_data_onnx_is_refused_with_both_fixes(api, upload, dynamic_external_onnx, media_root):
    files_before = _stored_files(media_root)
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("m.onnx", dynamic_external_onnx["m.onnx"])})
    detail = assert_rejected(response, "'m.onnx.data'")["status_reason"]
    assert ".zip" in detail and "'data' part" in detail
    assert "external_data=False" in detail and "save_as_external_data=False" in detail
    assert _stored_files(media_root) == files_before


def test_wrongly_named_data_part_names_the_expected_location(api, upload, dynamic_external_onnx):
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("m.onnx", dynamic_external_onnx["m.onnx"]),
                                            "data": [upload("weights.bin", dynamic_external_onnx["m.onnx.data"])]})
    assert_rejected(response, "expects its external data in 'm.onnx.data'")


@pytest.mark.parametrize("location, message", [
    ("../m.onnx.data", "leaves the upload's folder ('..')"),
    ("/etc/passwd", "absolute path '/etc/passwd'"),
])
def test_locations_outside_the_upload_are_refused(api, upload, make_zip, dynamic_external_onnx, location, message):
    hostile = _with_location(dynamic_external_onnx["m.onnx"], location)
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("m.onnx", hostile),
                                            "data": [upload("m.onnx.data", dynamic_external_onnx["m.onnx.data"])]})
    assert_rejected(response, message)
    zipped = make_zip({"m.onnx": hostile, "m.onnx.data": dynamic_external_onnx["m.onnx.data"]})
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("m.zip", zipped)})
    assert_rejected(response, message)
    assert list(ModelArtifact.objects.values_list("status", flat=True)) == ["rejected", "rejected"]


def test_symlink_in_the_zip_is_refused(api, upload, dynamic_external_onnx):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m.onnx", dynamic_external_onnx["m.onnx"])
        link = zipfile.ZipInfo("m.onnx.data")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("m.zip", buffer.getvalue())})
    assert_rejected(response, "symbolic link")


@pytest.mark.parametrize("files, message", [
    (lambda f: {"a.onnx": f["m.onnx"], "b.onnx": f["m.onnx"], "m.onnx.data": f["m.onnx.data"]},
     "2 .onnx files (a.onnx, b.onnx); put exactly one"),
    (lambda f: {"m.onnx.data": f["m.onnx.data"]}, "no .onnx file"),
    (lambda f: {"../m.onnx": f["m.onnx"]}, "points outside the archive's folder"),
])
def test_zips_without_exactly_one_safe_onnx_are_refused(api, upload, make_zip, dynamic_external_onnx, files, message):
    response = api.post("/api/v1/models/", {"source": "onnx",
                                            "file": upload("m.zip", make_zip(files(dynamic_external_onnx)))})
    assert_rejected(response, message)


def test_zip_bomb_is_capped(api, upload, make_zip, dynamic_external_onnx, settings, media_root):
    settings.CONDENSE_MODEL_MAX_UNPACKED_BYTES = 1024 * 1024
    files_before = _stored_files(media_root)
    bomb = make_zip({"m.onnx": dynamic_external_onnx["m.onnx"], "m.onnx.data": bytes(16 * 1024 * 1024)})
    assert len(bomb) < 100_000
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("bomb.zip", bomb)})
    assert_rejected(response, "byte limit")
    settings.CONDENSE_MODEL_ZIP_MAX_ENTRIES = 5
    many = make_zip({"m.onnx": dynamic_external_onnx["m.onnx"], **{f"{i}.txt": b"" for i in range(9)}})
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("many.zip", many)})
    assert_rejected(response, "holds 10 files; the limit is 5")
    assert _stored_files(media_root) == files_before


def test_a_batch_1_export_with_a_literal_reshape_takes_jobs(api, upload, make_zip, pinned_external_onnx, no_enqueue,
                                                              django_capture_on_commit_callbacks):
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("pinned.zip", make_zip(pinned_external_onnx))})
    assert response.status_code == 201, response.json()
    batch = response.json()["summary"]["batch"]
    # The file is pinned to batch 1 (declared, and by its literal Reshape); the imported model is not.
    assert batch["declared_batch"] == 1 and batch["fixed"] is True and batch["fixed_batch"] is None
    first, second = batch["runs"]
    assert first["torch"] == first["onnxruntime"] == "ok" and first["max_abs_diff"] < 1e-4
    assert second["torch"] == "ok" and "Reshape" in second["onnxruntime"]
    (literal,) = batch["literal_reshapes"]
    assert literal["shape"] == [1, 256] and literal["pins_batch"] and literal["pins_channels"]
    assert "declares batch 1" in batch["advice"][0] and "which runs batch 2" in batch["advice"][0]
    assert "dynamic_shapes=" in batch["advice"][0]

    with django_capture_on_commit_callbacks(execute=True):
        job = api.post("/api/v1/jobs/", {"model": response.json()["id"], "algorithm": "L1NormPruner",
                                         "params": {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}},
                       format="json")
    assert job.status_code == 201, job.json()
    assert no_enqueue == [(job.json()["id"], "cpu")]


def test_fixed_batch_model_is_accepted_with_the_fix_and_jobs_are_refused(api, upload, no_enqueue):
    from tests.compression_core.failing_models import reshape_onnx

    # every input dim symbolic: the importer cannot follow the batch through the Reshape and keeps [1, 144]
    onnx_bytes = reshape_onnx([1, 144]).SerializeToString()
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("fixed.onnx", onnx_bytes)})
    assert_rejected(response, "input shape is dynamic")
    response = api.post("/api/v1/models/", {"source": "onnx", "file": upload("fixed.onnx", onnx_bytes),
                                            "input_shape": "[1, 8, 8]"})
    assert response.status_code == 201, response.json()
    batch = response.json()["summary"]["batch"]
    assert batch["declared_batch"] is None and batch["fixed"] is True and batch["fixed_batch"] == 1
    first, second = batch["runs"]
    assert first["torch"] == first["onnxruntime"] == "ok" and first["max_abs_diff"] < 1e-4
    assert "invalid for input of size 288" in second["torch"] and "Reshape" in second["onnxruntime"]
    (literal,) = batch["literal_reshapes"]
    assert literal["shape"] == [1, 144] and literal["pins_batch"] and literal["pins_channels"]
    assert literal["node"] in batch["advice"][0] and "dynamic_shapes=" in batch["advice"][0]

    job = api.post("/api/v1/jobs/", {"model": response.json()["id"], "algorithm": "L1NormPruner",
                                     "params": {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}},
                   format="json")
    assert job.status_code == 400
    assert "runs at batch 1 only" in str(job.json()) and literal["node"] in str(job.json())
    assert no_enqueue == []


def test_dynamic_batch_model_takes_jobs(api, upload, make_zip, dynamic_external_onnx, no_enqueue,
                                        django_capture_on_commit_callbacks):
    model = api.post("/api/v1/models/", {"source": "onnx", "file": upload("dyn.zip", make_zip(dynamic_external_onnx))})
    with django_capture_on_commit_callbacks(execute=True):
        job = api.post("/api/v1/jobs/", {"model": model.json()["id"], "algorithm": "L1NormPruner",
                                         "params": {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}},
                       format="json")
    assert job.status_code == 201, job.json()
    assert no_enqueue == [(job.json()["id"], "cpu")]
