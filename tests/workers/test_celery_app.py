"""queue_length: messages waiting on the broker, with the filesystem broker (default) and Redis (CI)."""

import uuid

import pytest
from django.conf import settings

from workers.celery_app import app, queue_length


@pytest.fixture
def unused_queue(celery_broker):
    """A queue no test worker consumes, emptied afterwards."""
    name = f"fleet-test-{uuid.uuid4().hex[:8]}"
    yield name
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(name)


def _publish(queue: str, count: int) -> None:
    for _ in range(count):
        app.send_task("condense.never_run", queue=queue)


@pytest.mark.skipif(bool(settings.REDIS_URL), reason="REDIS_URL is set: the broker is Redis")
def test_the_filesystem_broker_counts_the_queue_s_message_files(unused_queue):
    assert queue_length(unused_queue) == 0
    _publish(unused_queue, 3)
    _publish("fleet-test-elsewhere", 1)
    assert queue_length(unused_queue) == 3
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("fleet-test-elsewhere")


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs a Redis server: set REDIS_URL=redis://127.0.0.1:6379/0")
def test_redis_reports_the_queue_s_list_length(unused_queue):
    assert queue_length(unused_queue) == 0  # no key yet
    _publish(unused_queue, 3)
    assert queue_length(unused_queue) == 3


def test_an_unreachable_broker_gives_none(monkeypatch, tmp_path):
    if settings.REDIS_URL:
        monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # port 1: nothing listens
    else:
        monkeypatch.setitem(app.conf, "broker_transport_options", {"data_folder_in": str(tmp_path / "missing")})
    assert queue_length("cpu") is None
