from django.conf import settings
from django.db import models


class Job(models.Model):
    """One compression run. Status changes only through jobs.services."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Device(models.TextChoices):
        AUTO = "auto"  # a GPU worker when one is alive, otherwise a CPU worker
        CPU = "cpu"
        GPU = "gpu"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    model = models.ForeignKey("modelhub.ModelArtifact", on_delete=models.PROTECT, related_name="jobs")
    name = models.CharField(max_length=200, blank=True)
    # Free labels the owner filters and compares runs by (e.g. "baseline", "sweep-3").
    tags = models.JSONField(default=list, blank=True)
    algorithm = models.CharField(max_length=64)
    params = models.JSONField(default=dict)
    speedup = models.BooleanField(default=True)
    dataset = models.CharField(max_length=64, blank=True)  # a built-in dataset's name
    # An uploaded dataset instead of a built-in one. Deleting it is refused while
    # the job is queued or running; a finished job keeps its results without it.
    dataset_upload = models.ForeignKey(
        "datahub.Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.AUTO)
    # The broker queue the job was routed to at submission ("cpu" or "gpu"); re-publishing uses it.
    queue = models.CharField(max_length=64, default="cpu")
    # Seconds the job may run before it is stopped (None: settings.CONDENSE_JOB_TIME_LIMIT_S).
    time_limit_s = models.PositiveIntegerField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    # Where the run is within its current stage (its name, done of total, seconds so far), from the
    # worker's progress reports; the page derives elapsed time and the estimate from it.
    progress_detail = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="Celery node that runs or ran the job")
    attempts = models.PositiveIntegerField(default=0)
    # The lease: who runs the job now and until when, renewed by that process's heartbeat. The
    # database, not the broker, decides who runs a job (webapp/jobs/leases.py).
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # One entry per run that ended without finishing: worker, started, last seen, why it ended.
    attempt_history = models.JSONField(default=list)
    published_at = models.DateTimeField(null=True, blank=True, help_text="last time its message was sent")

    metrics = models.JSONField(default=dict)
    layers = models.JSONField(default=list)
    warnings = models.JSONField(default=list)
    artifacts = models.JSONField(default=list)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.algorithm}, {self.status})"


class JobLog(models.Model):
    """Append-only log lines, so concurrent writers never overwrite each other."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="logs")
    created_at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=10, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["id"]
