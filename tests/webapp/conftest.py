import io

import pytest
import torch


def _onnx_bytes(architecture: str) -> bytes:
    from compression_core.models import ARCHITECTURES, build_architecture

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
    from webapp.jobs.models import Job

    calls = []
    monkeypatch.setattr("webapp.jobs.services.job_publish",
                        lambda job_id: calls.append((job_id, Job.objects.get(pk=job_id).queue)))
    return calls


@pytest.fixture(autouse=True)
def _lease_renewed_by_progress_reports(settings):
    # These tests run jobs in the test's own transaction, which a heartbeat thread's connection
    # cannot see: the progress reports renew the lease instead (tests/workers use the thread).
    settings.CONDENSE_HEARTBEAT_S = 0


def _npz_bytes(**arrays) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _png_bytes(value: int, size=(12, 10)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def make_npz():
    """``make_npz(x=..., y=...)`` -> the bytes of an .npz file."""
    return _npz_bytes


@pytest.fixture
def make_zip():
    """``make_zip({"cat/1.png": b"..."})`` -> the bytes of a zip file."""
    return _zip_bytes


@pytest.fixture
def make_png():
    """``make_png(grey_value, size=(w, h))`` -> the bytes of a grey PNG."""
    return _png_bytes


@pytest.fixture(scope="session")
def digits_npz() -> bytes:
    """120 digits as N x 8 x 8 uint8 with labels: fits the digits_cnn model."""
    from compression_core.data import load_builtin_dataset

    x, y = load_builtin_dataset("digits", "test")
    return _npz_bytes(x=(x[:120, 0].numpy() * 255).astype("uint8"), y=y[:120].numpy())


@pytest.fixture
def digits_dataset(user, upload, digits_npz):
    from webapp.datahub.services import dataset_create

    return dataset_create(owner=user, name="my digits", upload=upload("digits.npz", digits_npz))


@pytest.fixture
def client_in(client, user):
    """A browser session signed in as ``user``."""
    client.force_login(user)
    return client


def _external_data_export(dynamic: bool) -> dict[str, bytes]:
    """``torch.onnx.export(model, x, "m.onnx")`` with today's defaults (dynamo): m.onnx plus m.onnx.data.

    The classifier flattens with ``flatten(1)``; exported at a static batch 1
    that becomes a literal Reshape [1, 256], so only the ``dynamic=True`` file runs
    at batch 2 in onnxruntime (the importer frees the literal: both imports do).
    """
    import tempfile
    import warnings
    from pathlib import Path

    pytest.importorskip("onnxscript")

    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    torch.manual_seed(0)
    options = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Small().eval(), (torch.randn(1, 1, 8, 8),), str(Path(tmp) / "m.onnx"), **options)
        files = {path.name: path.read_bytes() for path in Path(tmp).iterdir()}
    assert sorted(files) == ["m.onnx", "m.onnx.data"]
    return files


@pytest.fixture(scope="session")
def pinned_external_onnx() -> dict[str, bytes]:
    """m.onnx + m.onnx.data, exported at batch 1 with a literal Reshape [1, 256] (which the importer frees)."""
    return _external_data_export(dynamic=False)


@pytest.fixture(scope="session")
def dynamic_external_onnx() -> dict[str, bytes]:
    """m.onnx + m.onnx.data, exported with a dynamic batch."""
    return _external_data_export(dynamic=True)


# -- the worker pool ---------------------------------------------------------------


@pytest.fixture
def gpu_worker_info():
    """A worker report (``compression_core.analysis.worker_report``) from a machine with one H100."""
    from compression_core.analysis import worker_report

    report = worker_report()
    report["gpus"] = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_024_112_640,
                       "capability": "9.0"}]
    return report


@pytest.fixture
def running_job(no_enqueue):
    """``running_job(owner, worker_name, name=...)``: a job of ``owner``, running on that worker node."""
    from webapp.jobs.services import job_create, job_transition
    from webapp.modelhub.services import model_create

    def make(owner, worker: str, name: str = "", stage: str = "pruning"):
        model = model_create(owner=owner, name="digits", source="builtin", architecture="digits_cnn")
        job = job_create(owner=owner, model=model, algorithm="L1NormPruner", name=name, dataset="digits",
                         params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]})
        return job_transition(job.pk, to="running", worker=worker, stage=stage, progress=0.25)

    return make
