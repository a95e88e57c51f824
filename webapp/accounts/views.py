"""Browser pages: sign-in (with the lock-out) and the user's API tokens."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from . import selectors, services
from .forms import ApiTokenForm, LockoutAuthenticationForm


class SignInView(auth_views.LoginView):
    authentication_form = LockoutAuthenticationForm


@never_cache  # the page that shows a new key must not be kept by the browser or a proxy
@login_required
def token_list(request):
    form = ApiTokenForm(request.POST or None)
    new_key = new_token = None
    if request.method == "POST" and form.is_valid():
        try:
            new_token, new_key = services.api_token_create(owner=request.user, **form.service_kwargs())
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            # The key is rendered in this response only (never stored, never redirected with): a fresh form.
            form = ApiTokenForm()
    now = timezone.now()
    tokens = [(token, token.state(now)) for token in selectors.api_token_list(user=request.user)]
    return render(request, "accounts/token_list.html",
                  {"form": form, "tokens": tokens, "new_key": new_key, "new_token": new_token})


@login_required
@require_POST
def token_revoke(request, token_id: int):
    token = services.api_token_revoke(token=selectors.api_token_get(user=request.user, token_id=token_id))
    messages.success(request, f"API token \u201c{token.name}\u201d ({token.prefix}\u2026) revoked: "
                              "requests with it are refused from now on.")
    return redirect("accounts:token-list")
