"""Uploaded datasets through the API, and jobs that use them."""

from pathlib import Path

import numpy as np
import pytest

from tests.webapp.uploads import assert_rejected
from webapp.datahub.models import Dataset
from webapp.jobs.models import Job
from webapp.jobs.services import job_execute

pytestmark = pytest.mark.django_db

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


def _stored_files(media_root) -> list[Path]:
    return sorted(p for p in Path(media_root).rglob("*") if p.is_file())


def _job(api, model, **overrides):
    data = {"model": model.pk, "algorithm": "L1NormPruner", "params": L1_HALF}
    data.update(overrides)
    return api.post("/api/v1/jobs/", data, format="json")


def test_upload_npz_and_read_its_summary(api, upload, digits_npz, media_root):
    response = api.post("/api/v1/datasets/", {"name": "digits subset", "file": upload("d.npz", digits_npz)})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "digits subset" and body["format"] == "npz" and body["builtin"] is False
    assert body["input_shape"] == [1, 8, 8] and body["has_labels"] is True and body["num_classes"] == 10
    summary = body["summary"]
    assert summary["samples"] == 120 and summary["layout"] == "NHW"
    assert sum(c["count"] for c in summary["classes"]) == 120
    dataset = Dataset.objects.get(pk=body["id"])
    assert Path(dataset.file.path).read_bytes() == digits_npz
    assert Path(dataset.file.path).is_relative_to(media_root)

    assert api.get(f"/api/v1/datasets/{body['id']}/").json()["summary"] == summary
    listing = api.get("/api/v1/datasets/").json()
    assert [(d["name"], d["builtin"]) for d in listing] == [("digits", True), ("digits subset", False)]
    assert listing[0]["summary"]["samples"] == 1797 and listing[0]["id"] is None
    assert listing[1]["summary"] == summary


def test_upload_image_zip_with_class_folders(api, upload, make_zip, make_png):
    files = {f"shapes/{name}/{i}.png": make_png(value) for name, value in (("dark", 10), ("light", 240))
             for i in range(3)}
    response = api.post("/api/v1/datasets/", {"file": upload("shapes.zip", make_zip(files))})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "shapes" and body["format"] == "image_zip"
    assert body["summary"]["classes"] == [{"name": "dark", "count": 3}, {"name": "light", "count": 3}]
    assert body["input_shape"] == [1, 10, 12]


def _pickle_npz(make_npz):
    return make_npz(x=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(
    "name, make_content, message",
    [
        ("empty.zip", lambda f: f["zip"]({}), "it is empty"),
        ("notes.zip", lambda f: f["zip"]({"a.txt": b"hello"}), "holds no images"),
        ("cut.zip", lambda f: f["zip"]({"c/1.png": f["png"](1)})[:60], "not a readable zip archive"),
        ("noinputs.npz", lambda f: f["npz"](features=np.zeros((3, 2))), "no input array"),
        ("mismatch.npz", lambda f: f["npz"](x=np.zeros((3, 2)), y=np.zeros(5, np.int64)), "3 inputs but 5 labels"),
        ("soft.npz", lambda f: f["npz"](x=np.zeros((3, 2)), y=np.array([0.2, 0.8, 1.0])), "whole class numbers"),
        ("pickle.npz", lambda f: _pickle_npz(f["npz"]), "does not unpickle"),
        ("broken.zip", lambda f: f["zip"]({"c/1.png": f["png"](1), "c/2.png": b"garbage"}), "'c/2.png' cannot be read"),
    ],
)
def test_bad_uploads_are_rejected_and_leave_no_file(api, upload, media_root, make_npz, make_zip, make_png,
                                                    name, make_content, message):
    files_before = _stored_files(media_root)
    content = make_content({"npz": make_npz, "zip": make_zip, "png": make_png})
    response = api.post("/api/v1/datasets/", {"file": upload(name, content)})
    assert_rejected(response, message)
    assert list(Dataset.objects.values_list("status", "file")) == [("rejected", "")]
    assert _stored_files(media_root) == files_before


def test_a_file_that_is_not_an_archive_is_a_400_and_leaves_nothing(api, upload, media_root):
    files_before = _stored_files(media_root)
    response = api.post("/api/v1/datasets/", {"file": upload("data.csv", b"1,2,3\n4,5,6\n")})
    assert response.status_code == 400
    assert "neither a .npz archive nor a .zip" in response.json()["detail"]
    assert Dataset.objects.count() == 0 and _stored_files(media_root) == files_before


def test_upload_without_a_file_is_400(api):
    response = api.post("/api/v1/datasets/", {"name": "nothing"})
    assert response.status_code == 400 and "file" in response.json()
    assert Dataset.objects.count() == 0


def test_other_users_dataset_is_404(other_api, digits_dataset, digits_model):
    assert other_api.get(f"/api/v1/datasets/{digits_dataset.pk}/").status_code == 404
    assert other_api.delete(f"/api/v1/datasets/{digits_dataset.pk}/").status_code == 404
    assert [d["builtin"] for d in other_api.get("/api/v1/datasets/").json()] == [True]
    assert Dataset.objects.filter(pk=digits_dataset.pk).exists()


def test_job_on_another_users_dataset_is_404(api, other_user, upload, digits_npz, digits_model, no_enqueue):
    from webapp.datahub.services import dataset_create

    theirs = dataset_create(owner=other_user, name="theirs", upload=upload("t.npz", digits_npz))
    assert _job(api, digits_model, dataset_id=theirs.pk).status_code == 404
    assert Job.objects.count() == 0 and no_enqueue == []


def test_job_with_an_uploaded_dataset_measures_accuracy(api, digits_model, digits_dataset, no_enqueue):
    response = _job(api, digits_model, dataset_id=digits_dataset.pk)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["dataset"] == "" and body["dataset_id"] == digits_dataset.pk and body["dataset_name"] == "my digits"
    job_execute(body["id"], task_id="task-ds")
    job = Job.objects.get(pk=body["id"])
    assert job.status == "succeeded", job.error
    assert 0.0 <= job.metrics["before"]["accuracy"] <= 1.0 and 0.0 <= job.metrics["after"]["accuracy"] <= 1.0
    # 120 samples, a fifth held out for evaluation: accuracy is a multiple of 1/24
    assert round(job.metrics["before"]["accuracy"] * 24, 6).is_integer()


def test_job_with_a_dataset_that_does_not_fit_is_400(api, upload, make_npz, digits_model, no_enqueue):
    features = api.post("/api/v1/datasets/", {"file": upload("f.npz", make_npz(x=np.zeros((6, 10), np.float32)))})
    assert features.status_code == 201
    response = _job(api, digits_model, dataset_id=features.json()["id"])
    assert response.status_code == 400
    assert "samples have shape [10], but the model takes [1, 8, 8]" in response.json()["detail"]
    assert Job.objects.count() == 0 and no_enqueue == []


def test_builtin_and_uploaded_dataset_together_is_400(api, digits_model, digits_dataset, no_enqueue):
    response = _job(api, digits_model, dataset="digits", dataset_id=digits_dataset.pk)
    assert response.status_code == 400 and "not both" in response.json()["detail"]
    assert Job.objects.count() == 0


def test_delete_is_refused_while_a_job_uses_the_dataset(api, digits_model, digits_dataset, no_enqueue,
                                                       django_capture_on_commit_callbacks):
    path = Path(digits_dataset.file.path)
    job_id = _job(api, digits_model, dataset_id=digits_dataset.pk).json()["id"]
    response = api.delete(f"/api/v1/datasets/{digits_dataset.pk}/")
    assert response.status_code == 409
    assert f"job #{job_id} is queued or running on this dataset" in response.json()["detail"]
    assert Dataset.objects.filter(pk=digits_dataset.pk).exists() and path.exists()

    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").json()["status"] == "cancelled"
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/datasets/{digits_dataset.pk}/").status_code == 204
    assert not Dataset.objects.exists() and not path.exists()
    job = api.get(f"/api/v1/jobs/{job_id}/").json()  # the finished job stays, without the link
    assert job["status"] == "cancelled" and job["dataset_id"] is None


def test_schema_lists_the_dataset_endpoints(api):
    paths = api.get("/api/v1/schema/?format=json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/datasets/"])
    assert {"get", "delete"} <= set(paths["/api/v1/datasets/{dataset_id}/"])
