"""Sign-in failures (counted in the database, so every web process sees the same lock) and API tokens."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class SignInFailureCount(models.Model):
    """Failed sign-ins for one username or one client address within a window that starts at the first
    failure; once ``failures`` reaches the cap, sign-ins for that key are refused until ``locked_until``."""

    class Scope(models.TextChoices):
        USERNAME = "username", "Username"
        ADDRESS = "address", "Client address"

    scope = models.CharField(max_length=16, choices=Scope.choices)
    key = models.CharField(max_length=150)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="sign_in_failure_count_unique_key")]
        indexes = [models.Index(fields=["window_started_at"], name="sign_in_failure_window_idx")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}: {self.failures}"


class ApiToken(models.Model):
    """A key for ``Authorization: Token <key>``. Only its SHA-256 digest is stored: the key is shown once."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def state(self, now=None) -> str:
        """``"revoked"``, ``"expired"`` or ``"active"``."""
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"
