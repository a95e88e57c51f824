from django.urls import path

from . import views, views_catalog, views_runs

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("models/", views.model_list, name="model-list"),
    path("models/new/", views.model_create, name="model-create"),
    path("models/<int:model_id>/", views.model_detail, name="model-detail"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<int:dataset_id>/delete/", views.dataset_delete, name="dataset-delete"),
    path("models/<int:model_id>/delete/", views.model_delete, name="model-delete"),
    path("workers/", views.worker_list, name="worker-list"),
    path("algorithms/", views_catalog.algorithm_list, name="algorithm-list"),
    path("jobs/", views_runs.job_list, name="job-list"),
    path("jobs/compare/", views_runs.job_compare, name="job-compare"),
    path("jobs/compare/export.csv", views_runs.job_compare_export, {"fmt": "csv"}, name="job-compare-csv"),
    path("jobs/compare/export.json", views_runs.job_compare_export, {"fmt": "json"}, name="job-compare-json"),
    path("jobs/new/", views.job_create, name="job-create"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/delete/", views.job_delete, name="job-delete"),
    path("jobs/<int:job_id>/download/<str:name>", views.job_download, name="job-download"),
]
