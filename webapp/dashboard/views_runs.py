"""The runs: the jobs list as a filterable, comparable table, and the compare page with its exports. The figures
come from :mod:`webapp.jobs.runs`, as the API's."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.shortcuts import redirect, render

from webapp.jobs import selectors as job_selectors
from webapp.jobs.models import Job
from webapp.jobs.runs import (
    RUN_FIELDS, RunQueryError, compare_runs, export_value, parse_ids, parse_run_filters, quality,
)
from webapp.modelhub import selectors as model_selectors

PAGE_SIZE = 50
#: The reference's columns in a CSV export row: the original model the job compressed.
REFERENCE_COLUMNS = ("accuracy", "latency_ms", "size_bytes", "params")


def runs_filters(request, *, model=None) -> dict:
    """The runs table's filters from the query string (``model`` fixed on a model's page), the choices each
    select offers and the query string they make (for links that keep them); a bad value is dropped with a
    message."""
    try:
        filters = parse_run_filters(request.GET)
    except RunQueryError as exc:
        messages.error(request, f"Filter ignored: {exc}")
        filters = {}
    filters.pop("ids", None)
    if model is not None:
        filters["model"] = model.pk
    return {
        "values": filters,
        "fixed_model": model,
        "models": [] if model is not None else list(model_selectors.model_list(user=request.user).only("pk", "name")),
        "algorithms": job_selectors.job_algorithms(user=request.user),
        "statuses": Job.Status.values,
        "tags": job_selectors.job_tags(user=request.user),
        "query": urlencode({key: value for key, value in filters.items() if model is None or key != "model"}),
    }


@login_required
def job_list(request):
    filters = runs_filters(request)
    jobs = job_selectors.job_list_filtered(user=request.user, **filters["values"])
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/job_list.html", {"page": page, "jobs": page.object_list, "filters": filters})


def _compared_jobs(request) -> list[Job] | None:
    try:
        ids = parse_ids(request.GET.get("ids"))
    except RunQueryError as exc:
        messages.error(request, f"Nothing to compare: {exc.message}.")
        return None
    return job_selectors.jobs_by_ids(user=request.user, ids=ids)


def _y_title(rows: list[dict]) -> str:
    kinds = {quality(row)[1] for row in rows if quality(row)[0] is not None}
    if kinds == {"fidelity"}:
        return "Top-1 agreement with the original (%)"
    if kinds == {"accuracy", "fidelity"}:
        return "Accuracy, or top-1 agreement where no labels (%)"
    return "Accuracy (%)"


def _percent_of_original(ratio: float | None) -> float | None:
    return 100.0 / ratio if ratio else None


def compare_charts(comparison: dict) -> dict:
    """The points of the two scatter charts: y in %; x the latency in % of the original's (each job's ratio,
    timed interleaved with its original, with its 95% interval as an error bar) or the deployable file in MB."""
    rows, references = comparison["jobs"], comparison["references"]
    latency, size = [], []
    for row in rows:
        value, kind = quality(row)
        y = value * 100 if value is not None else None
        name = f"#{row['id']} {row['name'] or row['algorithm']}: {kind} "
        x, after_ms = _percent_of_original(row["latency_ratio"]), row["latency_after_ms"]
        measured = None not in (x, y, after_ms)
        latency.append({"id": row["id"], "x": x, "y": y,
                        "x_low": _percent_of_original(row["latency_high"]),
                        "x_high": _percent_of_original(row["latency_low"]),
                        "label": name + (f"{y:.1f} %, latency {x:.0f} % of the original's ({after_ms:.3g} ms)"
                                         if measured else "not measured")})
        mb = row["size_after_bytes"] * 1e-6 if row["size_after_bytes"] is not None else None
        size.append({"id": row["id"], "x": mb, "y": y,
                     "label": name + (f"{y:.1f} %, {mb:.3g} MB" if None not in (mb, y) else "not measured")})

    def refs(x_of):
        return [{"model": ref["model"], "x": x_of(ref), "label": f"original model {ref['model_name']}",
                 "y": ref["quality"] * 100 if ref["quality"] is not None else None} for ref in references]

    runtimes = sorted({f"{row['latency_runtime']}, batch {row['latency_batch']}" for row in rows
                       if row["latency_runtime"]})
    return {
        "latency": {"points": latency, "references": refs(lambda ref: 100.0),
                    "x_title": f"Latency (% of the original's{': ' + '; '.join(runtimes) if runtimes else ''})"},
        "size": {"points": size, "x_title": "Size of the deployable file (MB)",
                 "references": refs(lambda ref: ref["size_bytes"] * 1e-6 if ref["size_bytes"] is not None else None)},
        "y_title": _y_title(rows),
    }


@login_required
def job_compare(request):
    jobs = _compared_jobs(request)
    if jobs is None:
        return redirect("dashboard:job-list")
    comparison = compare_runs(jobs)
    return render(request, "dashboard/job_compare.html", {
        "jobs": jobs, "comparison": comparison, "charts": compare_charts(comparison),
        "ids": ",".join(str(job.pk) for job in jobs),
    })


def _export_rows(comparison: dict) -> list[dict]:
    references = {ref["model"]: ref for ref in comparison["references"]}
    return [{**row, "reference": references[row["model"]]} for row in comparison["jobs"]]


def _attachment(content: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
def job_compare_export(request, fmt: str):
    """The compared jobs as a CSV (one row per job: the run-row fields, then its original model's figures as
    ``reference_*``) or as JSON (the same rows with ``params`` and ``reference`` objects, and the Pareto ids)."""
    jobs = _compared_jobs(request)
    if jobs is None:
        return redirect("dashboard:job-list")
    comparison = compare_runs(jobs)
    rows = _export_rows(comparison)
    name = "compare-" + "-".join(str(job.pk) for job in jobs)
    if fmt == "json":
        body = json.dumps({"jobs": rows, "pareto": comparison["pareto"]}, cls=DjangoJSONEncoder, indent=1)
        return _attachment(body, "application/json", f"{name}.json")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*RUN_FIELDS, *(f"reference_{key}" for key in REFERENCE_COLUMNS)])
    for row in rows:
        writer.writerow([*(export_value(row[key]) for key in RUN_FIELDS),
                         *(row["reference"][key] for key in REFERENCE_COLUMNS)])
    return _attachment(buffer.getvalue(), "text/csv", f"{name}.csv")
