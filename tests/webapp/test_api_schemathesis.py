"""The OpenAPI schema says what the API does: schemathesis sends generated requests, valid and invalid, to
every operation of the live test server and checks each answer against the schema (no 500, every status
code documented, the body as described, invalid input refused).

``CONDENSE_SCHEMATHESIS_EXAMPLES`` sets how many generated requests each operation gets in the fuzzing
phase (default 15); the coverage phase adds the schema's boundary cases (missing and null fields, values
just out of range, its request examples); ``CONDENSE_SCHEMATHESIS_SEED`` picks other requests. Run alone:
``./condense test tests/webapp/test_api_schemathesis.py -s`` (``-s`` prints the figures).

The tests after it pin what the schema run relies on but cannot reach itself.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from django.core.cache import cache
from django.core.management import call_command
from schemathesis.engine import events

from webapp.accounts.services import api_token_create
from webapp.datahub.services import dataset_inspect
from webapp.jobs.models import Job
from webapp.jobs.services import job_store_artifacts
from webapp.modelhub.services import model_inspect

EXAMPLES = int(os.environ.get("CONDENSE_SCHEMATHESIS_EXAMPLES", "15"))
SEED = int(os.environ.get("CONDENSE_SCHEMATHESIS_SEED", "1"))  # another seed explores other requests
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection"]
L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}

# live_server answers from another thread: the rows it reads must be committed. Ids from 1, as the schema's
# request examples (model 1) assume.
live_database = pytest.mark.django_db(transaction=True, reset_sequences=True)


class Seeded:
    """Real objects for the path parameters to hit: a built-in model, a job with an artifact, a dataset."""

    def __init__(self, base: str, token: str, npz: bytes):
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        model = session.post(f"{base}/api/v1/models/", data={"name": "digits", "source": "builtin",
                                                             "architecture": "digits_cnn"})
        assert model.status_code == 201, model.text
        self.model_id = model.json()["id"]
        model_inspect(self.model_id)  # the fuzzed uploads below stay inspecting; this one is ready for jobs
        job = session.post(f"{base}/api/v1/jobs/", json={"model": self.model_id, "algorithm": "L1NormPruner",
                                                         "params": L1_HALF, "dataset": "digits"})
        assert job.status_code == 201, job.text
        self.job_id = job.json()["id"]
        dataset = session.post(f"{base}/api/v1/datasets/", data={"name": "digits"},
                               files={"file": ("digits.npz", npz, "application/octet-stream")})
        assert dataset.status_code == 201, dataset.text
        self.dataset_id = dataset.json()["id"]
        dataset_inspect(self.dataset_id)
        _store_artifact(self.job_id)


def _store_artifact(job_id: int) -> None:
    """One artifact for the job, stored as a run stores it, so the artifact list and download serve a file."""
    with tempfile.TemporaryDirectory() as out:
        (Path(out) / "model.plan.json").write_text('{"layers": []}')
        artifacts = job_store_artifacts(job_id, Path(out), [{"name": "model.plan.json", "kind": "plan", "bytes": 14}])
    Job.objects.filter(pk=job_id).update(artifacts=artifacts)


@pytest.fixture
def api_schema(live_server, user, no_enqueue, inspect_later, digits_npz, settings):
    """The schema as the live server serves it to a signed-in user, set up to test that server. Uploads are
    stored and left inspecting (no worker runs here): the run checks the API, not the inspection."""
    settings.CONDENSE_INSPECT_ISOLATED = False
    token = api_token_create(owner=user, name="schemathesis", expires_in_days=1)[1]
    seeded = Seeded(live_server.url, token, digits_npz)
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "cache": {"enabled": False},  # no .schemathesis/ folder: every run starts from the schema alone
        "base-url": live_server.url,
        "headers": {"Authorization": f"Token {token}"},
        "request-timeout": 60,
        "generation": {"max-examples": EXAMPLES, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "phases": {"stateful": {"enabled": False}},
        # Half the generated ids are those of real objects, so the views get past "not found".
        "dictionaries": {
            "models": {"values": [seeded.model_id]},
            "jobs": {"values": [seeded.job_id]},
            "datasets": {"values": [seeded.dataset_id]},
            "artifacts": {"values": ["model.plan.json"]},
        },
        "parameters": {
            "path.model_id": {"dictionary": "models", "probability": 0.5},
            "path.job_id": {"dictionary": "jobs", "probability": 0.5},
            "path.dataset_id": {"dictionary": "datasets", "probability": 0.5},
            "path.name": {"dictionary": "artifacts", "probability": 0.5},
            "body.model": {"dictionary": "models", "probability": 0.5},
        },
    })
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/", config=config,
                                           headers={"Authorization": f"Token {token}"})
    yield schema
    cache.clear()  # the token endpoint's throttle counted 127.0.0.1's tries there: later tests start afresh


class Run:
    """What one engine run did: operations, requests sent, and each distinct failure with its request."""

    def __init__(self):
        self.operations: set[str] = set()
        self.requests = 0
        self.failures: dict[tuple[str, str, str], str] = {}

    def add(self, schema) -> "Run":
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                recorder = event.recorder
                self.operations.add(recorder.label)
                self.requests += len(recorder.interactions)
                for case_id, checks in recorder.checks.items():
                    for check in checks:
                        if check.failure_info is None:
                            continue
                        failure = check.failure_info.failure
                        response = recorder.find_response(case_id=case_id)
                        status = response.status_code if response is not None else "no response"
                        key = (recorder.label, failure.title, (failure.message or "").partition("\n")[0])
                        self.failures.setdefault(key, f"{recorder.label}: {failure.title} (HTTP {status})\n"
                                                      f"{failure.message}\n{check.failure_info.code_sample}")
            elif isinstance(event, events.NonFatalError):
                self.failures.setdefault((event.label, "error", str(event.value)),
                                         f"{event.label}: {event.info.format()}")
            elif isinstance(event, events.FatalError):
                raise event.exception
            elif isinstance(event, events.EngineFinished):
                for failure in event.failures:
                    self.failures.setdefault((failure.operation or "", failure.title, failure.message),
                                             str(failure))
        return self


@pytest.mark.slow
@live_database
def test_the_api_answers_as_its_schema_says(api_schema, capsys):
    started = time.monotonic()
    # Deletions last: before them, the other operations find the seeded objects.
    run = Run().add(api_schema.exclude(method="DELETE")).add(api_schema.include(method="DELETE"))
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\nschemathesis: {len(run.operations)} operations, {run.requests} requests, "
              f"{len(run.failures)} distinct failures, {elapsed:.0f} s ({EXAMPLES} fuzzed examples per operation)")
    assert not run.failures, "\n\n".join(run.failures.values())
    served = {result.ok().label for result in api_schema.get_all_operations()}
    assert run.operations == served and len(served) >= 20
    assert run.requests >= len(served) * EXAMPLES


def test_the_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    assert "/api/v1/jobs/{job_id}/artifacts/{name}" in schema and "ValidationError" in schema


@pytest.mark.django_db
def test_every_operation_documents_its_errors(api):
    paths = api.get("/api/v1/schema/?format=json").json()["paths"]
    operations = {f"{method.upper()} {path}": set(op["responses"]) for path, ops in paths.items()
                  for method, op in ops.items()}
    assert len(operations) >= 20
    assert all({"401", "403"} <= codes for codes in operations.values())
    assert all("404" in codes for label, codes in operations.items() if "{" in label)
    assert {"400", "413", "415"} <= operations["POST /api/v1/jobs/"]
    assert "409" in operations["POST /api/v1/jobs/{job_id}/cancel/"]
    assert "429" in operations["POST /api/v1/auth/token/"]


@pytest.mark.django_db
def test_a_json_body_over_the_size_limit_is_a_413_and_creates_nothing(api, digits_model, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": L1_HALF, "name": "x" * 2000}
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 413
    assert response.json() == {"detail": "the request body (files aside) is larger than the 1000 bytes the server "
                                         "accepts"}
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_path_that_matches_no_route_under_the_api_is_a_json_404(api, client):
    response = api.get("/api/v1/jobs/null,null/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and not page["Content-Type"].startswith("application/json")


@pytest.mark.django_db
@pytest.mark.parametrize("field, value, message", [
    ("name", 0, "must be a string in a JSON body, got int"),
    ("model", "1", "must be a whole number in a JSON body, got str"),
    ("speedup", "yes", "must be true or false in a JSON body, got str"),
    ("time_limit_s", 3600.0, "must be a whole number in a JSON body, got float"),
    ("params", '{"config_list": []}', "must be a JSON object in a JSON body, got str"),
])
def test_a_json_value_of_the_wrong_type_is_a_400_naming_the_field(api, digits_model, no_enqueue, field, value,
                                                                   message):
    body = {"model": digits_model.pk, "algorithm": "L1NormPruner", "params": L1_HALF, "dataset": "digits",
            field: value}
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()[field][0]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_form_still_sends_numbers_and_booleans_as_text(api, digits_model, no_enqueue):
    response = api.post("/api/v1/jobs/", {"model": str(digits_model.pk), "algorithm": "L1NormPruner",
                                          "params": json.dumps(L1_HALF), "speedup": "false", "dataset": "digits"})
    assert response.status_code == 201, response.json()
    assert response.json()["speedup"] is False


@pytest.mark.django_db
@pytest.mark.parametrize("query, status, message", [
    ("offset=null", 400, "offset"), ("offset=-1", 400, "offset"), ("offset=1000000001", 400, "at most"),
    ("limit=0", 400, "limit"), ("limit=1.5", 400, "limit"), ("limit=" + "9" * 5000, 200, None),
    ("limit=007&offset=0", 200, None),
])
def test_pagination_answers_as_documented(api, digits_model, query, status, message):
    response = api.get(f"/api/v1/models/?{query}")
    assert response.status_code == status
    if message:
        assert message in str(response.json())
    else:
        assert len(response.json()["results"]) == 1
