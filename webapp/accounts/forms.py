"""Browser forms: sign-in under the lock-out, and a new API token."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from . import services
from .addresses import client_address

EXPIRY_CHOICES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("never", "Never")]


class LockoutMixin:
    """An ``AuthenticationForm`` under the shared lock-out: a locked username or address is refused with the
    minutes to wait, before the password is looked at."""

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = services.sign_in(username=username, password=password,
                                                   address=client_address(self.request) if self.request else "",
                                                   request=self.request)
            except services.SignInLocked as lock:
                raise ValidationError(lock.message(), code="locked") from None
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class LockoutAuthenticationForm(LockoutMixin, AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Your username and password didn't match. Please try again.",
    }


class LockoutAdminAuthenticationForm(LockoutMixin, AdminAuthenticationForm):
    """The admin site's sign-in: the same lock-out, then Django's staff check."""


def _default_expiry() -> str:
    days = settings.CONDENSE_TOKEN_TTL_DAYS
    if days == 0:
        return "never"
    return str(days) if str(days) in dict(EXPIRY_CHOICES) else "90"


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=services.NAME_MAX_LENGTH, strip=True,
                           help_text="What will use it: a script, CI, a laptop.")
    expires_in = forms.ChoiceField(choices=EXPIRY_CHOICES, label="Expires after", initial=_default_expiry)

    def service_kwargs(self) -> dict:
        choice = self.cleaned_data["expires_in"]
        return {"name": self.cleaned_data["name"], "expires_in_days": None if choice == "never" else int(choice)}
