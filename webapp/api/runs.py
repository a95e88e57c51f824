"""Runs in the API: ``GET /api/v1/jobs/`` filtered (``model``, ``algorithm``, ``status``, ``tag``, ``ids``) with
``fields`` choosing the keys of each item among the run-row fields (:data:`webapp.jobs.runs.RUN_FIELDS`), and
``GET /api/v1/jobs/compare/?ids=1,2,3``: the jobs side by side, the original models, the Pareto fronts and the
parameters that differ."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.jobs import selectors as job_selectors
from webapp.jobs.models import Job
from webapp.jobs.runs import (
    ID_LIST_PATTERN, MAX_IDS, RUN_FIELDS, RunQueryError, compare_runs, job_run_row, parse_fields, parse_ids,
    parse_run_filters,
)

from .schema import NOT_FOUND

#: The keys of a list item when ``fields`` is not given.
DEFAULT_LIST_FIELDS = ("id", "name", "model", "model_name", "algorithm", "status", "progress", "stage", "error",
                       "tags", "created_at", "finished_at")

_FLOAT, _INT, _TEXT, _TIME = (serializers.FloatField, serializers.IntegerField, serializers.CharField,
                              serializers.DateTimeField)
_TYPES = {"id": _INT, "model": _INT, "latency_batch": _INT, "bits": _INT, "progress": _FLOAT,
          "created_at": _TIME, "started_at": _TIME, "finished_at": _TIME,
          "name": _TEXT, "model_name": _TEXT, "algorithm": _TEXT, "stage": _TEXT, "error": _TEXT, "target": _TEXT,
          "latency_runtime": _TEXT, "latency_verdict": _TEXT}


def _field(name: str) -> serializers.Field:
    # Every key is optional: ``fields`` decides which ones an item has.
    help_text = RUN_FIELDS[name]
    if name == "status":
        return serializers.ChoiceField(choices=Job.Status.choices, required=False, help_text=help_text)
    if name == "progress_detail":
        return serializers.DictField(required=False, help_text=help_text)
    if name in ("tags", "latency_flags"):
        return serializers.ListField(child=serializers.CharField(), required=False, help_text=help_text)
    kind = _TYPES.get(name, _FLOAT)
    if kind is _TEXT:
        return _TEXT(required=False, allow_blank=True, allow_null=True, help_text=help_text)
    return kind(required=False, allow_null=True, help_text=help_text)


class _RunKeysSerializer(serializers.Serializer):
    def to_representation(self, instance):
        # Only the keys the item holds: a missing key is left out, not written as null.
        return {key: value for key, value in super().to_representation(instance).items() if key in instance}


JobRunSerializer = type("JobRunSerializer", (_RunKeysSerializer,), {
    "__doc__": "One job as a run: the keys ``fields`` asks for (by default id, name, model, status...).",
    **{name: _field(name) for name in RUN_FIELDS},
})


class JobRunWithParamsSerializer(JobRunSerializer):
    params = serializers.DictField(help_text="the job's parameters")


class ReferenceSerializer(serializers.Serializer):
    model = serializers.IntegerField()
    model_name = serializers.CharField()
    accuracy = serializers.FloatField(allow_null=True, help_text="the original model's accuracy (0 to 1)")
    quality = serializers.FloatField(allow_null=True,
                                     help_text="its y on the charts: accuracy, or 1.0 (top-1 agreement with itself)")
    quality_kind = serializers.ChoiceField(choices=["accuracy", "fidelity"])
    latency_ms = serializers.FloatField(allow_null=True,
                                        help_text="median of its latencies timed by these jobs (headline runtime)")
    size_bytes = serializers.FloatField(allow_null=True)
    params = serializers.FloatField(allow_null=True)
    flops = serializers.FloatField(allow_null=True)


class ParetoSerializer(serializers.Serializer):
    accuracy_latency = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="ids of the jobs no other point beats on accuracy and latency relative to the original "
                  "(1 / latency_ratio; the original is 1.0)")
    accuracy_size = serializers.ListField(child=serializers.IntegerField(),
                                          help_text="ids of the jobs no other point beats on accuracy and size")


class ParamDiffSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="a dotted parameter name, e.g. config_list.0.sparse_ratio")
    values = serializers.ListField(child=serializers.JSONField(allow_null=True),
                                   help_text="its value in each job, in the order of jobs (null: not set)")
    differs = serializers.BooleanField()


class LayerChannelsSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(allow_blank=True)
    jobs = serializers.ListField(child=serializers.JSONField(allow_null=True),
                                 help_text="per job {key, before, after, changed} (channels kept), or null")


class JobCompareSerializer(serializers.Serializer):
    jobs = JobRunWithParamsSerializer(many=True)
    reference = ReferenceSerializer(allow_null=True, help_text="the original model of the first job")
    references = ReferenceSerializer(many=True, help_text="the original of each model compared")
    pareto = ParetoSerializer()
    params_diff = ParamDiffSerializer(many=True)
    layers = LayerChannelsSerializer(many=True)


def _query(parse, *args):
    """``parse(*args)``, its :class:`RunQueryError` turned into a 400 naming the parameter."""
    try:
        return parse(*args)
    except RunQueryError as exc:
        raise ValidationError({exc.name: [exc.message]}) from exc


def _id_list_parameter(name: str, description: str, required: bool) -> OpenApiParameter:
    return OpenApiParameter(name, {"type": "string", "pattern": ID_LIST_PATTERN}, required=required,
                            description=description)


LIST_PARAMETERS = [
    OpenApiParameter("model", {"type": "integer", "minimum": 1, "maximum": 10**12 - 1},
                     description="only the jobs on this model (its id)"),
    OpenApiParameter("algorithm", OpenApiTypes.STR, description="only the jobs of this algorithm, e.g. L1NormPruner"),
    OpenApiParameter("status", {"type": "string", "enum": list(Job.Status.values)},
                     description="only the jobs in this status"),
    OpenApiParameter("tag", OpenApiTypes.STR, description="only the jobs with this tag (exact)"),
    _id_list_parameter("ids", "only these jobs, e.g. 1,2,3", required=False),
    OpenApiParameter("fields", OpenApiTypes.STR, description=(
        "the keys of each item, separated by commas (an unknown one is a 400 listing the valid ones); default "
        f"{','.join(DEFAULT_LIST_FIELDS)}. Any of: {', '.join(RUN_FIELDS)}")),
]

#: The schema of ``GET /api/v1/jobs/`` (its view is in views.py, with the POST).
job_list_schema = extend_schema(parameters=LIST_PARAMETERS, responses=JobRunSerializer(many=True),
                                summary="Your jobs, newest first: filtered, with the fields you choose")


def job_list_response(view, request) -> Response:
    """The page of ``request.user``'s jobs the query asks for, each item holding the asked-for fields."""
    fields = _query(parse_fields, request.query_params.get("fields"), DEFAULT_LIST_FIELDS)
    jobs = job_selectors.job_list_filtered(user=request.user, **_query(parse_run_filters, request.query_params))
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(jobs, request, view=view)
    items = [{name: row[name] for name in fields} for row in map(job_run_row, page)]
    return paginator.get_paginated_response(JobRunSerializer(items, many=True).data)


def compare_jobs(*, user, ids: list[int]) -> dict:
    """:func:`webapp.jobs.runs.compare_runs` of ``user``'s jobs ``ids``; another's (or none) is a 404 naming it."""
    try:
        jobs = job_selectors.jobs_by_ids(user=user, ids=ids)
    except Http404 as exc:
        raise NotFound(str(exc)) from exc
    result = compare_runs(jobs)
    result["reference"] = result["references"][0] if result["references"] else None
    return result


class JobCompareView(APIView):
    @extend_schema(parameters=[_id_list_parameter("ids", f"the jobs to compare, e.g. 1,2,3 (at most {MAX_IDS})",
                                                  required=True)],
                   responses={200: JobCompareSerializer, 404: NOT_FOUND},
                   summary="Jobs side by side: metrics, the original model, Pareto fronts, parameters that differ")
    def get(self, request):
        result = compare_jobs(user=request.user, ids=_query(parse_ids, request.query_params.get("ids")))
        return Response(JobCompareSerializer(result).data)
