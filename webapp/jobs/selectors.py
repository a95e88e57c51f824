from django.db import connection
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from webapp.fleet import selectors as fleet_selectors
from workers.celery_app import queue_length

from .models import Job


def job_list(*, user):
    return Job.objects.filter(owner=user).select_related("model", "dataset_upload")


def job_get(*, user, job_id) -> Job:
    return get_object_or_404(Job.objects.select_related("model", "dataset_upload"), pk=job_id, owner=user)


def job_logs(*, job: Job, after_id: int = 0):
    return job.logs.filter(id__gt=after_id)


def job_elapsed_s(*, job: Job, now=None) -> float | None:
    """Seconds the job's run has taken: from ``started_at`` to ``finished_at``, or to now while it runs."""
    if job.started_at is None:
        return None
    end = job.finished_at or now or timezone.now()
    return round(max((end - job.started_at).total_seconds(), 0.0), 1)


def job_eta_s(*, job: Job, now=None) -> float | None:
    """Seconds left by the worker's estimate (``progress_detail["eta_s"]``, made by compression_core from the
    job's plan and measured rates), less the time since that report; None while there is no estimate or the job
    is not running."""
    detail = job.progress_detail or {}
    eta, updated_at = detail.get("eta_s"), parse_datetime(detail.get("updated_at") or "")
    if job.status != Job.Status.RUNNING or eta is None or updated_at is None:
        return None
    since = ((now or timezone.now()) - updated_at).total_seconds()
    return round(max(float(eta) - max(since, 0.0), 0.0), 1)


# -- the worker pool ---------------------------------------------------------------


def running_jobs_by_worker() -> dict[str, list[Job]]:
    """The running jobs of each worker node, by node name (``Job.worker``)."""
    jobs: dict[str, list[Job]] = {}
    for job in Job.objects.filter(status=Job.Status.RUNNING).exclude(worker="").order_by("started_at", "pk"):
        jobs.setdefault(job.worker, []).append(job)
    return jobs


def queued_job_counts() -> dict[str, int]:
    """Jobs waiting for a worker, per queue."""
    rows = Job.objects.filter(status=Job.Status.QUEUED).values("queue").annotate(count=Count("pk"))
    return {row["queue"]: row["count"] for row in rows}


def _job_row(job: Job) -> dict:
    return {"id": job.pk, "name": job.name or job.algorithm, "algorithm": job.algorithm, "progress": job.progress,
            "stage": job.stage}


def _worker_row(worker, *, user, running: list[Job], now) -> dict:
    info = worker.info or {}
    state = fleet_selectors.worker_state(worker, now=now)
    return {
        "name": worker.name, "queues": worker.queues, "live": state == "live", "state": state,
        "last_seen_at": worker.last_seen_at, "started_at": worker.started_at, "stopped_at": worker.stopped_at,
        "cpu": info.get("cpu") or {}, "memory": info.get("memory") or {}, "gpus": info.get("gpus") or [],
        "versions": info.get("versions") or {}, "load": info.get("load") or {},
        # Workers are shared, jobs are not: another user's jobs show only as a count.
        "jobs": [_job_row(job) for job in running if job.owner_id == user.pk],
        "other_jobs": sum(1 for job in running if job.owner_id != user.pk),
    }


def worker_pool(*, user) -> dict:
    """The pool as ``user`` may see it: every worker (state, machine, running jobs: ``user``'s own by name,
    others' as ``other_jobs``) and each queue's length on the broker (None: unreachable) and queued jobs."""
    now = timezone.now()
    running = running_jobs_by_worker()
    workers = [_worker_row(worker, user=user, running=running.get(worker.name, []), now=now)
               for worker in fleet_selectors.worker_list()]
    queued = queued_job_counts()
    names = sorted({fleet_selectors.CPU_QUEUE, fleet_selectors.GPU_QUEUE, *queued,
                    *(queue for row in workers if row["live"] for queue in row["queues"])})
    queues = [{"name": name, "broker_length": queue_length(name), "queued_jobs": queued.get(name, 0)}
              for name in names]
    return {"workers": workers, "queues": queues}


# -- runs: filters and comparisons -----------------------------------------------------

#: The filters of the runs table and of GET /api/v1/jobs/ (the same query parameters).
JOB_FILTERS = ("model", "algorithm", "status", "tag")


def job_list_filtered(*, user, model: int | None = None, algorithm: str = "", status: str = "", tag: str = "",
                      ids: list[int] | None = None):
    """``user``'s jobs, newest first, narrowed by whichever filters are given (a tag matches exactly)."""
    jobs = job_list(user=user)
    if model is not None:
        jobs = jobs.filter(model_id=model)
    if algorithm:
        jobs = jobs.filter(algorithm=algorithm)
    if status:
        jobs = jobs.filter(status=status)
    if ids is not None:
        jobs = jobs.filter(pk__in=ids)
    if tag:
        if connection.vendor == "postgresql":
            jobs = jobs.filter(tags__contains=[tag])
        else:
            # SQLite has no JSON containment lookup: the matching ids are found here.
            tagged = [pk for pk, tags in jobs.values_list("pk", "tags") if isinstance(tags, list) and tag in tags]
            jobs = jobs.filter(pk__in=tagged)
    return jobs


def job_tags(*, user) -> list[str]:
    """Every tag on ``user``'s jobs, sorted."""
    return sorted({str(tag) for tags in Job.objects.filter(owner=user).values_list("tags", flat=True)
                   if isinstance(tags, list) for tag in tags})


def job_algorithms(*, user) -> list[str]:
    """The algorithms ``user``'s jobs ran, sorted."""
    return sorted(set(Job.objects.filter(owner=user).values_list("algorithm", flat=True)))


def jobs_by_ids(*, user, ids: list[int]) -> list[Job]:
    """``user``'s jobs with these ids, in the order given; an id that is not one of theirs is a 404 naming it."""
    found = {job.pk: job for job in job_list(user=user).filter(pk__in=ids)}
    missing = [job_id for job_id in ids if job_id not in found]
    if missing:
        raise Http404(f"no job {missing[0]} among yours")
    return [found[job_id] for job_id in ids]
