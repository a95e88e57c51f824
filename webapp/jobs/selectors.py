from django.shortcuts import get_object_or_404

from .models import Job


def job_list(*, user):
    return Job.objects.filter(owner=user).select_related("model", "dataset_upload")


def job_get(*, user, job_id) -> Job:
    return get_object_or_404(Job.objects.select_related("model", "dataset_upload"), pk=job_id, owner=user)


def job_logs(*, job: Job, after_id: int = 0):
    return job.logs.filter(id__gt=after_id)
