from django.db import models


class Worker(models.Model):
    """One Celery worker node as it last reported itself. Written only through fleet.services."""

    name = models.CharField(max_length=200, unique=True, help_text="Celery node name, e.g. cpu1@host")
    queues = models.JSONField(default=list, help_text="queues the worker consumes, e.g. ['gpu', 'cpu']")
    info = models.JSONField(default=dict, help_text="its machine: compression_core.analysis.worker_report()")
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True, help_text="set on a clean shutdown")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
