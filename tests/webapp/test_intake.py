"""Uploads wait in status ``inspecting`` until one worker has inspected them; nothing is lost to a dead worker or
a lost message, and a second delivery does nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.webapp.uploads import stored_files
from webapp.common.intake import MAX_INSPECT_ATTEMPTS, STALLED_REASON, inspection_claim
from webapp.datahub.models import Dataset
from webapp.datahub.services import dataset_create, dataset_inspect, dataset_inspection_sweep
from webapp.modelhub.models import ModelArtifact
from webapp.modelhub.services import model_create, model_inspect, model_inspection_sweep

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    """The messages the sweep publishes, as (class name, pk)."""
    sent = []
    monkeypatch.setattr("webapp.common.intake.inspection_publish",
                        lambda cls, _task, pk: sent.append((cls.__name__, pk)) or True)
    return sent


def _age(upload, seconds: float, **fields) -> None:
    type(upload).objects.filter(pk=upload.pk).update(created_at=timezone.now() - timedelta(seconds=seconds),
                                                     **fields)


def test_an_upload_waits_inspecting_and_offers_no_job(user, inspect_later, api):
    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    assert model.status == "inspecting" and model.summary == {} and inspect_later == [("ModelArtifact", model.pk)]
    body = api.get(f"/api/v1/models/{model.pk}/").json()
    assert body["status"] == "inspecting" and body["status_reason"] == ""
    response = api.post("/api/v1/jobs/", {"model": model.pk, "algorithm": "L1NormPruner", "params": {
        "config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}}, format="json")
    assert response.status_code == 400 and "still being inspected" in response.json()["detail"]


def test_one_inspection_wins_and_a_second_delivery_does_nothing(user, inspect_later, settings):
    settings.CONDENSE_INSPECT_ISOLATED = False
    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")
    assert inspection_claim(ModelArtifact, model.pk) is True
    assert inspection_claim(ModelArtifact, model.pk) is False  # held: a duplicate message
    assert model_inspect(model.pk) is None
    # The holder went silent past the wall-clock budget (its worker died): the claim can be taken over.
    ModelArtifact.objects.filter(pk=model.pk).update(
        inspect_started_at=timezone.now() - timedelta(seconds=settings.CONDENSE_INSPECT_WALL_S + 61))
    inspected = model_inspect(model.pk)
    assert inspected.status == "ready" and inspected.inspect_attempts == 2
    assert inspected.summary["input_shape"] == [1, 8, 8]
    assert model_inspect(model.pk) is None  # ready: nothing more to do


def test_the_sweep_publishes_lost_inspections_and_rejects_twice_dead_ones(
        user, inspect_later, published, settings, upload, digits_npz, media_root):
    before = stored_files(media_root)
    never_sent = model_create(owner=user, name="a", source="builtin", architecture="digits_cnn")
    just_sent = model_create(owner=user, name="b", source="builtin", architecture="digits_cnn")
    twice_dead = dataset_create(owner=user, name="c", upload=upload("digits.npz", digits_npz))
    _age(never_sent, settings.CONDENSE_REPUBLISH_S + 1)
    ModelArtifact.objects.filter(pk=just_sent.pk).update(inspect_published_at=timezone.now())
    _age(twice_dead, 3600, inspect_attempts=MAX_INSPECT_ATTEMPTS,
         inspect_started_at=timezone.now() - timedelta(seconds=settings.CONDENSE_INSPECT_WALL_S + 61))

    assert model_inspection_sweep() == ([never_sent.pk], [])
    assert dataset_inspection_sweep() == ([], [twice_dead.pk])
    assert published == [("ModelArtifact", never_sent.pk)]
    rejected = Dataset.objects.get(pk=twice_dead.pk)
    assert rejected.status == "rejected" and rejected.status_reason == STALLED_REASON and not rejected.file
    assert stored_files(media_root) == before  # the dataset's file is gone with it
    assert ModelArtifact.objects.get(pk=just_sent.pk).status == "inspecting"


def test_an_upload_deleted_while_it_is_inspected_leaves_no_file(user, inspect_later, upload, digits_onnx, media_root,
                                                                  settings, monkeypatch):
    from compression_core.jobs import sandbox
    from webapp.common.storage import storage_delete_prefix

    settings.CONDENSE_INSPECT_ISOLATED = False
    before = stored_files(media_root)
    model = model_create(owner=user, name="m", source="onnx", upload=upload("m.onnx", digits_onnx))
    assert len(stored_files(media_root)) == len(before) + 1

    def inspect_then_delete(request, budget):
        outcome = sandbox.intake_in_sandbox(request, budget)
        # What model_delete does, while the worker still holds its result.
        ModelArtifact.objects.filter(pk=model.pk).delete()
        storage_delete_prefix(model.file.name.rsplit("/", 1)[0])
        return outcome

    monkeypatch.setattr("webapp.modelhub.services.intake_in_sandbox", inspect_then_delete)
    assert model_inspect(model.pk) is None
    assert stored_files(media_root) == before
    assert model_inspect(model.pk) is None  # gone: a late message does nothing


def test_a_rejected_dataset_can_be_deleted(user, upload, make_zip, django_capture_on_commit_callbacks):
    from webapp.datahub.services import dataset_delete

    dataset = dataset_create(owner=user, upload=upload("notes.zip", make_zip({"a.txt": b"hi"})))
    assert dataset.status == "rejected" and not dataset.file
    with django_capture_on_commit_callbacks(execute=True):
        dataset_delete(dataset=dataset)
    assert not Dataset.objects.exists()


def test_dataset_inspection_is_idempotent(user, inspect_later, upload, digits_npz, settings):
    settings.CONDENSE_INSPECT_ISOLATED = False
    dataset = dataset_create(owner=user, name="d", upload=upload("digits.npz", digits_npz))
    assert dataset.status == "inspecting"
    assert dataset_inspect(dataset.pk).summary["samples"] == 120
    assert dataset_inspect(dataset.pk) is None
