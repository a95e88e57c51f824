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


def queue_length(queue: str, conf=None) -> int | None:
    """Messages waiting on ``queue`` (not those a worker has taken), or None when the broker cannot say.

    Redis keeps a queue as a list named after it; the filesystem broker keeps one file per message
    (``<timestamp>_<id>.<queue>.msg``) in its folder.
    """
    conf = conf or app.conf
    try:
        if str(conf.broker_url).startswith("filesystem://"):
            folder = Path((conf.broker_transport_options or {}).get("data_folder_in", ""))
            return sum(1 for _ in folder.glob(f"*.{queue}.msg")) if folder.is_dir() else 0
        with app.connection_for_read() as connection:
            return connection.default_channel.client.llen(queue)
    except Exception:  # noqa: BLE001 - any broker failure means "unknown", which callers treat as busy
        return None
