"""The Celery app. Workers listen on ``cpu`` and/or ``gpu`` queues for jobs, and on ``inspect`` for uploads:

    celery -A workers worker -Q gpu --concurrency 1    # one per GPU
    celery -A workers worker -Q cpu
    celery -A workers worker -Q inspect                # answers uploads in seconds, whatever jobs run

Tasks live with their domain (``webapp/{jobs,modelhub,datahub}/tasks.py``), found by autodiscovery.
"""

import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_init
from django.conf import settings
from kombu.exceptions import ChannelError, OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("condense")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["webapp.jobs", "webapp.modelhub", "webapp.datahub"])


def ensure_broker_folders(conf=None) -> None:
    """The filesystem broker (the default, serverless) needs its folders to exist."""
    conf = conf or app.conf
    if str(conf.broker_url).startswith("filesystem://"):
        options = conf.broker_transport_options or {}
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)


def publish_task(name: str, args: list, *, queue: str, time_limit: int) -> None:
    """Send task ``name`` to ``queue``, waiting for the broker at most ``CONDENSE_PUBLISH_TIMEOUT_S`` per try
    and retrying ``CONDENSE_PUBLISH_RETRIES`` times; raises when the broker does not take it. Callers keep
    the database as the truth and let the sweep send again what could not be sent."""
    ensure_broker_folders()
    app.send_task(name, args=args, queue=queue, time_limit=time_limit, retry=True,
                  retry_policy={"max_retries": settings.CONDENSE_PUBLISH_RETRIES, "interval_start": 0,
                                "interval_step": 0.5, "interval_max": 1})


#: Seconds a queue-length query waits for the broker before it reports the length as unknown.
QUEUE_LENGTH_TIMEOUT_S = 2.0


def queue_length(queue: str) -> int | None:
    """Messages waiting in ``queue`` on the broker (not those a worker has taken), None when the broker cannot be
    reached within a couple of seconds. Redis: the length of the queue's lists; filesystem broker: its message
    files in ``data_folder_in``.

    Example::

        >>> queue_length("cpu")
        0
    """
    quick = {"max_retries": 0, "socket_connect_timeout": QUEUE_LENGTH_TIMEOUT_S,
             "socket_timeout": QUEUE_LENGTH_TIMEOUT_S}
    try:
        with app.connection_for_read(connect_timeout=QUEUE_LENGTH_TIMEOUT_S, transport_options=quick) as connection:
            try:
                return connection.default_channel.queue_declare(queue, passive=True).message_count
            except ChannelError:  # Redis holds no key for a queue that has never had a message or was emptied
                return 0
    except (OSError, OperationalError):
        return None


@worker_init.connect
def _prepare_worker(**_kwargs):
    ensure_broker_folders()

