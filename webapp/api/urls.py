from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import auth, docs, runs, views, workers

urlpatterns = [
    path("auth/token/", auth.TokenObtainView.as_view(), name="api-token"),
    path("auth/tokens/", auth.TokenListView.as_view(), name="api-tokens"),
    path("auth/tokens/<int:token_id>/", auth.TokenDetailView.as_view(), name="api-token-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The interactive reference (Swagger UI, "Try it out" with the browser's session) and ReDoc, assets served
    # from drf-spectacular-sidecar's static files.
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", docs.RedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("models/", views.ModelListCreateView.as_view(), name="api-models"),
    path("models/<int:model_id>/", views.ModelDetailView.as_view(), name="api-model"),
    path("jobs/", views.JobListCreateView.as_view(), name="api-jobs"),
    path("jobs/compare/", runs.JobCompareView.as_view(), name="api-job-compare"),
    path("jobs/<int:job_id>/", views.JobDetailView.as_view(), name="api-job"),
    path("jobs/<int:job_id>/cancel/", views.JobCancelView.as_view(), name="api-job-cancel"),
    path("jobs/<int:job_id>/logs/", views.JobLogView.as_view(), name="api-job-logs"),
    path("jobs/<int:job_id>/artifacts/", views.JobArtifactListView.as_view(), name="api-job-artifacts"),
    path("jobs/<int:job_id>/artifacts/<str:name>", views.JobArtifactDownloadView.as_view(), name="api-job-artifact"),
    path("algorithms/", views.AlgorithmListView.as_view(), name="api-algorithms"),
    path("architectures/", views.ArchitectureListView.as_view(), name="api-architectures"),
    path("datasets/", views.DatasetListCreateView.as_view(), name="api-datasets"),
    path("datasets/<int:dataset_id>/", views.DatasetDetailView.as_view(), name="api-dataset"),
    path("workers/", workers.WorkerPoolView.as_view(), name="api-workers"),
]
