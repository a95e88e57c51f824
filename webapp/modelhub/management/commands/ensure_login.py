"""Make sure a login exists and say how to use it (used by ``./condense serve``)."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin login if no user exists; print how to sign in."

    def handle(self, *args, **options):
        users = get_user_model()
        username = os.environ.get("CONDENSE_ADMIN_USER", "admin")
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        if users.objects.filter(username=username).exists():
            where = f" (password in {password_file})" if password_file.exists() else ""
            self.stdout.write(f"Sign in as '{username}'{where}.")
            return
        password = os.environ.get("CONDENSE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username, email="", password=password)
        if "CONDENSE_ADMIN_PASSWORD" not in os.environ:
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        self.stdout.write(f"Created login '{username}' with password '{password}' (also in {password_file}).")
