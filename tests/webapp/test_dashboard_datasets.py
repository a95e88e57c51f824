"""The Datasets page and the job form's dataset choice, through Django's test client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.datahub.models import Dataset
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db

L1_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


def _file(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def _stored_files(media_root) -> list[Path]:
    return sorted(p for p in Path(media_root).rglob("*") if p.is_file())


def _job_post(model, dataset: str) -> dict:
    return {"model": model.pk, "algorithm": "L1NormPruner", "config_list": json.dumps(L1_HALF),
            "dependency_aware": "on", "speedup": "on", "dataset": dataset, "device": "cpu", "name": ""}


def test_datasets_page_needs_login(client):
    response = client.get("/datasets/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    assert client.post("/datasets/1/delete/").status_code == 302


def test_nav_links_to_datasets(client_in):
    html = client_in.get("/").content.decode()
    assert 'href="/datasets/"' in html
    page = client_in.get("/datasets/").content.decode()
    assert 'href="/datasets/" aria-current="page"' in page
    assert 'id="dataset-form"' in page and 'enctype="multipart/form-data"' in page
    assert 'data-builtin-dataset="digits"' in page


def test_upload_shows_the_summary(client_in, user, digits_npz):
    response = client_in.post("/datasets/", {"name": "my digits", "file": _file("d.npz", digits_npz)})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == "/datasets/"
    dataset = Dataset.objects.get(owner=user)
    html = client_in.get("/datasets/").content.decode()
    assert "inspected and stored" in html
    assert f'data-dataset-id="{dataset.pk}"' in html and "my digits" in html
    assert "1 × 8 × 8" in html and "10 classes" in html and ">120<" in html
    assert f'href="/jobs/new/?dataset=upload:{dataset.pk}"' in html


def test_bad_upload_is_listed_as_rejected_with_the_reason_and_no_file(client_in, media_root, make_zip):
    files_before = _stored_files(media_root)
    response = client_in.post("/datasets/", {"file": _file("notes.zip", make_zip({"a.txt": b"hi"}))}, follow=True)
    html = response.content.decode()
    assert "rejected by its inspection" in html
    dataset = Dataset.objects.get()
    assert dataset.status == "rejected" and 'data-status="rejected"' in html
    assert "holds no images" in html and "Use in a job" not in html
    assert _stored_files(media_root) == files_before


def test_a_file_that_is_not_an_archive_shows_the_message_and_stores_nothing(client_in, media_root):
    files_before = _stored_files(media_root)
    response = client_in.post("/datasets/", {"file": _file("data.csv", b"1,2\n")})
    assert response.status_code == 200
    assert "neither a .npz archive nor a .zip" in " ".join(response.context["form"].non_field_errors())
    assert Dataset.objects.count() == 0 and _stored_files(media_root) == files_before


def test_delete_from_the_page_and_refusal_while_a_job_uses_it(client_in, digits_model, digits_dataset, no_enqueue,
                                                              django_capture_on_commit_callbacks):
    from webapp.jobs.services import job_cancel, job_create

    job = job_create(owner=digits_model.owner, model=digits_model, algorithm="L1NormPruner",
                     params={"config_list": L1_HALF}, dataset_upload=digits_dataset)
    refused = client_in.post(f"/datasets/{digits_dataset.pk}/delete/", follow=True)
    assert f"job #{job.pk} is queued or running on this dataset" in refused.content.decode()
    assert Dataset.objects.filter(pk=digits_dataset.pk).exists()
    assert client_in.get(f"/datasets/{digits_dataset.pk}/delete/").status_code == 405

    job_cancel(job=job)
    with django_capture_on_commit_callbacks(execute=True):
        deleted = client_in.post(f"/datasets/{digits_dataset.pk}/delete/", follow=True)
    assert "deleted" in deleted.content.decode()
    assert not Dataset.objects.exists() and not Path(digits_dataset.file.path).exists()


def test_job_form_offers_own_uploads_and_runs_on_one(client_in, digits_model, digits_dataset, no_enqueue,
                                                     django_capture_on_commit_callbacks):
    html = client_in.get(f"/jobs/new/?dataset=upload:{digits_dataset.pk}").content.decode()
    assert '<optgroup label="Your uploads">' in html
    assert f'<option value="upload:{digits_dataset.pk}" selected>my digits' in html
    assert '<option value="digits"' in html
    with django_capture_on_commit_callbacks(execute=True):
        response = client_in.post("/jobs/new/", _job_post(digits_model, f"upload:{digits_dataset.pk}"))
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.get()
    assert job.dataset_upload == digits_dataset and job.dataset == ""
    page = client_in.get(response["Location"]).content.decode()
    assert "my digits</a> (upload)" in page


def test_other_users_datasets_are_neither_offered_nor_deletable(client, other_user, digits_dataset, no_enqueue):
    from webapp.modelhub.services import model_create

    their_model = model_create(owner=other_user, name="theirs", source="builtin", architecture="digits_cnn")
    client.force_login(other_user)
    form_html = client.get("/jobs/new/").content.decode()
    assert 'name="dataset"' in form_html and f"upload:{digits_dataset.pk}" not in form_html
    response = client.post("/jobs/new/", _job_post(their_model, f"upload:{digits_dataset.pk}"))
    assert response.status_code == 200 and "dataset" in response.context["form"].errors
    assert Job.objects.count() == 0
    assert f'data-dataset-id="{digits_dataset.pk}"' not in client.get("/datasets/").content.decode()
    assert client.post(f"/datasets/{digits_dataset.pk}/delete/").status_code == 404
    assert Dataset.objects.filter(pk=digits_dataset.pk).exists()
