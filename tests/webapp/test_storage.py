"""Uploads and artifacts through Django's storage API, on local disk and on a real S3 server (SeaweedFS)."""

import os
import threading
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from django.core.files.storage import default_storage
from django.http import StreamingHttpResponse

from webapp.common.storage import (
    CHUNK_BYTES, PARTIAL_FOLDER, storage_delete_prefix, storage_download_response, storage_fetch, storage_push,
)

pytestmark = pytest.mark.django_db

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


@pytest.fixture(params=["local", "s3"])
def backend(request, settings, tmp_path) -> str:
    """Each test runs on the local default (in an empty media folder) and on the S3 store (an empty bucket)."""
    if request.param == "s3":
        request.getfixturevalue("s3_storage")
    else:
        settings.MEDIA_ROOT = str(tmp_path / "media")
    return request.param


def _stored_names(prefix: str) -> list[str]:
    """Every file name under ``prefix`` through the storage API (what a listing would show)."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:  # local disk: the folder is not there
        return []
    return sorted([f"{prefix}/{name}" for name in files]
                  + [name for folder in folders for name in _stored_names(f"{prefix}/{folder}")])


def _payload(size: int) -> bytes:
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()


def test_push_then_fetch_round_trips_a_file_larger_than_a_chunk(backend, tmp_path):
    content = _payload(3 * CHUNK_BYTES + 123)
    source = tmp_path / "model.onnx"
    source.write_bytes(content)
    assert storage_push(source, "jobs/1/model.onnx") == "jobs/1/model.onnx"
    fetched = storage_fetch("jobs/1/model.onnx", tmp_path / "fetched" / "copy.onnx")
    assert fetched == tmp_path / "fetched" / "copy.onnx" and fetched.read_bytes() == content


def test_push_replaces_the_file_under_the_same_name(backend, tmp_path):
    source = tmp_path / "plan.json"
    source.write_bytes(b"first")
    storage_push(source, "jobs/2/plan.json")
    source.write_bytes(b"second, longer")
    assert storage_push(source, "jobs/2/plan.json") == "jobs/2/plan.json"
    assert storage_fetch("jobs/2/plan.json", tmp_path / "out").read_bytes() == b"second, longer"
    assert _stored_names("jobs/2") == ["jobs/2/plan.json"]


def test_fetching_a_missing_file_raises_file_not_found(backend, tmp_path):
    with pytest.raises(FileNotFoundError):
        storage_fetch("jobs/404/model.onnx", tmp_path / "model.onnx")


def test_delete_prefix_removes_that_folder_only(backend, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    for name in ("jobs/3/model.onnx", "jobs/3/sub/deep.csv", "jobs/30/model.onnx", "jobs/4/model.onnx"):
        storage_push(source, name)
    storage_delete_prefix("jobs/3")
    assert _stored_names("jobs") == ["jobs/30/model.onnx", "jobs/4/model.onnx"]
    storage_delete_prefix("jobs/3")  # already gone: nothing to do
    with pytest.raises(ValueError, match="whole storage"):
        storage_delete_prefix("/")


def _wait_until_mid_push(backend: str, settings) -> None:
    """Return once the push has written part of the file: a partial file on disk, an open multipart upload on S3."""
    for _ in range(200):
        if backend == "local":
            partial = Path(settings.MEDIA_ROOT) / PARTIAL_FOLDER
            if any(p.stat().st_size > 0 for p in partial.glob("*")):
                return
        else:
            client = default_storage.connection.meta.client
            if client.list_multipart_uploads(Bucket=default_storage.bucket_name).get("Uploads"):
                return
        threading.Event().wait(0.05)
    raise AssertionError("the push never started writing")


def test_a_half_written_push_is_never_visible(backend, settings, tmp_path):
    """The source is a pipe fed in two halves: while the push waits for the second, nothing is listed or served."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    # Past boto3's 8 MiB multipart threshold, so on S3 parts are already uploaded while the rest waits.
    halves = [_payload(9 * CHUNK_BYTES + 7), _payload(CHUNK_BYTES + 11)]
    first_half_sent, let_second_go = threading.Event(), threading.Event()

    def feed():
        with open(pipe, "wb") as writer:
            writer.write(halves[0])
            writer.flush()
            first_half_sent.set()
            let_second_go.wait(30)
            writer.write(halves[1])

    feeder = threading.Thread(target=feed)
    feeder.start()
    pushed = {}
    pusher = threading.Thread(target=lambda: pushed.update(name=storage_push(pipe, "jobs/5/model.onnx")))
    pusher.start()
    try:
        assert first_half_sent.wait(30)
        _wait_until_mid_push(backend, settings)
        for _ in range(5):  # the push is mid-copy for as long as the feeder holds back
            assert not default_storage.exists("jobs/5/model.onnx")
            assert _stored_names("jobs") == []
            threading.Event().wait(0.1)
    finally:
        let_second_go.set()
        feeder.join(30)
        pusher.join(60)
    assert pushed == {"name": "jobs/5/model.onnx"}
    assert storage_fetch("jobs/5/model.onnx", tmp_path / "whole").read_bytes() == halves[0] + halves[1]


def test_download_response_streams_in_chunks(backend, tmp_path):
    content = _payload(2 * CHUNK_BYTES + 5)
    source = tmp_path / "model.onnx"
    source.write_bytes(content)
    storage_push(source, "jobs/6/model.onnx")
    response = storage_download_response("jobs/6/model.onnx", "job6-model.onnx")
    assert isinstance(response, StreamingHttpResponse) and response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="job6-model.onnx"'
    assert int(response["Content-Length"]) == len(content)
    chunks = list(response.streaming_content)
    response.close()
    assert len(chunks) >= 3 and max(len(chunk) for chunk in chunks) <= CHUNK_BYTES
    assert b"".join(chunks) == content


def test_download_redirects_to_a_presigned_url_when_enabled(s3_storage, settings, tmp_path):
    settings.CONDENSE_S3_PRESIGNED_DOWNLOADS = True
    source = tmp_path / "model.onnx"
    source.write_bytes(b"onnx bytes")
    storage_push(source, "jobs/7/model.onnx")
    response = storage_download_response("jobs/7/model.onnx", "job7-model.onnx")
    assert response.status_code == 302
    with urllib.request.urlopen(response["Location"], timeout=10) as reply:  # the store itself answers
        assert reply.read() == b"onnx bytes"
        assert reply.headers["Content-Disposition"] == 'attachment; filename="job7-model.onnx"'


def test_model_and_dataset_uploads_on_s3_run_a_job_whose_artifact_downloads(
        api, upload, digits_onnx, digits_npz, s3_storage, media_root, no_enqueue, tmp_path):
    from webapp.jobs.services import job_execute
    from webapp.modelhub.models import ModelArtifact

    local_before = sorted(p for p in Path(media_root).rglob("*") if p.is_file())
    model = api.post("/api/v1/models/", {"name": "digits", "source": "onnx", "file": upload("d.onnx", digits_onnx)})
    assert model.status_code == 201, model.json()
    dataset = api.post("/api/v1/datasets/", {"name": "digits", "file": upload("digits.npz", digits_npz)})
    assert dataset.status_code == 201, dataset.json()
    stored = ModelArtifact.objects.get(pk=model.json()["id"])
    assert s3_storage.keys("models/") == [stored.file.name]
    assert len(s3_storage.keys("datasets/")) == 1

    job = api.post("/api/v1/jobs/", {"model": stored.pk, "algorithm": "L1NormPruner", "params": L1_HALF,
                                     "dataset_id": dataset.json()["id"]}, format="json")
    assert job.status_code == 201, job.json()
    job_id = job.json()["id"]
    job_execute(job_id, task_id="task-s3")
    body = api.get(f"/api/v1/jobs/{job_id}/").json()
    assert body["status"] == "succeeded", body["error"]
    assert {f"jobs/{job_id}/model.onnx", f"jobs/{job_id}/model.plan.json"} <= set(
        s3_storage.keys(f"jobs/{job_id}/"))

    response = api.get(f"/api/v1/jobs/{job_id}/artifacts/model.onnx")
    assert response.status_code == 200 and response.streaming
    path = tmp_path / "pruned.onnx"
    path.write_bytes(b"".join(response.streaming_content))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 1, 8, 8), np.float32)})
    assert out.shape == (2, 10)
    # Nothing went to the local media folder: the store holds it all.
    assert sorted(p for p in Path(media_root).rglob("*") if p.is_file()) == local_before


def test_job_delete_removes_the_jobs_objects(api, digits_model, s3_storage, no_enqueue,
                                             django_capture_on_commit_callbacks, tmp_path):
    from webapp.jobs.models import Job
    from webapp.jobs.services import Status, job_delete, job_store_artifacts, job_transition

    job_ids = [api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner",
                                          "params": L1_HALF, "dataset": "digits"}, format="json").json()["id"]
               for _ in range(2)]
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.plan.json").write_bytes(b"{}")
    records = [{"name": "model.onnx", "kind": "onnx", "bytes": 4}, {"name": "model.plan.json", "kind": "plan",
                                                                  "bytes": 2}]
    for job_id in job_ids:
        assert job_store_artifacts(job_id, tmp_path, records) == records
        job_transition(job_id, to=Status.CANCELLED)
    assert len(s3_storage.keys("jobs/")) == 4

    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=Job.objects.get(pk=job_ids[0]))
    assert s3_storage.keys("jobs/") == [f"jobs/{job_ids[1]}/model.onnx", f"jobs/{job_ids[1]}/model.plan.json"]


def test_model_and_dataset_delete_remove_their_objects(api, upload, digits_onnx, digits_npz, s3_storage,
                                                       django_capture_on_commit_callbacks):
    model = api.post("/api/v1/models/", {"name": "digits", "source": "onnx", "file": upload("d.onnx", digits_onnx)})
    dataset = api.post("/api/v1/datasets/", {"name": "digits", "file": upload("digits.npz", digits_npz)})
    assert s3_storage.keys("models/") and s3_storage.keys("datasets/")
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/models/{model.json()['id']}/").status_code == 204
        assert api.delete(f"/api/v1/datasets/{dataset.json()['id']}/").status_code == 204
    assert s3_storage.keys() == []


def test_missing_artifact_is_a_clear_400_on_s3(api, digits_model, s3_storage, no_enqueue):
    from webapp.jobs.services import Status, job_transition

    job_id = api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": L1_HALF,
                                        "dataset": "digits"}, format="json").json()["id"]
    job_transition(job_id, to=Status.RUNNING)
    job_transition(job_id, to=Status.SUCCEEDED, artifacts=[{"name": "model.onnx", "kind": "onnx", "bytes": 1}])
    response = api.get(f"/api/v1/jobs/{job_id}/artifacts/model.onnx")
    assert response.status_code == 400 and "missing from the server's storage" in response.json()["detail"]


def test_job_submission_checks_the_dataset_without_fetching_it(api, upload, digits_model, digits_npz, make_zip,
                                                                make_png, s3_storage, no_enqueue):
    from webapp.datahub.models import Dataset
    from webapp.datahub.selectors import dataset_validation_source

    npz = api.post("/api/v1/datasets/", {"name": "digits", "file": upload("digits.npz", digits_npz)}).json()
    images = api.post("/api/v1/datasets/", {"name": "pics", "file": upload("pics.zip", make_zip(
        {"a/1.png": make_png(10), "b/2.png": make_png(200)}))}).json()
    for dataset_id in (npz["id"], images["id"]):
        # Gone from the store: a submission that fetched it would fail.
        default_storage.delete(Dataset.objects.get(pk=dataset_id).file.name)
        response = api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner",
                                              "params": L1_HALF, "dataset_id": dataset_id}, format="json")
        assert response.status_code == 201, response.json()
    assert s3_storage.keys("datasets/") == []
    with pytest.raises(ValueError, match="the dataset holds images, but the model takes \\[64\\]"):
        dataset_validation_source(Dataset.objects.get(pk=images["id"])).check_fits([64])
