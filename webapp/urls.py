from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.accounts.forms import LockoutAdminAuthenticationForm
from webapp.accounts.views import SignInView

# The admin's own sign-in page is a second way to guess passwords: it shares the lock-out.
admin.site.login_form = LockoutAdminAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", include("webapp.accounts.urls")),
    path("api/v1/", include("webapp.api.urls")),
    path("", include("webapp.dashboard.urls")),
]

# Unmatched paths under /api/ (e.g. /api/v1/jobs/abc/) get the API's JSON 404, as the schema documents.
handler404 = "webapp.api.errors.page_not_found"
