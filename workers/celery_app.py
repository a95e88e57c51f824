"""The Celery app. Workers listen on ``cpu`` and/or ``gpu`` queues:

    celery -A workers worker -Q gpu --concurrency 1    # one per GPU
    celery -A workers worker -Q cpu

Tasks live with their domain (``webapp/jobs/tasks.py``), found by autodiscovery.
"""

import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("condense")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["webapp.jobs"])


def ensure_broker_folders(conf=None) -> None:
    """The filesystem broker (the default, serverless) needs its folders to exist."""
    conf = conf or app.conf
    if str(conf.broker_url).startswith("filesystem://"):
        options = conf.broker_transport_options or {}
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)


@worker_init.connect
def _prepare_worker(**_kwargs):
    ensure_broker_folders()
