"""Deleting models and jobs from the browser and the API: refused while in use, saying by which job."""

from __future__ import annotations

import pytest

from webapp.jobs.models import Job
from webapp.modelhub.models import ModelArtifact

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


def _job(model, status: str | None = None) -> Job:
    """A job on ``model``, queued, or moved on to ``status``."""
    from webapp.jobs.services import Status, job_create, job_transition

    job = job_create(owner=model.owner, model=model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits")
    if status in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED):
        job = job_transition(job.pk, to=Status.RUNNING, stage="starting")
    if status in (Status.SUCCEEDED, Status.FAILED):
        job = job_transition(job.pk, to=status, progress=1.0, stage="done")
    return job


def _messages(response) -> str:
    html = response.content.decode()
    start = html.find('id="messages"')
    return html[start:html.index("</ul>", start)] if start >= 0 else ""


# -- models -------------------------------------------------------------------------------------------------


def test_a_ready_model_offers_delete_and_goes_when_unused(client_in, digits_model, media_root):
    html = client_in.get(f"/models/{digits_model.pk}/").content.decode()
    assert 'id="model-delete-form"' in html and 'id="model-delete-button"' in html
    assert 'data-confirm="Delete the model “digits” and its file?"' in html
    response = client_in.post(f"/models/{digits_model.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/models/"
    assert "Model “digits” deleted." in _messages(response)
    assert not ModelArtifact.objects.exists()


def test_deleting_a_model_in_use_names_the_running_and_queued_jobs(client_in, digits_model, no_enqueue):
    running, queued = _job(digits_model, "running"), _job(digits_model)
    response = client_in.post(f"/models/{digits_model.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == f"/models/{digits_model.pk}/"
    assert (f"the model is used by jobs #{running.pk} (running) and #{queued.pk} (queued); cancel them first, "
            "then delete them") in _messages(response)
    assert ModelArtifact.objects.filter(pk=digits_model.pk).exists()


def test_a_model_with_finished_jobs_says_which_to_delete_first(client_in, digits_model, no_enqueue):
    done, failed = _job(digits_model, "succeeded"), _job(digits_model, "failed")
    html = client_in.get(f"/models/{digits_model.pk}/").content.decode()
    assert "Its jobs must be deleted first." in html  # said in the confirmation already
    refused = client_in.post(f"/models/{digits_model.pk}/delete/", follow=True)
    assert (f"the model has finished jobs #{done.pk} (succeeded) and #{failed.pk} (failed), whose results describe "
            "it; delete those jobs first") in _messages(refused)

    for job in (done, failed):
        assert client_in.post(f"/jobs/{job.pk}/delete/").status_code == 302
    deleted = client_in.post(f"/models/{digits_model.pk}/delete/", follow=True)
    assert "deleted" in _messages(deleted) and not ModelArtifact.objects.exists()


def test_a_refusal_with_both_kinds_names_each_and_caps_the_list(digits_model, no_enqueue):
    from webapp.common.exceptions import ServiceConflict
    from webapp.modelhub.services import NAMED_JOBS, model_delete

    running = _job(digits_model, "running")
    finished = [_job(digits_model, "succeeded") for _ in range(NAMED_JOBS + 2)]
    with pytest.raises(ServiceConflict) as refused:
        model_delete(model=digits_model)
    message = str(refused.value)
    assert message.startswith(f"the model is used by job #{running.pk} (running); cancel it first, then delete it "
                              f"and finished jobs #{finished[0].pk} (succeeded)")
    assert "and 2 more" in message and f"#{finished[-1].pk} " not in message


def test_the_api_refuses_with_the_same_sentence(api, digits_model, no_enqueue):
    queued = _job(digits_model)
    response = api.delete(f"/api/v1/models/{digits_model.pk}/")
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"the model is used by job #{queued.pk} (queued); cancel it first")


# -- jobs ---------------------------------------------------------------------------------------------------


def test_a_finished_job_is_deleted_from_its_page(client_in, digits_model, no_enqueue):
    job = _job(digits_model, "succeeded")
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="job-delete-form"' in html and 'id="job-delete-button"' in html
    assert f'data-confirm="Delete job #{job.pk} with its results and downloads?' in html
    assert client_in.get(f"/jobs/{job.pk}/delete/").status_code == 405
    response = client_in.post(f"/jobs/{job.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/jobs/"
    assert f"Job #{job.pk} deleted" in _messages(response)
    assert not Job.objects.filter(pk=job.pk).exists()
    assert f'/jobs/{job.pk}/"' not in response.content.decode()


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_that_is_not_finished_says_cancel_first(client_in, digits_model, no_enqueue, status):
    job = _job(digits_model, status)
    html = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="job-delete-form"' not in html and "To delete this job, cancel it first." in html
    response = client_in.post(f"/jobs/{job.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == f"/jobs/{job.pk}/"
    assert f"Job #{job.pk} was not deleted: cancel the job before deleting it." in _messages(response)
    assert Job.objects.filter(pk=job.pk).exists()


def test_another_users_job_cannot_be_deleted(client, other_user, digits_model, no_enqueue):
    job = _job(digits_model, "succeeded")
    client.force_login(other_user)
    assert client.post(f"/jobs/{job.pk}/delete/").status_code == 404
    assert Job.objects.filter(pk=job.pk).exists()


def test_api_delete_job_is_409_until_it_has_finished(api, other_api, digits_model, no_enqueue,
                                                     django_capture_on_commit_callbacks):
    from webapp.jobs.services import Status, job_transition

    job = _job(digits_model, "running")
    refused = api.delete(f"/api/v1/jobs/{job.pk}/")
    assert refused.status_code == 409 and refused.json()["detail"] == "cancel the job before deleting it"
    job_transition(job.pk, to=Status.SUCCEEDED, progress=1.0, stage="done")
    assert other_api.delete(f"/api/v1/jobs/{job.pk}/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/jobs/{job.pk}/").status_code == 204
    assert api.get(f"/api/v1/jobs/{job.pk}/").status_code == 404


def test_the_schema_documents_deleting_a_job():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    responses = schema["paths"]["/api/v1/jobs/{job_id}/"]["delete"]["responses"]
    assert {"204", "409"} <= set(responses)
