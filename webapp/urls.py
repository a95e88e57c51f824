from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("webapp.api.urls")),
    path("", include("webapp.dashboard.urls")),
]

# Unmatched paths under /api/ (e.g. /api/v1/jobs/abc/) get the API's JSON 404, as the schema documents.
handler404 = "webapp.api.errors.page_not_found"
