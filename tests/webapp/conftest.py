import io

import pytest
import torch


def _onnx_bytes(architecture: str) -> bytes:
    from compression_core.architectures import ARCHITECTURES, build_architecture

    torch.manual_seed(0)
    model = build_architecture(architecture).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        model, torch.randn(1, *ARCHITECTURES[architecture].input_shape), buffer, dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return buffer.getvalue()


@pytest.fixture(scope="session")
def digits_onnx() -> bytes:
    return _onnx_bytes("digits_cnn")


@pytest.fixture
def upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    def make(name: str, content: bytes):
        return SimpleUploadedFile(name, content, content_type="application/octet-stream")

    return make


@pytest.fixture
def digits_model(user):
    from webapp.modelhub.services import model_create

    return model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")


@pytest.fixture
def no_enqueue(monkeypatch):
    """Jobs stay queued: these tests drive the service directly, without a broker."""
    calls = []
    monkeypatch.setattr("webapp.jobs.services.job_enqueue", lambda job_id, device: calls.append((job_id, device)))
    return calls
