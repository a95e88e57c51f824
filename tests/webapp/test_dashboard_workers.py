"""The /workers/ page: the pool, its queues, and how to start a worker when none runs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.dashboard.templatetags.condense_format import ago
from webapp.fleet.models import Worker
from webapp.fleet.services import worker_heartbeat

pytestmark = pytest.mark.django_db


def test_a_live_gpu_worker_with_jobs(client_in, user, other_user, gpu_worker_info, running_job, celery_broker):
    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info, started=True)
    mine = running_job(user, "gpu1@host", name="my resnet", stage="fine-tuning")
    running_job(other_user, "gpu1@host", name="bob's secret model")
    html = client_in.get("/workers/").content.decode()
    assert 'data-worker="gpu1@host" data-state="live"' in html
    assert "GPU 0: NVIDIA H100 80GB HBM3, 85 GB, capability 9.0" in html
    assert gpu_worker_info["cpu"]["model"] in html and f"torch {gpu_worker_info['versions']['torch']}" in html
    assert f'href="/jobs/{mine.pk}/"' in html and "my resnet" in html and "fine-tuning" in html
    assert "1 job of other users" in html and "secret" not in html
    assert 'id="worker-start-help"' not in html
    assert 'data-queue="gpu"' in html and 'aria-current="page">Workers</a>' in html


def test_no_worker_tells_the_operator_how_to_start_one(client_in, celery_broker):
    html = client_in.get("/workers/").content.decode()
    assert "No worker has reported yet" in html and 'id="worker-table"' not in html
    assert "celery -A workers worker -Q cpu --concurrency 1 -n cpu1@%h" in html
    assert "-Q gpu,cpu" in html


def test_a_stale_worker_is_marked_and_the_help_shown(client_in, gpu_worker_info, celery_broker):
    worker_heartbeat(name="cpu1@host", queues=["cpu"], info={**gpu_worker_info, "gpus": []}, started=True)
    Worker.objects.update(last_seen_at=timezone.now() - timedelta(minutes=3))
    html = client_in.get("/workers/").content.decode()
    assert 'data-state="stale"' in html and "3 min ago" in html and "no GPU" in html
    assert "No worker is live" in html


def test_every_page_links_to_the_workers(client_in):
    assert 'href="/workers/"' in client_in.get("/").content.decode()


def test_ago_reads_like_a_clock():
    now = timezone.now()
    assert [ago(now - timedelta(seconds=s), now) for s in (12, 75, 7300, 90000, 200000)] == [
        "12 s ago", "1 min ago", "2 h ago", "1 day ago", "2 days ago"]
    assert ago(None) == "\u2014"
