"""Celery task of dataset uploads: the inspection, on the ``inspect`` queue; it calls one service."""

from celery import shared_task

from .services import INSPECT_DATASET_TASK, dataset_inspect


# acks_late: a worker that dies mid-inspection leaves the message to another (the claim in the service
# makes a second delivery harmless).
@shared_task(acks_late=True, name=INSPECT_DATASET_TASK)
def inspect_dataset_upload(dataset_id: int) -> None:
    dataset_inspect(dataset_id)
