"""Uploads through the real stack: gunicorn answers at once, a Celery worker on the ``inspect`` queue inspects in a
budgeted child process, and the API stays responsive while a hostile upload is inspected."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.child_process import die_with_parent
from tests.conftest import ROOT

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web_server(worker_env, tmp_path):
    """gunicorn as ``./condense serve`` runs it (two sync workers) on the test database; its base URL."""
    port = _free_port()
    env = {**worker_env, "CONDENSE_MAX_UPLOAD_BYTES": str(20 * 1024 * 1024)}
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}",
                               "--workers", "2", "--timeout", "120"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/accounts/login/", timeout=2)
            break
        except OSError:  # not listening yet (URLError, ConnectionError and timeouts are OSErrors)
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "gunicorn.log").read_text()[-3000:]) from None
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(timeout=20)
    log.close()


class Client:
    def __init__(self, url: str, key: str):
        self.url, self.key = url, key

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, dict]:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method,
                                         headers={"Authorization": f"Token {self.key}",
                                                  **({"Content-Type": content_type} if content_type else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def upload(self, path: str, fields: dict[str, str], filename: str, content: bytes) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, f"multipart/form-data; boundary={boundary}")


@pytest.fixture
def client(web_server, user):
    from webapp.accounts.services import api_token_create

    return Client(web_server, api_token_create(owner=user, name="intake", expires_in_days=1)[1])


def _constant_of_shape_bomb() -> bytes:
    """195 bytes of ONNX whose ConstantOfShape builds a 20000 x 20000 float tensor (1.6 GB) when run."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [20000, 20000])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])],
        "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [20000, 20000])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _digits_onnx() -> bytes:
    import torch

    from compression_core.models import build_architecture

    buffer = io.BytesIO()
    torch.onnx.export(build_architecture("digits_cnn").eval(), torch.randn(1, 1, 8, 8), buffer, dynamo=False,
                      opset_version=17, input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return buffer.getvalue()


def _wait_inspected(client: Client, path: str, timeout: float = 90) -> tuple[dict, list[float]]:
    """Poll ``path`` until it is no longer inspecting; also time a list request each round (the API must
    answer while the inspection runs)."""
    latencies, deadline = [], time.monotonic() + timeout
    while True:
        started = time.monotonic()
        status, _ = client.request("GET", "/api/v1/models/")
        latencies.append(time.monotonic() - started)
        assert status == 200
        status, body = client.request("GET", path)
        if body.get("status") != "inspecting":
            return body, latencies
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_an_upload_is_answered_at_once_and_inspected_by_the_inspect_worker(client, inspect_in_worker, media_root):
    started = time.monotonic()
    status, body = client.upload("/api/v1/models/", {"source": "onnx", "name": "digits"}, "digits.onnx",
                                 _digits_onnx())
    assert status == 201, body
    assert body["status"] == "inspecting" and body["summary"] == {} and time.monotonic() - started < 5
    ready, _ = _wait_inspected(client, f"/api/v1/models/{body['id']}/")
    assert ready["status"] == "ready", ready
    assert ready["input_shape"] == [1, 8, 8] and ready["summary"]["params"] > 0
    assert "inspect_model" in inspect_in_worker.log_tail(20000)


def test_an_upload_over_the_memory_budget_is_stopped_while_the_api_answers(client, make_worker, media_root):
    # A built-in ResNet-50 at the largest input allowed: a legal upload whose inspection needs hundreds of MB
    # (accepted under the default budget); this worker allows 150 MB.
    make_worker("inspect", f"inspect-small-{uuid.uuid4().hex[:6]}@localhost",
                env={"CONDENSE_INSPECT_MEMORY_MB": "150", "CONDENSE_INSPECT_CPU_S": "60"})
    status, body = client.upload("/api/v1/models/", {"source": "builtin", "architecture": "resnet50",
                                                     "input_shape": "[3, 1024, 1024]"}, "", b"")
    assert status == 201 and body["status"] == "inspecting", body
    rejected, latencies = _wait_inspected(client, f"/api/v1/models/{body['id']}/")
    assert rejected["status"] == "rejected", rejected
    assert rejected["status_reason"] == ("the inspection needed more than its 150 MB of memory and was stopped "
                                         "(CONDENSE_INSPECT_MEMORY_MB)")
    # The web workers only stored the request: every request during the inspection was answered within a second.
    assert len(latencies) >= 2 and max(latencies) < 1.0, latencies


def test_a_hostile_onnx_is_refused_from_its_structure(client, inspect_in_worker, media_root):
    status, body = client.upload("/api/v1/models/", {"source": "onnx", "name": "bomb", "input_shape": "[20000]"},
                                 "bomb.onnx", _constant_of_shape_bomb())
    assert status == 201 and body["status"] == "inspecting", body
    rejected, _ = _wait_inspected(client, f"/api/v1/models/{body['id']}/")
    assert rejected["status"] == "rejected" and "CONDENSE_MAX_TENSOR_ELEMENTS" in rejected["status_reason"]
    from webapp.modelhub.models import ModelArtifact

    model = ModelArtifact.objects.get(pk=body["id"])
    assert not model.file and not list((Path(media_root) / "models" / str(model.owner_id) / str(model.uid)).glob("*"))


def _large_png_zip(count: int = 12, side: int = 3000) -> bytes:
    """A dataset zip of large, nearly blank PNGs: small to send, seconds and gigabytes to decode."""
    import zipfile

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (side, side), (120, 60, 200)).save(image, "PNG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for index in range(count):
            bundle.writestr(f"class{index % 2}/{index}.png", image.getvalue())
    return archive.getvalue()


def test_a_zip_of_large_images_is_inspected_off_the_web_tier(client, inspect_in_worker):
    content = _large_png_zip()
    assert len(content) < 2_000_000
    status, body = client.upload("/api/v1/datasets/", {"name": "pngs"}, "pngs.zip", content)
    assert status == 201 and body["status"] == "inspecting", body
    deadline, latencies = time.monotonic() + 120, []
    while True:
        started = time.monotonic()
        listed, rows = client.request("GET", "/api/v1/datasets/")
        latencies.append(time.monotonic() - started)
        row = next(item for item in rows if item["id"] == body["id"])
        if row["status"] != "inspecting":
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    assert listed == 200 and max(latencies) < 1.0, latencies
    # Accepted with 12 images, or refused by a pixel cap: either way decided by the worker, with a reason.
    assert row["status"] == "ready" and row["summary"]["samples"] == 12 or row["status_reason"], row


def test_gunicorn_answers_a_3_gb_declaration_at_once(client, web_server):
    from urllib.parse import urlparse

    address = urlparse(web_server)
    started = time.monotonic()
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(
            b"POST /api/v1/models/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: Token " + client.key.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=zz\r\nContent-Length: 3221225472\r\n\r\n"
            + b"--zz\r\n" + bytes(64 * 1024))
        answer = b""
        while chunk := connection.recv(65536):  # gunicorn closes the connection after the refusal
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"CONDENSE_MAX_UPLOAD_BYTES" in answer and time.monotonic() - started < 5
