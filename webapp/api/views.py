"""REST API v1. Views parse input, call one service or selector, render output."""

import re

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from compression_core.algorithms import all_algorithms
from compression_core.models import architecture_choices
from webapp.common.bounded_json import BoundedJSONParser
from webapp.common.storage import storage_download_response
from webapp.datahub import selectors as dataset_selectors
from webapp.datahub import services as dataset_services
from webapp.jobs import selectors as job_selectors
from webapp.jobs import services as job_services
from webapp.modelhub import selectors as model_selectors
from webapp.modelhub import services as model_services

from . import runs
from . import serializers as s
from .schema import BAD_REQUEST, CONFLICT, NOT_FOUND


def _paginate(view, request, queryset, serializer_class):
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def _example(summary: str, body: dict) -> OpenApiExample:
    """A JSON request example in the schema (schemathesis sends it too)."""
    return OpenApiExample(summary, value=body, request_only=True, media_type="application/json")


class _ListView(APIView):
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS


class ModelListCreateView(_ListView):
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(responses=s.ModelListSerializer(many=True))
    def get(self, request):
        return _paginate(self, request, model_selectors.model_list(user=request.user), s.ModelListSerializer)

    @extend_schema(request=s.MODEL_CREATE_REQUEST, responses={201: s.ModelOutputSerializer},
                   examples=[_example("A built-in architecture",
                                      {"name": "digits", "source": "builtin", "architecture": "digits_cnn"})])
    def post(self, request):
        form = s.ModelCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        model = model_services.model_create(owner=request.user, upload=data.pop("file", None),
                                            data_files=data.pop("data", []), **data)
        return Response(s.ModelOutputSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailView(APIView):
    @extend_schema(responses=s.ModelOutputSerializer)
    def get(self, request, model_id: int):
        return Response(s.ModelOutputSerializer(model_selectors.model_get(user=request.user, model_id=model_id)).data)

    @extend_schema(responses={204: None, 409: CONFLICT}, description=(
        "Delete the model and its file. Refused (409) while jobs refer to it, since a job keeps the model its "
        "results describe: cancel its queued or running jobs, delete its jobs, then the model; the detail names "
        "them, e.g. \"the model is used by job #12 (running) and #14 (queued); cancel them first, then delete "
        "them\"."))
    def delete(self, request, model_id: int):
        model_services.model_delete(model=model_selectors.model_get(user=request.user, model_id=model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class JobListCreateView(_ListView):
    @runs.job_list_schema
    def get(self, request):
        return runs.job_list_response(self, request)

    @extend_schema(request=s.JobCreateSerializer, responses={201: s.JobOutputSerializer, 404: NOT_FOUND},
                   examples=[_example("Prune half the conv channels", {
                       "model": 1, "algorithm": "L1NormPruner", "dataset": "digits",
                       "params": {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}})])
    def post(self, request):
        form = s.JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        model = model_selectors.model_get(user=request.user, model_id=data.pop("model"))
        dataset_id = data.pop("dataset_id")
        if dataset_id is not None:
            data["dataset_upload"] = dataset_selectors.dataset_get(user=request.user, dataset_id=dataset_id)
        job = job_services.job_create(owner=request.user, model=model, **data)
        return Response(s.JobOutputSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetailView(APIView):
    @extend_schema(responses=s.JobOutputSerializer)
    def get(self, request, job_id: int):
        return Response(s.JobOutputSerializer(job_selectors.job_get(user=request.user, job_id=job_id)).data)

    @extend_schema(responses={204: None, 409: CONFLICT}, description=(
        "Delete a finished job (succeeded, failed or cancelled) with its results and downloads. Refused (409) "
        "while it is queued or running: cancel it first."))
    def delete(self, request, job_id: int):
        job_services.job_delete(job=job_selectors.job_get(user=request.user, job_id=job_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class JobCancelView(APIView):
    @extend_schema(request=None, responses={200: s.JobOutputSerializer, 409: CONFLICT})
    def post(self, request, job_id: int):
        job = job_services.job_cancel(job=job_selectors.job_get(user=request.user, job_id=job_id))
        return Response(s.JobOutputSerializer(job).data)


class JobLogView(APIView):
    @extend_schema(responses=s.JobLogSerializer(many=True), parameters=[OpenApiParameter(
        "after", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
        description="only the lines after this line id (a line's `id`; default 0: all lines)")])
    def get(self, request, job_id: int):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        after = request.query_params.get("after", "0") or "0"
        # ASCII digits only (str.isdigit accepts "²"), and no more than a database id can hold.
        if not re.fullmatch(r"[0-9]{1,18}", after):
            raise ValidationError(f"'after' must be a log line id (a whole number), got {after[:40]!r}")
        after = int(after)
        return Response(s.JobLogSerializer(job_selectors.job_logs(job=job, after_id=after), many=True).data)


class JobArtifactListView(APIView):
    @extend_schema(responses=s.ArtifactSerializer(many=True))
    def get(self, request, job_id: int):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        return Response([
            {**artifact, "url": request.build_absolute_uri(f"/api/v1/jobs/{job.pk}/artifacts/{artifact['name']}")}
            for artifact in job.artifacts
        ])


class JobArtifactDownloadView(APIView):
    @extend_schema(operation_id="jobs_artifacts_download", responses={
        (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY,
                                                           description="the file, as an attachment"),
        302: OpenApiResponse(description="with CONDENSE_S3_PRESIGNED_DOWNLOADS: the file's short-lived URL (Location)"),
        400: BAD_REQUEST,
    })
    def get(self, request, job_id: int, name: str):
        job = job_selectors.job_get(user=request.user, job_id=job_id)
        stored = job_services.job_artifact_name(job, name)
        response = storage_download_response(stored, filename=f"job{job.pk}-{name}")
        if response.status_code == 200:
            # Every artifact is a download (plan.json and .csv files too), as the schema says.
            response["Content-Type"] = "application/octet-stream"
        return response


class AlgorithmListView(APIView):
    @extend_schema(responses=s.AlgorithmSerializer(many=True))
    def get(self, request):
        return Response([spec.as_dict() for spec in all_algorithms()])


class ArchitectureListView(APIView):
    @extend_schema(responses=s.ArchitectureSerializer(many=True))
    def get(self, request):
        return Response(architecture_choices())


class DatasetListCreateView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses=s.DatasetListItemSerializer(many=True))
    def get(self, request):
        uploads = s.DatasetOutputSerializer(dataset_selectors.dataset_list(user=request.user), many=True).data
        return Response(dataset_selectors.builtin_dataset_list() + list(uploads))

    # Multipart only in the schema: the file is required, and a url-encoded body cannot carry one.
    @extend_schema(request={"multipart/form-data": s.DatasetCreateSerializer},
                   responses={201: s.DatasetOutputSerializer})
    def post(self, request):
        form = s.DatasetCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        dataset = dataset_services.dataset_create(owner=request.user, name=form.validated_data["name"],
                                                  upload=form.validated_data["file"])
        return Response(s.DatasetOutputSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetailView(APIView):
    @extend_schema(responses=s.DatasetOutputSerializer)
    def get(self, request, dataset_id: int):
        dataset = dataset_selectors.dataset_get(user=request.user, dataset_id=dataset_id)
        return Response(s.DatasetOutputSerializer(dataset).data)

    @extend_schema(responses={204: None, 409: CONFLICT})
    def delete(self, request, dataset_id: int):
        dataset_services.dataset_delete(dataset=dataset_selectors.dataset_get(user=request.user, dataset_id=dataset_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
