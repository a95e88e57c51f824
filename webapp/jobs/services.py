"""Writes for jobs. Every status change goes through :func:`job_transition`."""

from __future__ import annotations

import logging
import shutil
import tempfile
import traceback
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from compression_core.algorithms import get_algorithm
from compression_core.jobs import (
    JobCancelled, Recipe, explain_failure, fixed_batch_message, run_job, validate_recipe,
)

from webapp.common.exceptions import ServiceConflict
from webapp.common.storage import storage_delete_prefix, storage_exists, storage_push
from webapp.datahub.models import Dataset
from webapp.modelhub.models import ModelArtifact
from webapp.datahub.selectors import dataset_validation_source
from webapp.datahub.services import dataset_source
from webapp.modelhub.services import model_source
from workers.celery_app import app as celery_app, ensure_broker_folders

from .models import Job, JobLog

logger = logging.getLogger(__name__)
Status = Job.Status
#: The Celery task that runs a job (``tasks.run_compression_job``), published by name.
RUN_JOB_TASK = "condense.run_compression_job"

ALLOWED_TRANSITIONS = {
    Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED},
    Status.SUCCEEDED: set(),
    Status.FAILED: set(),
    Status.CANCELLED: set(),
}


class InvalidTransition(ServiceConflict):
    pass


def job_storage_prefix(job_id: int) -> str:
    """The storage folder of a job's artifacts: ``jobs/<id>``."""
    return f"jobs/{job_id}"


def job_recipe(job: Job, workdir: Path, *, for_validation: bool = False) -> Recipe:
    """The job's recipe on local files: its inputs fetched from storage into ``workdir / "inputs"``, its
    outputs written to ``workdir / "out"`` (see :func:`job_store_artifacts`).

    ``for_validation`` (a web request, nothing runs): an uploaded dataset stays in storage, its recorded
    sample shape stands in for it; the model file is still fetched, since validation loads the model.

    Example::

        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     params = validate_recipe(job_recipe(draft, Path(tmp), for_validation=True))
    """
    inputs = workdir / "inputs"
    if not job.dataset_upload_id:
        dataset = job.dataset or None
    elif for_validation:
        dataset = dataset_validation_source(job.dataset_upload)
    else:
        dataset = dataset_source(job.dataset_upload, inputs)
    return Recipe(
        model=model_source(job.model, inputs),
        input_shape=list(job.model.input_shape),
        algorithm=job.algorithm,
        params=job.params,
        speedup=job.speedup,
        dataset=dataset,
        device=job.device,
        output_dir=str(workdir / "out"),
    )


def job_store_artifacts(job_id: int, out_dir: Path, artifacts: list[dict]) -> list[dict]:
    """Push each artifact file of ``out_dir`` to storage as ``jobs/<id>/<name>``; return the artifact records.

    Each push is atomic, so a download never gets part of a file.

    Example::

        >>> job_store_artifacts(7, Path("/tmp/job-7/out"), [{"name": "model.onnx", "kind": "onnx", "bytes": 9}])
        [{'name': 'model.onnx', 'kind': 'onnx', 'bytes': 9}]
    """
    for artifact in artifacts:
        storage_push(out_dir / artifact["name"], f"{job_storage_prefix(job_id)}/{artifact['name']}")
    return [dict(artifact) for artifact in artifacts]


#: The longest log line kept; a longer traceback keeps its end, where the error is.
JOB_LOG_CHARS = 10000


def job_log(job_id: int, message: str, level: str = "info") -> None:
    JobLog.objects.create(job_id=job_id, message=message[:JOB_LOG_CHARS], level=level)


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…\n" + text[-(limit - 2):]


@transaction.atomic
def job_transition(job_id: int, *, to: str, expected: tuple[str, ...] | None = None, **fields) -> Job:
    """Move a job to status ``to``, checking the current status under a row lock.

    ``expected`` narrows the statuses the caller is willing to move from.
    Raises :class:`InvalidTransition` when the move is not allowed.
    """
    job = Job.objects.select_for_update().get(pk=job_id)
    allowed_from = [s for s, targets in ALLOWED_TRANSITIONS.items() if to in targets]
    if job.status not in allowed_from or (expected and job.status not in expected):
        raise InvalidTransition(f"job {job_id} is {job.status}; it cannot become {to}")
    job.status = to
    now = timezone.now()
    if to == Status.RUNNING:
        job.started_at = now
    if to in Job.TERMINAL:
        job.finished_at = now
    for key, value in fields.items():
        setattr(job, key, value)
    job.save()
    job_log(job_id, f"status: {to}", level="error" if to == Status.FAILED else "info")
    return job


def job_create(
    *,
    owner,
    model: ModelArtifact,
    algorithm: str,
    params: dict,
    speedup: bool = True,
    dataset: str = "",
    dataset_upload: Dataset | None = None,
    device: str = Job.Device.CPU,
    name: str = "",
) -> Job:
    """Validate the recipe against the model, store the job and enqueue it on commit.

    The evaluation data is a built-in ``dataset`` name or an uploaded
    ``dataset_upload`` (the owner's), not both; its samples must fit the
    model's input (``ValidationError`` naming both shapes otherwise).
    """
    if model.owner_id != owner.pk:
        raise ValidationError("model not found")
    if dataset_upload is not None:
        if dataset_upload.owner_id != owner.pk:
            raise ValidationError("dataset not found")
        if dataset:
            raise ValidationError("choose either a built-in dataset or an uploaded one, not both")
    if device not in Job.Device.values:
        raise ValidationError(f"device must be one of {', '.join(Job.Device.values)}")
    blocked = fixed_batch_message(model.summary.get("batch"))  # the upload's inspection found it runs at batch 1 only
    if blocked:
        raise ValidationError(blocked)
    try:
        spec = get_algorithm(algorithm)
        draft = Job(owner=owner, model=model, algorithm=algorithm, params=params, speedup=speedup,
                    dataset=dataset or "", dataset_upload=dataset_upload, device=device)
        # validate_recipe loads the model, so an uploaded model file is fetched here (not the dataset).
        with tempfile.TemporaryDirectory(prefix="condense-validate-") as workdir:
            params = validate_recipe(job_recipe(draft, Path(workdir), for_validation=True))
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc
    with transaction.atomic():
        # The row lock makes a concurrent dataset_delete either finish first
        # (then this job is refused) or wait until the job exists (then it refuses).
        if dataset_upload is not None and not Dataset.objects.select_for_update().filter(pk=dataset_upload.pk):
            raise ValidationError("dataset not found: it has just been deleted")
        job = Job.objects.create(
            owner=owner,
            model=model,
            name=name or f"{spec.name} on {model.name}",
            algorithm=algorithm,
            params=params,
            speedup=speedup,
            dataset=dataset or "",
            dataset_upload=dataset_upload,
            device=device,
        )
        job_log(job.pk, "status: queued")
        transaction.on_commit(lambda: job_enqueue(job.pk, device))
    return job


def send_job_message(job_id: int, queue: str) -> None:
    """Publish the job's task message on ``queue``."""
    ensure_broker_folders()
    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def job_enqueue(job_id: int, device: str) -> None:
    try:
        send_job_message(job_id, queue="gpu" if device == Job.Device.GPU else "cpu")
    except Exception as exc:
        # The row is committed; a job nobody will run must not sit in "queued".
        logger.exception("could not enqueue job %s", job_id)
        job_log(job_id, f"could not publish the job on the task queue: {type(exc).__name__}: {exc}", level="error")
        job_transition(job_id, to=Status.FAILED, expected=(Status.QUEUED,),
                       error="the task queue could not be reached, so no worker received this job; "
                       "submit the job again, and if this keeps happening tell the administrator")


def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job at once; ask a running job to stop at its next step."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status == Status.QUEUED:
            return job_transition(job.pk, to=Status.CANCELLED, stage="cancelled before it started")
        if locked.status == Status.RUNNING:
            locked.cancel_requested = True
            locked.save(update_fields=["cancel_requested"])
            job_log(job.pk, "cancel requested")
            return locked
    raise InvalidTransition(f"job {job.pk} is {locked.status}; only queued or running jobs can be cancelled")


def job_delete(*, job: Job) -> None:
    if job.status in (Status.QUEUED, Status.RUNNING):
        raise ServiceConflict("cancel the job before deleting it")
    prefix = job_storage_prefix(job.pk)
    job.delete()
    transaction.on_commit(lambda: storage_delete_prefix(prefix))


def _claim(job_id: int, task_id: str, worker: str) -> Job | None:
    """Take a queued job for this task. A redelivered task (same id, its worker
    died) takes its running job again; anything else is left alone."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            logger.warning("job %s no longer exists", job_id)
            return None
        if job.status == Status.QUEUED:
            return job_transition(
                job_id, to=Status.RUNNING, task_id=task_id, worker=worker, attempts=job.attempts + 1,
                progress=0.0, stage="starting",
            )
        if job.status == Status.RUNNING and job.task_id == task_id:
            job.attempts += 1
            job.progress = 0.0
            job.worker = worker
            job.stage = "restarting after the previous worker stopped"
            job.save(update_fields=["attempts", "progress", "stage", "worker"])
            job_log(job_id, job.stage, level="warning")
            return job
    logger.info("job %s is %s; task %s has nothing to do", job_id, job.status, task_id)
    return None


def _progress_reporter(job_id: int):
    def report(fraction: float, message: str) -> None:
        updated = Job.objects.filter(pk=job_id, status=Status.RUNNING).update(
            progress=round(min(max(fraction, 0.0), 1.0), 4), stage=message[:200]
        )
        job_log(job_id, message)
        cancel = Job.objects.filter(pk=job_id).values_list("cancel_requested", flat=True).first()
        if not updated or cancel:
            raise JobCancelled(message)

    return report


def job_execute(job_id: int, task_id: str, worker: str = "") -> None:
    """Run a job's pipeline; the job always ends succeeded, failed or cancelled."""
    job = _claim(job_id, task_id, worker)
    if job is None:
        return
    workdir = Path(tempfile.mkdtemp(prefix=f"condense-job-{job_id}-"))
    try:
        result = run_job(job_recipe(job, workdir), progress=_progress_reporter(job_id))
        artifacts = job_store_artifacts(job_id, workdir / "out", result.artifacts)
    except JobCancelled:
        try:
            job_transition(job_id, to=Status.CANCELLED, expected=(Status.RUNNING,), stage="cancelled")
        except InvalidTransition:
            logger.info("job %s stopped; it is no longer running", job_id)
        return
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        # The page shows the sentence; the traceback (its end is what matters) goes to the log, collapsed there.
        job_log(job_id, _tail(traceback.format_exc(), JOB_LOG_CHARS), level="error")
        job_transition(job_id, to=Status.FAILED, expected=(Status.RUNNING,), error=explain_failure(exc),
                       stage="failed")
        return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for warning in result.warnings:
        job_log(job_id, warning, level="warning")
    job_transition(
        job_id,
        to=Status.SUCCEEDED,
        expected=(Status.RUNNING,),
        progress=1.0,
        stage="done",
        metrics={**result.metrics, "timings": result.timings},
        layers=result.layers,
        warnings=result.warnings,
        artifacts=artifacts,
    )


def job_fail_orphans(*, worker: str) -> list[int]:
    """Fail the jobs a worker left running when it died (killed, out of memory).

    Called when a worker node starts: whatever that node name still has
    running was interrupted, since one node runs each job to the end.
    """
    orphans = list(Job.objects.filter(status=Status.RUNNING, worker=worker).values_list("pk", flat=True))
    failed = []
    for job_id in orphans:
        try:
            job_transition(
                job_id, to=Status.FAILED, expected=(Status.RUNNING,), stage="failed",
                error=f"the worker {worker} stopped while running this job (killed or out of memory); "
                "the model and recipe are kept: submit the job again",
            )
        except InvalidTransition:
            continue
        failed.append(job_id)
    return failed


def job_artifact_name(job: Job, name: str) -> str:
    """The storage name of the job's artifact ``name`` (for ``storage_download_response``).

    Raises ``ValidationError`` when the job has no such artifact or its file is gone from storage.
    """
    names = {artifact["name"] for artifact in job.artifacts}
    if name not in names:
        raise ValidationError(f"job {job.pk} has no artifact {name!r}; it has {', '.join(sorted(names)) or 'none'}")
    stored = f"{job_storage_prefix(job.pk)}/{name}"
    if not storage_exists(stored):
        raise ValidationError(f"the file {name!r} of job {job.pk} is missing from the server's storage")
    return stored
