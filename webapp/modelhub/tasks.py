"""Celery task of model uploads: the inspection, on the ``inspect`` queue; it calls one service."""

from celery import shared_task

from .services import INSPECT_MODEL_TASK, model_inspect


# acks_late: a worker that dies mid-inspection leaves the message to another (the claim in the service
# makes a second delivery harmless).
@shared_task(acks_late=True, name=INSPECT_MODEL_TASK)
def inspect_model_upload(model_id: int) -> None:
    model_inspect(model_id)
