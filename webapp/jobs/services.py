"""Writes for jobs. Every status change goes through :func:`~.transitions.job_transition`;
who runs a job is decided by its lease (:mod:`.leases`), publishing is in :mod:`.publishing`."""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from compression_core.algorithms import get_algorithm
from compression_core.jobs import (
    JobCancelled, Recipe, explain_failure, fixed_batch_message, run_job, validate_recipe,
)

from webapp.common.exceptions import ServiceConflict
from webapp.common.intake import IntakeStatus
from webapp.common.storage import storage_delete_prefix, storage_exists, storage_push
from webapp.datahub.models import Dataset
from webapp.modelhub.models import ModelArtifact
from webapp.datahub.selectors import dataset_validation_source
from webapp.datahub.services import dataset_source
from webapp.fleet.selectors import job_queue_for
from webapp.modelhub.services import model_source

from .leases import Lease, LeaseKeeper, LeaseLost, job_claim, lease_renew
from .models import Job
from .publishing import job_publish, job_time_limits
from .scratch import run_scratch
from .transitions import JOB_LOG_CHARS, InvalidTransition, job_log, job_transition

logger = logging.getLogger(__name__)
Status = Job.Status


class JobTimedOut(JobCancelled):
    """The run passed its soft time limit; the job fails with what to change."""


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
        device="gpu" if job.queue == "gpu" else "cpu",
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


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…\n" + text[-(limit - 2):]


def _require_ready(what: str, upload) -> None:
    if upload.status == IntakeStatus.INSPECTING:
        raise ValidationError(f"the {what} {upload.name!r} is still being inspected; submit the job once it is ready")
    if upload.status == IntakeStatus.REJECTED:
        raise ValidationError(f"the {what} {upload.name!r} was rejected at upload: {upload.status_reason}")


MAX_TAGS = 10
MAX_TAG_CHARS = 40


def job_tags_clean(tags) -> list[str]:
    """A job's tags stripped, empty ones and repeats dropped; ``ValidationError`` past
    :data:`MAX_TAGS` tags or :data:`MAX_TAG_CHARS` characters in one.

    Example::

        >>> job_tags_clean([" baseline ", "resnet", "", "baseline"])
        ['baseline', 'resnet']
    """
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise ValidationError('tags must be a list of strings, e.g. ["baseline", "50%"]')
    cleaned = list(dict.fromkeys(tag.strip() for tag in tags if tag.strip()))
    if len(cleaned) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags, got {len(cleaned)}")
    too_long = [tag for tag in cleaned if len(tag) > MAX_TAG_CHARS]
    if too_long:
        raise ValidationError(f"a tag has at most {MAX_TAG_CHARS} characters: {too_long[0][:60]!r} is longer")
    return cleaned


def job_create(
    *,
    owner,
    model: ModelArtifact,
    algorithm: str,
    params: dict,
    speedup: bool = True,
    dataset: str = "",
    dataset_upload: Dataset | None = None,
    device: str = Job.Device.AUTO,
    name: str = "",
    tags: list[str] | None = None,
    time_limit_s: int | None = None,
) -> Job:
    """Validate the recipe against the model, store the job and enqueue it on commit.

    ``tags`` are free labels (see :func:`job_tags_clean`).

    The evaluation data is a built-in ``dataset`` name or an uploaded
    ``dataset_upload`` (the owner's), not both; its samples must fit the
    model's input (``ValidationError`` naming both shapes otherwise).
    """
    if model.owner_id != owner.pk:
        raise ValidationError("model not found")
    _require_ready("model", model)
    if dataset_upload is not None:
        if dataset_upload.owner_id != owner.pk:
            raise ValidationError("dataset not found")
        _require_ready("dataset", dataset_upload)
        if dataset:
            raise ValidationError("choose either a built-in dataset or an uploaded one, not both")
    if device not in Job.Device.values:
        raise ValidationError(f"device must be one of {', '.join(Job.Device.values)}")
    tags = job_tags_clean(tags or [])
    queue = job_queue_for(device)  # refuses gpu when no GPU worker is alive
    blocked = fixed_batch_message(model.summary.get("batch"))  # the upload's inspection found it runs at batch 1 only
    if blocked:
        raise ValidationError(blocked)
    try:
        spec = get_algorithm(algorithm)
        draft = Job(owner=owner, model=model, algorithm=algorithm, params=params, speedup=speedup,
                    dataset=dataset or "", dataset_upload=dataset_upload, device=device, queue=queue)
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
            queue=queue,
            tags=tags,
            time_limit_s=time_limit_s,
        )
        job_log(job.pk, "status: queued")
        transaction.on_commit(lambda: job_publish(job.pk))
    # Outside a surrounding transaction the message is sent by now: answer with what it did to the job.
    job.refresh_from_db()
    return job


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


def _progress_reporter(lease: Lease, soft_limit_s: int):
    """The run's progress callback: writes the bar, the message and where the run stands (``progress_detail``:
    stage, done of total, the estimate of the time left; see ``compression_core.jobs.stages``); logs the steps."""
    started = time.monotonic()

    def report(fraction: float, message: str, detail: dict | None = None) -> None:
        detail = dict(detail or {})
        in_log = detail.pop("in_log", True)  # a training's batch windows move the bar, the log keeps the steps
        # Each report renews the lease too: a run whose lease was taken over stops here.
        if not lease_renew(lease, progress=round(min(max(fraction, 0.0), 1.0), 4), stage=message[:200],
                           progress_detail=detail):
            raise LeaseLost(message)
        if in_log:
            job_log(lease.job_id, message)
        if Job.objects.filter(pk=lease.job_id).values_list("cancel_requested", flat=True).first():
            raise JobCancelled(message)
        if time.monotonic() - started > soft_limit_s:
            raise JobTimedOut(message)

    return report


def _time_limit_message(soft_limit_s: int, stage: str) -> str:
    return (f"the job ran past its time limit of {soft_limit_s // 60} min and was stopped during '{stage}'; "
            "submit it again with a larger time_limit_s, fewer fine-tuning epochs or training steps, "
            "or a smaller dataset")


def job_execute(job_id: int, task_id: str, worker: str = "") -> None:
    """Run a job's pipeline if it is ours to run (see :func:`~.leases.job_claim`).

    The run works in a fresh scratch folder removed in every outcome, renews its lease while it
    runs, and ends the job succeeded, failed or cancelled, unless its lease was taken over, in
    which case it stops and leaves the job to the run that holds it.
    """
    claimed = job_claim(job_id, task_id, worker)
    if claimed is None:
        return
    job, lease = claimed
    soft_limit_s = job_time_limits(job)[0]
    with run_scratch(job_id, lease.attempt) as workdir, LeaseKeeper(lease):
        try:
            result = run_job(job_recipe(job, workdir), progress=_progress_reporter(lease, soft_limit_s))
            artifacts = job_store_artifacts(job_id, workdir / "out", result.artifacts)
        except LeaseLost:
            logger.warning("job %s: lease %s lost; another run holds the job", job_id, lease.owner)
            return
        except JobTimedOut as exc:
            _end(lease, Status.FAILED, stage="failed", error=_time_limit_message(soft_limit_s, str(exc)))
            return
        except JobCancelled:
            _end(lease, Status.CANCELLED, stage="cancelled")
            return
        except Exception as exc:
            logger.exception("job %s failed", job_id)
            # The page shows the sentence; the traceback (its end is what matters) goes to the log, collapsed there.
            job_log(job_id, _tail(traceback.format_exc(), JOB_LOG_CHARS), level="error")
            _end(lease, Status.FAILED, error=explain_failure(exc), stage="failed")
            return
    for warning in result.warnings:
        job_log(job_id, warning, level="warning")
    _end(lease, Status.SUCCEEDED, progress=1.0, stage="done", metrics={**result.metrics, "timings": result.timings},
         layers=result.layers, warnings=result.warnings, artifacts=artifacts)


def _end(lease: Lease, to: str, **fields) -> None:
    """Finish the run's job, only while this run still holds the lease."""
    with transaction.atomic():
        held = Job.objects.select_for_update().filter(pk=lease.job_id, status=Status.RUNNING,
                                                      lease_owner=lease.owner).exists()
        if not held:
            logger.warning("job %s: run %s finished after losing its lease; its result is dropped",
                           lease.job_id, lease.attempt)
            return
        job_transition(lease.job_id, to=to, expected=(Status.RUNNING,), **fields)


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


def job_hard_time_limit(job_id: int, *, task_id: str) -> None:
    """Celery killed the run of ``task_id`` at the hard time limit (it never reached a step where the
    soft limit could stop it): fail the job with the limit it passed."""
    job = Job.objects.filter(pk=job_id, status=Status.RUNNING, task_id=task_id).first()
    if job is None:
        return
    soft, hard = job_time_limits(job)
    try:
        job_transition(job_id, to=Status.FAILED, expected=(Status.RUNNING,), stage="failed",
                       error=f"{_time_limit_message(hard, job.stage)} (it was killed: no step ended after the "
                       f"{soft // 60} min soft limit)")
    except InvalidTransition:
        pass
