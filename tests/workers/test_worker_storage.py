"""A worker on another machine: no disk shared with the web side, only the database, the broker and the S3 store."""

import io
import os
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


def _digits_onnx() -> bytes:
    from compression_core.models import build_architecture

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(build_architecture("digits_cnn").eval(), torch.randn(1, 1, 8, 8), buffer, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def _digits_npz() -> bytes:
    from compression_core.data import load_builtin_dataset

    x, y = load_builtin_dataset("digits", "test")
    buffer = io.BytesIO()
    np.savez(buffer, x=x[:100].numpy(), y=y[:100].numpy())
    return buffer.getvalue()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_worker_with_its_own_disk_runs_an_uploaded_model_through_the_store(
        api, s3_storage, make_worker, media_root, tmp_path, monkeypatch):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import wait_for_job

    # Only this test's worker reads this queue (a session worker, on local storage, may be running too).
    queue = f"storage-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr("webapp.jobs.services.job_queue_for", lambda device: queue)
    worker_media = tmp_path / "worker-media"
    worker_media.mkdir()
    worker = make_worker(queue, f"remote-{os.getpid()}@otherhost",
                         env={**s3_storage.env(), "CONDENSE_MEDIA_ROOT": str(worker_media)})
    web_files_before = _files(Path(media_root))

    model = api.post("/api/v1/models/", {"name": "digits", "source": "onnx", "file": SimpleUploadedFile(
        "digits.onnx", _digits_onnx(), content_type="application/octet-stream")})
    assert model.status_code == 201, model.json()
    dataset = api.post("/api/v1/datasets/", {"name": "digits", "file": SimpleUploadedFile(
        "digits.npz", _digits_npz(), content_type="application/octet-stream")})
    assert dataset.status_code == 201, dataset.json()
    response = api.post("/api/v1/jobs/", {"model": model.json()["id"], "algorithm": "L1NormPruner",
                                          "params": L1_HALF, "dataset_id": dataset.json()["id"]}, format="json")
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]

    job = wait_for_job(job_id, worker=worker)
    assert job.status == "succeeded", f"{job.error}\n{worker.log_tail()}"
    assert job.worker == worker.name
    assert {f"jobs/{job_id}/model.onnx", f"jobs/{job_id}/model.plan.json"} <= set(s3_storage.keys(f"jobs/{job_id}/"))

    download = api.get(f"/api/v1/jobs/{job_id}/artifacts/model.onnx")
    assert download.status_code == 200 and download.streaming
    pruned = tmp_path / "pruned.onnx"
    pruned.write_bytes(b"".join(download.streaming_content))
    session = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 1, 8, 8), np.float32)})
    assert out.shape == (2, 10)
    # Neither side kept a file on its own disk: the store holds the uploads and the results.
    assert _files(worker_media) == [] and _files(Path(media_root)) == web_files_before
