from django.shortcuts import get_object_or_404

from webapp.common.intake import IntakeStatus

from .models import ModelArtifact


def model_list(*, user):
    return ModelArtifact.objects.filter(owner=user)


def model_get(*, user, model_id) -> ModelArtifact:
    return get_object_or_404(ModelArtifact, pk=model_id, owner=user)


def model_ready_list(*, user):
    """The user's models that jobs can run on (inspected and accepted)."""
    return model_list(user=user).filter(status=IntakeStatus.READY)
