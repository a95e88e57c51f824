"""The private services of bench/fault_recovery.py: a Redis without persistence, a database of its own,
Celery workers that can be killed whole. Each is started and removed by the benchmark alone, so a run
never touches the machine's shared Redis, database or workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """``redis-server`` on ``port`` with no persistence: a restart loses every queued message.

        >>> redis = RedisServer(free_port(), Path("/tmp/x")).start()
        >>> redis.restart(down_s=2)
    """

    def __init__(self, port: int, folder: Path, binary: str = "/usr/bin/redis-server"):
        self.port, self.folder, self.binary = port, folder, binary
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self, timeout: float = 20) -> "RedisServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the server writes to it until it stops
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}: see {self.folder / 'redis.log'}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, down_s: float) -> None:
        """SIGKILL the server, leave the port closed ``down_s`` seconds, start it again (empty)."""
        self.kill()
        time.sleep(down_s)
        self.start()


class PrivateDatabase:
    """A database of the benchmark's own: ``condense_faultbench_<pid>`` created on the PostgreSQL server
    of ``server_url`` (dropped by ``drop()``), or a SQLite file in ``folder`` when ``server_url`` is empty.

        >>> database = PrivateDatabase("postgres://postgres@127.0.0.1:5432/", Path("/tmp/x")).create()
        >>> database.url
        'postgres://postgres@127.0.0.1:5432/condense_faultbench_4242'
    """

    def __init__(self, server_url: str, folder: Path):
        self.server_url, self.folder = server_url, folder
        self.name = f"condense_faultbench_{os.getpid()}"
        self.created = False
        if server_url:
            parts = urlsplit(server_url)
            self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", "", ""))
            self._admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
            self.kind = f"PostgreSQL, private database {self.name} on {parts.hostname}:{parts.port or 5432}"
        else:
            self.url = f"sqlite:///{folder / 'faultbench.sqlite3'}"
            self.kind = f"SQLite, {folder / 'faultbench.sqlite3'}"

    def _admin(self, statement: str) -> None:
        import psycopg  # only the PostgreSQL case needs the driver

        with psycopg.connect(self._admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def create(self) -> "PrivateDatabase":
        if self.server_url:
            self._admin(f'CREATE DATABASE "{self.name}"')
        self.created = True
        return self

    def drop(self) -> None:
        if self.server_url and self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False


class Worker:
    """A prefork ``celery worker`` (one pool child) in a process group of its own, so ``kill()`` takes the
    main process and its pool child at once, as a re-created container or a host's OOM reaper would."""

    def __init__(self, name: str, env: dict, log_path: Path, queue: str = "cpu"):
        self.name, self.env, self.log_path, self.queue = name, env, log_path, queue
        self.process: subprocess.Popen | None = None
        self._offset = 0

    def launch(self) -> "Worker":
        """Start the process; :meth:`wait_ready` waits for Celery's ``ready.``."""
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool=prefork", "--concurrency=1",
                   "-Q", self.queue, "--loglevel=INFO", "-n", self.name, "--without-gossip", "--without-mingle"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 180) -> float:
        """Block until the worker says ``ready.``; returns when (``time.time()``)."""
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log_path.read_bytes()[self._offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"worker {self.name} did not start; its log: {self.log_path}")
            time.sleep(0.1)
        return time.time()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool child)."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for whatever is left of the group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
