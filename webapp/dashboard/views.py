"""Browser dashboard. Each view reads a form, calls one service or selector and
renders a template; the rules live in ``webapp.modelhub``, ``webapp.datahub``
and ``webapp.jobs``."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.common.exceptions import ServiceConflict
from webapp.common.intake import IntakeStatus
from webapp.common.storage import storage_download_response
from webapp.datahub import selectors as dataset_selectors
from webapp.datahub import services as dataset_services
from webapp.jobs import selectors as job_selectors
from webapp.jobs import services as job_services
from webapp.modelhub import selectors as model_selectors
from webapp.modelhub import services as model_services

from .forms import DatasetUploadForm, JobForm, ModelUploadForm, job_form_initial
from .job_reproduce import job_reproduce
from .views_runs import runs_filters

RECENT = 10
TRACEBACK_HEADER = "Traceback (most recent call last)"
PAGE_SIZE = 50


@login_required
def home(request):
    models = model_selectors.model_list(user=request.user)
    jobs = job_selectors.job_list(user=request.user)
    return render(request, "dashboard/home.html", {
        "models": models[:RECENT],
        "model_count": models.count(),
        "jobs": jobs[:RECENT],
        "job_count": jobs.count(),
    })


@login_required
def model_list(request):
    page = Paginator(model_selectors.model_list(user=request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/model_list.html", {"page": page, "models": page.object_list})


@login_required
def model_create(request):
    form = ModelUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = model_services.model_create(owner=request.user, **form.service_kwargs())
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            messages.success(request, _upload_message("Model", model))
            return redirect("dashboard:model-detail", model_id=model.pk)
    return render(request, "dashboard/model_form.html", {"form": form})


def _upload_message(what: str, upload) -> str:
    if upload.status == IntakeStatus.INSPECTING:
        return f"{what} \u201c{upload.name}\u201d uploaded; a worker is inspecting it (this page updates itself)."
    if upload.status == IntakeStatus.REJECTED:
        return f"{what} \u201c{upload.name}\u201d uploaded, and rejected by its inspection: see why below."
    return f"{what} \u201c{upload.name}\u201d inspected and stored."


@login_required
@require_POST
def model_delete(request, model_id: int):
    model = model_selectors.model_get(user=request.user, model_id=model_id)
    try:
        model_services.model_delete(model=model)
    except ServiceConflict as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:model-detail", model_id=model.pk)
    messages.success(request, f"Model \u201c{model.name}\u201d deleted.")
    return redirect("dashboard:model-list")


@login_required
def model_detail(request, model_id: int):
    model = model_selectors.model_get(user=request.user, model_id=model_id)
    filters = runs_filters(request, model=model)
    jobs = job_selectors.job_list_filtered(user=request.user, **filters["values"])
    return render(request, "dashboard/model_detail.html", {"model": model, "summary": model.summary, "jobs": jobs,
                                                           "filters": filters})


@login_required
def dataset_list(request):
    """The user's datasets and the built-in ones, with the upload form (which posts here)."""
    form = DatasetUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = dataset_services.dataset_create(owner=request.user, **form.service_kwargs())
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            messages.success(request, _upload_message("Dataset", dataset))
            return redirect("dashboard:dataset-list")
    page = Paginator(dataset_selectors.dataset_list(user=request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/dataset_list.html", {
        "form": form,
        "page": page,
        "datasets": page.object_list,
        "builtin_datasets": dataset_selectors.builtin_dataset_list(),
    })


@login_required
@require_POST
def dataset_delete(request, dataset_id: int):
    dataset = dataset_selectors.dataset_get(user=request.user, dataset_id=dataset_id)
    try:
        dataset_services.dataset_delete(dataset=dataset)
    except ServiceConflict as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Dataset \u201c{dataset.name}\u201d deleted.")
    return redirect("dashboard:dataset-list")


@login_required
def worker_list(request):
    pool = job_selectors.worker_pool(user=request.user)
    return render(request, "dashboard/worker_list.html",
                  {"pool": pool, "any_live": any(worker["live"] for worker in pool["workers"])})


@login_required
def job_create(request):
    if request.method == "POST":
        form = JobForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                job = job_services.job_create(owner=request.user, **form.service_kwargs())
            except ValidationError as exc:
                form.add_error(None, exc.messages)
            else:
                messages.success(request, f"Job #{job.pk} queued.")
                return redirect("dashboard:job-detail", job_id=job.pk)
    elif request.GET.get("clone"):
        source = job_selectors.job_get(user=request.user, job_id=_int_or_404(request.GET["clone"]))
        form = JobForm(user=request.user, initial=job_form_initial(source))
    else:
        form = JobForm(user=request.user, initial={"model": request.GET.get("model"),
                                                   "dataset": request.GET.get("dataset")})
    return render(request, "dashboard/job_form.html", {"form": form})


def _int_or_404(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Http404("no such job") from None


@login_required
def job_detail(request, job_id: int):
    job = job_selectors.job_get(user=request.user, job_id=job_id)
    logs = list(job_selectors.job_logs(job=job))
    # A failed job's traceback is shown collapsed under its sentence, and collapsed in the log.
    tracebacks = [entry for entry in logs if entry.level == "error" and TRACEBACK_HEADER in entry.message]
    return render(request, "dashboard/job_detail.html", {
        "job": job,
        "elapsed_s": job_selectors.job_elapsed_s(job=job),
        "logs": logs,
        "last_log_id": logs[-1].pk if logs else 0,
        "traceback_entry": tracebacks[-1] if tracebacks else None,
        "max_attempts": settings.CONDENSE_JOB_MAX_ATTEMPTS,
        "reproduce": job_reproduce(job, request.build_absolute_uri(reverse("api-jobs"))),
    })


@login_required
@require_POST
def job_cancel(request, job_id: int):
    job = job_selectors.job_get(user=request.user, job_id=job_id)
    try:
        job = job_services.job_cancel(job=job)
    except ServiceConflict as exc:
        messages.error(request, str(exc))
    else:
        if job.status == job.Status.CANCELLED:
            messages.success(request, f"Job #{job.pk} cancelled.")
        else:
            messages.info(request, f"Job #{job.pk} will stop at its next step.")
    return redirect("dashboard:job-detail", job_id=job.pk)


@login_required
@require_POST
def job_delete(request, job_id: int):
    job = job_selectors.job_get(user=request.user, job_id=job_id)
    try:
        job_services.job_delete(job=job)
    except ServiceConflict as exc:
        messages.error(request, f"Job #{job.pk} was not deleted: {exc}.")
        return redirect("dashboard:job-detail", job_id=job.pk)
    messages.success(request, f"Job #{job_id} deleted, with its results and downloads.")
    return redirect("dashboard:job-list")


@login_required
def job_download(request, job_id: int, name: str):
    job = job_selectors.job_get(user=request.user, job_id=job_id)
    try:
        stored = job_services.job_artifact_name(job, name)
    except ValidationError as exc:
        raise Http404("; ".join(exc.messages)) from exc
    return storage_download_response(stored, filename=f"job{job.pk}-{name}")
