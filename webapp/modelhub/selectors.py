from django.shortcuts import get_object_or_404

from .models import ModelArtifact


def model_list(*, user):
    return ModelArtifact.objects.filter(owner=user)


def model_get(*, user, model_id) -> ModelArtifact:
    return get_object_or_404(ModelArtifact, pk=model_id, owner=user)
