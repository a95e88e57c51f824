import json
import onnxruntime as ort
import numpy as np
import pytest

from webapp.jobs.models import Job
from webapp.jobs.services import InvalidTransition, job_execute, job_transition

pytestmark = pytest.mark.django_db

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}


def _create(api, model, **overrides):
    data = {"model": model.pk, "algorithm": "L1NormPruner", "params": L1_HALF, "speedup": True, "dataset": "digits"}
    data.update(overrides)
    return api.post("/api/v1/jobs/", data, format="json")


def test_create_job_queues_it_and_enqueues_on_commit(api, digits_model, no_enqueue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _create(api, digits_model)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == 0
    assert body["params"]["config_list"] == [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    assert no_enqueue == [(body["id"], "cpu")]
    assert api.get(f"/api/v1/jobs/{body['id']}/").json()["status"] == "queued"
    assert [j["id"] for j in api.get("/api/v1/jobs/").json()["results"]] == [body["id"]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"params": {"config_list": [{"op_types": ["Conv2d"], "sparsty": 0.5}]}}, "unknown key 'sparsty'"),
        ({"params": {"config_list": [{"op_types": ["Conv2d"], "sparsity": 1.0}]}}, "must be < 1"),
        ({"params": {"config_list": [{"op_types": ["Conv2d"], "sparsity": -0.5}]}}, "must be >= 0"),
        ({"params": {"config_list": [{"op_names": ["layer9"], "sparsity": 0.5}]}}, "'layer9' matches no layer"),
        ({"params": {"config_list": [{"op_types": ["LSTM"], "sparsity": 0.5}]}}, "selects no layer L1NormPruner can prune"),
        ({"algorithm": "MagicPruner"}, "unknown algorithm 'MagicPruner'"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"device": "tpu"}, "not a valid choice"),
    ],
)
def test_bad_job_requests_get_400_and_create_nothing(api, digits_model, no_enqueue, overrides, message):
    response = _create(api, digits_model, **overrides)
    assert response.status_code == 400
    assert message in str(response.json())
    assert Job.objects.count() == 0 and no_enqueue == []


def test_dataset_must_fit_the_model(api, user, no_enqueue):
    from webapp.modelhub.services import model_create

    resnet = model_create(owner=user, name="r18", source="builtin", architecture="resnet18")
    response = _create(api, resnet)
    assert response.status_code == 400
    assert "dataset 'digits' gives inputs of shape [1, 8, 8]" in response.json()["detail"]


def test_job_runs_through_the_service_and_artifacts_download(api, digits_model, no_enqueue, tmp_path):
    job_id = _create(api, digits_model).json()["id"]
    job_execute(job_id, task_id="task-1")
    body = api.get(f"/api/v1/jobs/{job_id}/").json()
    assert body["status"] == "succeeded", body["error"]
    assert body["progress"] == 1.0
    before, after = body["metrics"]["before"], body["metrics"]["after"]
    assert after["params"] < before["params"]
    assert after["flops"] < before["flops"]
    assert 0.0 <= after["accuracy"] <= 1.0 and "latency_cpu_b1_ms" in after
    assert -1.0 <= body["metrics"]["fidelity"]["cosine_similarity"] <= 1.0
    latency = body["metrics"]["latency"]  # the paired timings, with their machine
    assert {row["runtime"] for row in latency["rows"]} >= {"pytorch-cpu", "onnxruntime-cpu"}
    assert latency["machine"]["threads"] >= 1 and all("low" in row["ratio"] for row in latency["rows"])
    conv = next(layer for layer in body["layers"] if layer["name"].endswith("0") or layer["type"] == "Conv2d")
    assert conv["weight_shape_after"][0] == conv["weight_shape_before"][0] // 2

    names = {a["name"] for a in api.get(f"/api/v1/jobs/{job_id}/artifacts/").json()}
    assert {"model.onnx", "model.safetensors", "model.plan.json"} <= names
    response = api.get(f"/api/v1/jobs/{job_id}/artifacts/model.onnx")
    assert response.status_code == 200
    path = tmp_path / "m.onnx"
    path.write_bytes(b"".join(response.streaming_content))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 1, 8, 8), np.float32)})
    assert out.shape == (2, 10)
    assert api.get(f"/api/v1/jobs/{job_id}/artifacts/..%2Fsecret").status_code in (400, 404)

    from django.core.files.storage import default_storage

    default_storage.delete(f"jobs/{job_id}/model.plan.json")
    response = api.get(f"/api/v1/jobs/{job_id}/artifacts/model.plan.json")
    assert response.status_code == 400 and "missing" in response.json()["detail"]

    # A second delivery of the same task finds a finished job and does nothing.
    job_execute(job_id, task_id="task-1")
    assert Job.objects.get(pk=job_id).attempts == 1


def test_a_job_that_throws_ends_failed_with_the_error(api, digits_model, no_enqueue):
    job_id = _create(api, digits_model).json()["id"]
    Job.objects.filter(pk=job_id).update(params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 2}]})
    job_execute(job_id, task_id="task-2")
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed"
    assert "sparse_ratio" in job.error
    assert job.finished_at is not None
    assert job.logs.filter(level="error").exists()


def test_a_job_that_fails_inside_the_model_stores_one_sentence_and_logs_the_traceback(api, user, upload, no_enqueue):
    from webapp.modelhub.models import ModelArtifact
    from webapp.modelhub.services import model_create
    from tests.compression_core.failing_models import reshape_onnx

    # Its Reshape has batch 1 written into it and its input dims are all symbolic, so the importer cannot free
    # that literal (and the upload needs the input shape): the first batch of digits fails.
    model = model_create(owner=user, name="batch-1 export", source="onnx", input_shape=[1, 8, 8],
                         upload=upload("fixed.onnx", reshape_onnx([1, 144]).SerializeToString()))
    # As a model stored before uploads checked the batch: today job_create refuses it, the worker must
    # still fail it with one sentence.
    ModelArtifact.objects.filter(pk=model.pk).update(summary={k: v for k, v in model.summary.items() if k != "batch"})
    model.refresh_from_db()
    job_id = _create(api, model).json()["id"]
    job_execute(job_id, task_id="task-fixed-batch")
    body = api.get(f"/api/v1/jobs/{job_id}/").json()
    assert body["status"] == "failed" and body["stage"] == "failed"
    error = body["error"]
    assert error.startswith("the model has a fixed batch size of 1 in layer `Reshape`")
    assert "dynamic_axes" in error
    assert "\n" not in error and "Traceback" not in error and "RuntimeError" not in error
    logs = api.get(f"/api/v1/jobs/{job_id}/logs/").json()
    tracebacks = [e["message"] for e in logs if "Traceback (most recent call last)" in e["message"]]
    assert len(tracebacks) == 1 and [e["level"] for e in logs if e["message"] == tracebacks[0]] == ["error"]
    assert "RuntimeError: shape '[1, 144]' is invalid for input of size" in tracebacks[0]
    assert tracebacks[0].rstrip().endswith(error)  # the log ends with the sentence the user read


@pytest.fixture
def broker_at():
    """Point this process's Celery app at a Redis URL (as settings would with REDIS_URL), then back."""
    from django.conf import settings

    from webapp.settings import redis_broker_options
    from workers.celery_app import app

    saved = app.conf.broker_url, app.conf.broker_transport_options

    def use(url):
        app.conf.broker_url, app.conf.broker_transport_options = url, redis_broker_options()
        app._pool, app.amqp._producer_pool = None, None  # the connection pools hold the old URL
        return settings.CONDENSE_PUBLISH_TIMEOUT_S

    yield use
    app.conf.broker_url, app.conf.broker_transport_options = saved
    app._pool, app.amqp._producer_pool = None, None


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung broker)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in accepted:
        connection.close()


@pytest.mark.parametrize("broker", ["hung", "refused"])
def test_a_broker_that_fails_keeps_the_job_queued_and_says_so(api, digits_model, broker, broker_at, silent_server,
                                                              django_capture_on_commit_callbacks):
    import time

    port = silent_server if broker == "hung" else 1  # nothing listens on port 1
    timeout = broker_at(f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        job_id = _create(api, digits_model).json()["id"]
    assert time.monotonic() - started < 4 * timeout + 5
    body = api.get(f"/api/v1/jobs/{job_id}/").json()
    assert body["status"] == "queued"
    assert body["stage"].startswith("waiting for the task queue, which could not be reached; retried automatically")
    job = Job.objects.get(pk=job_id)
    assert job.published_at is None
    assert job.logs.filter(level="error", message__startswith="could not publish the job on the task queue").exists()


def test_the_api_answers_with_the_status_the_publish_left(api, digits_model, broker_at, monkeypatch):
    # Outside a test transaction the message goes out before the answer: the answer shows its effect.
    monkeypatch.setattr("webapp.jobs.services.transaction.on_commit", lambda callback: callback())
    broker_at("redis://127.0.0.1:1/0")
    body = _create(api, digits_model).json()
    assert body["status"] == "queued" and body["stage"].startswith("waiting for the task queue")


def test_a_job_that_cannot_be_published_for_long_fails_with_a_sentence(api, digits_model, broker_at, settings,
                                                                       django_capture_on_commit_callbacks):
    from datetime import timedelta

    from webapp.jobs.publishing import job_publish

    broker_at("redis://127.0.0.1:1/0")
    with django_capture_on_commit_callbacks(execute=True):
        job_id = _create(api, digits_model).json()["id"]
    Job.objects.filter(pk=job_id).update(created_at=Job.objects.get(pk=job_id).created_at
                                         - timedelta(seconds=settings.CONDENSE_PUBLISH_GIVE_UP_S + 1))
    assert job_publish(job_id) is False
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed"
    assert job.error.startswith("the task queue could not be reached for 15 minutes, so no worker received this job")


def test_cancel_queued_job_and_transition_rules(api, digits_model, no_enqueue):
    job_id = _create(api, digits_model).json()["id"]
    response = api.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 409
    job_execute(job_id, task_id="late-task")  # the queued message arrives after cancel
    assert Job.objects.get(pk=job_id).status == "cancelled"
    with pytest.raises(InvalidTransition):
        job_transition(job_id, to=Job.Status.RUNNING)


def test_users_see_only_their_own_jobs(api, other_api, digits_model, no_enqueue):
    job_id = _create(api, digits_model).json()["id"]
    assert other_api.get(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert other_api.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 404
    assert other_api.get("/api/v1/jobs/").json()["results"] == []
    assert api.get(f"/api/v1/jobs/{job_id}/logs/?after=abc").status_code == 400
    assert api.get(f"/api/v1/jobs/{job_id}/logs/").json()[0]["message"] == "status: queued"
    response = other_api.post("/api/v1/jobs/", {"model": digits_model.pk, "algorithm": "L1NormPruner",
                                                "params": L1_HALF}, format="json")
    assert response.status_code == 404


def test_quantization_job_runs_and_its_int8_files_download(api, digits_model, no_enqueue, tmp_path):
    response = _create(api, digits_model, algorithm="PostTrainingQuantizer", params={})
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]
    job_execute(job_id, task_id="task-q")
    body = api.get(f"/api/v1/jobs/{job_id}/").json()
    assert body["status"] == "succeeded", body["error"]
    forms = body["metrics"]["quantization"]["forms"]
    assert {"float", "simulated", "int8_pytorch", "int8_onnx"} <= set(forms)
    assert forms["int8_pytorch"]["bytes"] < forms["float"]["bytes"]
    assert body["metrics"]["after"]["weights_bytes"] == forms["int8_pytorch"]["bytes"]

    names = {a["name"] for a in api.get(f"/api/v1/jobs/{job_id}/artifacts/").json()}
    assert names == {"model.int8.pt", "model.int8.onnx", "calibration.json"}
    path = tmp_path / "m.int8.onnx"
    path.write_bytes(b"".join(api.get(f"/api/v1/jobs/{job_id}/artifacts/model.int8.onnx").streaming_content))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 1, 8, 8), np.float32)})
    assert out.shape == (2, 10)
    calibration = b"".join(api.get(f"/api/v1/jobs/{job_id}/artifacts/calibration.json").streaming_content)
    assert set(json.loads(calibration)) == {"conv1", "conv2", "fc1", "fc2"}


@pytest.mark.parametrize("overrides, message", [
    ({"algorithm": "PostTrainingQuantizer", "params": {"config_list": [{"quant_bits": 4}]}}, "quant_bits"),
    ({"algorithm": "QATQuantizer", "params": {}, "dataset": ""}, "QATQuantizer needs data"),
    ({"params": {**L1_HALF, "quantization": {"algorithm": "L2NormPruner"}}}, "choose a quantizer"),
    ({"params": {**L1_HALF, "quantization": {"algorithm": "PostTrainingQuantizer", "params": {"backend": "arm"}}}},
     "params.backend must be one of"),
])
def test_bad_quantization_requests_get_400(api, digits_model, no_enqueue, overrides, message):
    response = _create(api, digits_model, **overrides)
    assert response.status_code == 400
    assert message in str(response.json())
    assert Job.objects.count() == 0 and no_enqueue == []


def test_device_auto_goes_to_a_live_gpu_worker_and_gpu_is_refused_without_one(api, digits_model, no_enqueue,
                                                                              gpu_worker_info,
                                                                              django_capture_on_commit_callbacks):
    from webapp.fleet.services import worker_heartbeat

    refused = _create(api, digits_model, device="gpu")
    assert refused.status_code == 400 and "No GPU worker is running" in json.dumps(refused.json())
    with django_capture_on_commit_callbacks(execute=True):
        on_cpu = _create(api, digits_model).json()
    assert on_cpu["device"] == "auto" and on_cpu["queue"] == "cpu"
    worker_heartbeat(name="gpu1@host", queues=["gpu", "cpu"], info=gpu_worker_info)
    with django_capture_on_commit_callbacks(execute=True):
        on_gpu = _create(api, digits_model).json()
        asked = _create(api, digits_model, device="gpu").json()
    assert on_gpu["queue"] == "gpu" and asked["queue"] == "gpu"
    assert no_enqueue == [(on_cpu["id"], "cpu"), (on_gpu["id"], "gpu"), (asked["id"], "gpu")]
