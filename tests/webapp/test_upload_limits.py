"""The upload size limit holds while the body is read: nothing over it is spooled, stored or inspected."""

import socket
import time
from urllib.parse import urlparse

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.webapp.uploads import stored_files
from webapp.datahub.models import Dataset
from webapp.modelhub.models import ModelArtifact


@pytest.fixture
def small_limit(settings):
    settings.CONDENSE_MAX_UPLOAD_BYTES = 100_000
    return settings.CONDENSE_MAX_UPLOAD_BYTES


def _file(size: int, name: str = "big.onnx") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"\x08\x07" + bytes(size - 2), content_type="application/octet-stream")


@pytest.mark.django_db
def test_a_body_over_the_limit_is_cut_off_at_the_limit(api, small_limit, media_root):
    # Declared length under limit + form allowance: the handler counts the file bytes and stops at the limit.
    before = stored_files(media_root)
    response = api.post("/api/v1/models/", {"source": "onnx", "file": _file(small_limit + 50_000)})
    assert response.status_code == 413
    assert "over the 0.1 MB limit" in response.json()["detail"] and "CONDENSE_MAX_UPLOAD_BYTES" in \
        response.json()["detail"]
    assert ModelArtifact.objects.count() == 0 and stored_files(media_root) == before


@pytest.mark.django_db
def test_files_that_add_up_past_the_limit_are_refused(api, small_limit, media_root):
    parts = {"source": "onnx", "file": _file(60_000, "m.onnx"), "data": [_file(60_000, "m.onnx.data")]}
    response = api.post("/api/v1/models/", parts)
    assert response.status_code == 413 and ModelArtifact.objects.count() == 0


@pytest.mark.django_db
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(api, settings, small_limit):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api.generic("POST", "/api/v1/datasets/", b"x" * 200_000,
                           content_type="multipart/form-data; boundary=zz")
    assert response.status_code == 413
    assert "this request sends 0.2 MB" in response.json()["detail"]
    assert Dataset.objects.count() == 0


@pytest.mark.django_db
def test_the_browser_form_gets_a_page_that_says_so(client, user, small_limit, media_root):
    client.force_login(user)
    before = stored_files(media_root)
    response = client.post("/datasets/", {"name": "big", "file": _file(small_limit + 1, "big.npz")})
    assert response.status_code == 413
    assert "Upload too large" in response.content.decode() and "CONDENSE_MAX_UPLOAD_BYTES" in response.content.decode()
    assert Dataset.objects.count() == 0 and stored_files(media_root) == before


@pytest.mark.django_db(transaction=True)
def test_a_3_gb_declaration_is_answered_without_waiting_for_the_body(live_server, user, settings):
    """A real socket: the server answers 413 after the headers, while the client has sent 64 KB of 3 GB (the
    test server; tests/workers/test_upload_intake.py does it against gunicorn)."""
    from webapp.accounts.services import api_token_create

    settings.CONDENSE_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
    key = api_token_create(owner=user, name="limits", expires_in_days=1)[1]
    address = urlparse(live_server.url)
    started = time.monotonic()
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(
            b"POST /api/v1/models/ HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Token " + key.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: 3221225472\r\n\r\n" + b"--zz\r\n" + bytes(64 * 1024))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                raise AssertionError(answer) from None
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"this request sends 3,072.0 MB" in answer
    assert time.monotonic() - started < 5
    assert ModelArtifact.objects.count() == 0
