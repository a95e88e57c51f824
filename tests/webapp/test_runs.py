"""Runs: one row of figures per job (from real job results), the filters and ``fields`` of GET /api/v1/jobs/,
the compare endpoint and page, the Pareto front and the CSV/JSON exports."""

from __future__ import annotations

import csv
import io
import json

import pytest

from compression_core.jobs import ModelSource, Recipe, run_job
from webapp.jobs.models import Job
from webapp.jobs.runs import (
    compression_target, flatten_params, headline_timing, job_run_row, pareto_front, params_diff,
)
from webapp.jobs.services import job_create
from webapp.jobs.transitions import job_transition

L1 = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
L1_QUARTER = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.25}]}
NAIVE = {"config_list": [{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"], "quant_bits": 8}]}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Real results of three small jobs on digits_cnn: L1 at 50% and 25%, and 8-bit naive quantization."""
    out = {}
    for key, algorithm, params in (("half", "L1NormPruner", L1), ("quarter", "L1NormPruner", L1_QUARTER),
                                   ("naive", "NaiveQuantizer", NAIVE)):
        recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm=algorithm,
                        params=params, dataset="digits", output_dir=str(tmp_path_factory.mktemp(key)),
                        latency_runs=6, latency_budget_s=0.2)
        out[key] = (algorithm, params, run_job(recipe))
    return out


@pytest.fixture
def finished(user, digits_model, no_enqueue, results):
    """``finished(key, tags=..., owner=..., model=...)``: a succeeded job holding that real result."""

    def make(key: str, *, tags=(), owner=None, model=None, name=""):
        algorithm, params, result = results[key]
        job = job_create(owner=owner or user, model=model or digits_model, algorithm=algorithm, params=params,
                         dataset="digits", name=name)
        Job.objects.filter(pk=job.pk).update(tags=list(tags))
        job_transition(job.pk, to="running", worker="w@host")
        return job_transition(job.pk, to="succeeded", progress=1.0, metrics=result.metrics, layers=result.layers)

    return make


# -- one row per job -----------------------------------------------------------------------


def test_run_row_reads_a_real_pruning_result(finished, results):
    job = finished("half", tags=["baseline"])
    row = job_run_row(Job.objects.get(pk=job.pk))
    metrics = results["half"][2].metrics
    assert (row["sparsity"], row["bits"], row["target"]) == (0.5, None, "50%")
    assert row["accuracy_before"] == metrics["before"]["accuracy"]
    assert row["accuracy_after"] == metrics["after"]["accuracy"]
    assert row["accuracy_delta"] == pytest.approx(metrics["after"]["accuracy"] - metrics["before"]["accuracy"])
    assert row["params_after"] < row["params_before"] and row["params_ratio"] > 1.5
    assert row["size_after_bytes"] == metrics["after"]["weights_bytes"]
    assert 0 <= row["fidelity_top1"] <= 1 and 0 < row["fidelity_cosine"] <= 1
    # The headline latency: the deliverable on the CPU at the smallest batch, as the job's page shows it.
    timing = headline_timing(metrics["latency"])
    assert (timing["runtime"], timing["batch"], timing["form"]) == ("pytorch-cpu", 1, "compressed")
    assert row["latency_after_ms"] == timing["after"]["median_ms"] == metrics["after"]["latency_cpu_b1_ms"]
    assert row["latency_low"] <= row["latency_ratio"] <= row["latency_high"]
    assert row["latency_verdict"] == timing["verdict"] and row["latency_flags"] == timing["flags"]
    assert row["tags"] == ["baseline"] and row["duration_s"] >= 0 and row["status"] == "succeeded"


def test_run_row_of_a_quantized_job_says_its_bits_and_its_int8_file(finished, results):
    row = job_run_row(finished("naive"))
    assert (row["sparsity"], row["bits"], row["target"]) == (None, 8, "8-bit")
    assert row["size_after_bytes"] == results["naive"][2].metrics["after"]["weights_bytes"]


def test_run_row_of_a_queued_job_has_no_figures(user, digits_model, no_enqueue):
    row = job_run_row(job_create(owner=user, model=digits_model, algorithm="L1NormPruner", params=L1,
                                 dataset="digits"))
    assert row["status"] == "queued" and row["accuracy_after"] is None and row["latency_ratio"] is None
    assert row["latency_flags"] == [] and row["duration_s"] is None


def test_compression_target_words():
    assert compression_target({"config_list": [{"sparsity": 0.5}, {"sparse_ratio": 0.7}]})["target"] == "mixed"
    assert compression_target({"config_list": [{"sparse_ratio": 0.5}, {"exclude": True, "op_names": ["fc"]}]}) == {
        "sparsity": 0.5, "bits": None, "target": "50%"}
    assert compression_target({"config_list": [{"quant_bits": {"weight": 4, "input": 8}}]})["target"] == "mixed"
    chain = {"config_list": [{"sparse_ratio": 0.3}],
             "quantization": {"algorithm": "PostTrainingQuantizer", "params": {"config_list": [{"quant_bits": 8}]}}}
    assert compression_target(chain) == {"sparsity": 0.3, "bits": 8, "target": "30% + 8-bit"}
    assert compression_target({"target": "flops"})["target"] == ""


def test_pareto_front_keeps_the_undominated_points_in_order():
    points = [("a", 1.0, 0.90), ("b", 2.0, 0.95), ("c", 2.5, 0.93), ("d", 1.0, 0.80), ("e", 3.0, 0.99),
              ("f", 2.0, 0.95)]
    assert pareto_front(points) == ["a", "b", "f", "e"]  # c: b is faster and better; d: a is better at equal x
    assert pareto_front([]) == []
    assert pareto_front([("only", 5, 0.1)]) == ["only"]


def test_params_are_flattened_and_diffed(finished):
    assert flatten_params({"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], "training": {"lr": 0.1}}) \
        == {"config_list.0.op_types": ["Conv2d"], "config_list.0.sparse_ratio": 0.5, "training.lr": 0.1}
    jobs = [finished("half"), finished("quarter")]
    diff = {row["key"]: row for row in params_diff(jobs)}
    assert diff["config_list.0.sparse_ratio"] == {"key": "config_list.0.sparse_ratio", "values": [0.5, 0.25],
                                                  "differs": True}
    assert diff["algorithm"]["differs"] is False and diff["config_list.0.op_types"]["values"] == [["Conv2d"]] * 2


# -- the API ---------------------------------------------------------------------------------


def test_job_list_filters_by_model_algorithm_status_and_tag(api, user, finished, no_enqueue):
    from webapp.modelhub.services import model_create

    other_model = model_create(owner=user, name="digits 2", source="builtin", architecture="digits_cnn")
    half = finished("half", tags=["baseline", "sweep"])
    quarter = finished("quarter", tags=["sweep"], model=other_model)
    naive = finished("naive")
    queued = job_create(owner=user, model=other_model, algorithm="L1NormPruner", params=L1, dataset="digits")

    def ids(query: str) -> list[int]:
        response = api.get(f"/api/v1/jobs/?{query}")
        assert response.status_code == 200, response.content
        return [item["id"] for item in response.json()["results"]]

    assert ids("") == [queued.pk, naive.pk, quarter.pk, half.pk]
    assert ids(f"model={other_model.pk}") == [queued.pk, quarter.pk]
    assert ids("algorithm=NaiveQuantizer") == [naive.pk]
    assert ids("status=queued") == [queued.pk]
    assert ids("tag=sweep") == [quarter.pk, half.pk]
    assert ids("tag=baseline&algorithm=L1NormPruner") == [half.pk]
    assert ids(f"ids={half.pk},{naive.pk}") == [naive.pk, half.pk]
    for query, name in (("status=done", "status"), ("model=abc", "model"), ("ids=1,,2", "ids")):
        response = api.get(f"/api/v1/jobs/?{query}")
        assert response.status_code == 400 and name in response.json(), (query, response.content)


def test_job_list_fields_choose_the_keys(api, finished):
    job = finished("half")
    default = api.get("/api/v1/jobs/").json()["results"][0]
    assert set(default) == {"id", "name", "model", "model_name", "algorithm", "status", "progress", "stage", "error",
                            "tags", "created_at", "finished_at"}
    item = api.get("/api/v1/jobs/?fields=id,status,accuracy_after,latency_ratio,size_after_bytes").json()["results"][0]
    row = job_run_row(Job.objects.get(pk=job.pk))
    assert item == {"id": job.pk, "status": "succeeded", "accuracy_after": row["accuracy_after"],
                    "latency_ratio": row["latency_ratio"], "size_after_bytes": row["size_after_bytes"]}
    timing = api.get("/api/v1/jobs/?fields=elapsed_s,eta_s").json()["results"][0]
    assert timing["elapsed_s"] >= 0 and timing["eta_s"] is None  # finished: no estimate
    response = api.get("/api/v1/jobs/?fields=id,speed")
    assert response.status_code == 400
    message = response.json()["fields"][0]
    assert "'speed'" in message and "accuracy_after" in message and "latency_ratio" in message


def test_compare_endpoint(api, finished):
    half, quarter, naive = finished("half", name="half"), finished("quarter"), finished("naive")
    response = api.get(f"/api/v1/jobs/compare/?ids={quarter.pk},{half.pk},{naive.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [job["id"] for job in body["jobs"]] == [quarter.pk, half.pk, naive.pk]
    assert body["jobs"][1]["params"]["config_list"][0]["sparse_ratio"] == 0.5
    assert body["reference"]["model"] == half.model_id and len(body["references"]) == 1
    assert body["reference"]["accuracy"] == half.metrics["before"]["accuracy"]
    assert body["reference"]["size_bytes"] == half.metrics["before"]["weights_bytes"]
    # The front is computed from the same rows (jobs and the original) as the pure function does.
    rows = body["jobs"]
    # Latency relative to each job's original, timed interleaved (the original is 1.0).
    points = [(r["id"], 1 / r["latency_ratio"], r["accuracy_after"]) for r in rows if r["latency_ratio"]]
    points.append(("ref", 1.0, body["reference"]["accuracy"]))
    assert body["pareto"]["accuracy_latency"] == [key for key in pareto_front(points) if key != "ref"]
    sizes = [(r["id"], r["size_after_bytes"], r["accuracy_after"]) for r in rows]
    sizes.append(("ref", body["reference"]["size_bytes"], body["reference"]["accuracy"]))
    assert body["pareto"]["accuracy_size"] == [key for key in pareto_front(sizes) if key != "ref"]
    assert body["pareto"]["accuracy_size"]  # the smaller files are on the size front, whatever the timings
    diff = {row["key"]: row for row in body["params_diff"]}
    assert diff["algorithm"]["values"] == ["L1NormPruner", "L1NormPruner", "NaiveQuantizer"]
    conv1 = next(layer for layer in body["layers"] if layer["name"] == "conv1")
    assert [cell["after"] if cell else None for cell in conv1["jobs"]][:2] == [12, 8]
    assert conv1["jobs"][0]["before"] == 16


def test_compare_endpoint_refuses_others_jobs_and_bad_ids(api, other_user, finished):
    mine = finished("half")
    from webapp.modelhub.services import model_create

    theirs = finished("quarter", owner=other_user,
                      model=model_create(owner=other_user, name="d", source="builtin", architecture="digits_cnn"))
    response = api.get(f"/api/v1/jobs/compare/?ids={mine.pk},{theirs.pk}")
    assert response.status_code == 404 and str(theirs.pk) in response.json()["detail"]
    assert api.get("/api/v1/jobs/compare/?ids=").status_code == 400
    assert api.get("/api/v1/jobs/compare/?ids=a,b").status_code == 400


# -- the pages ---------------------------------------------------------------------------------


def test_runs_table_shows_the_figures_and_filters_server_side(client_in, finished):
    half, naive = finished("half", tags=["baseline"]), finished("naive")
    html = client_in.get("/jobs/").content.decode()
    assert 'id="runs-table"' in html and 'id="compare-button"' in html
    assert f'<input type="checkbox" class="run-select" value="{half.pk}"' in html
    assert '<td data-col="target" data-value="0.5">50%</td>' in html
    assert '<td data-col="target" data-value="8">8-bit</td>' in html
    assert 'id="runs-filter-tag"' in html and "<option>baseline</option>" in html
    filtered = client_in.get("/jobs/?tag=baseline").content.decode()
    assert f'data-job-id="{half.pk}"' in filtered and f'data-job-id="{naive.pk}"' not in filtered
    assert "<option selected>baseline</option>" in filtered
    model_page = client_in.get(f"/models/{half.model_id}/?algorithm=NaiveQuantizer").content.decode()
    assert f'data-job-id="{naive.pk}"' in model_page and f'data-job-id="{half.pk}"' not in model_page
    assert 'id="runs-filter-model"' not in model_page


def test_compare_page_draws_points_reference_and_front(client_in, finished):
    half, quarter = finished("half"), finished("quarter")
    html = client_in.get(f"/jobs/compare/?ids={half.pk},{quarter.pk}").content.decode()
    for chart in ("compare-accuracy-latency", "compare-accuracy-size"):
        assert f'id="{chart}"' in html
    assert html.count(f'data-job-id="{half.pk}"') >= 3  # a point on each chart, and its column
    assert html.count('class="reference') == 2 and html.count('class="pareto-front"') == 2
    assert "Latency (% of the original&#x27;s: pytorch-cpu, batch 1)" in html
    assert "Size of the deployable file (MB)" in html
    assert html.count('class="interval"') == 2  # each job's latency interval
    assert '<text class="tick" data-axis="y"' in html and ">125<" not in html  # a percentage axis ends at 100
    assert '<tr data-param="config_list.0.sparse_ratio" class="differs">' in html
    assert 'id="export-csv" href="/jobs/compare/export.csv?ids=' in html
    assert client_in.get("/jobs/compare/?ids=nope").status_code == 302


def test_exports_hold_one_row_per_job_with_its_reference(client_in, finished):
    half, naive = finished("half", tags=["a", "b"]), finished("naive")
    response = client_in.get(f"/jobs/compare/export.csv?ids={half.pk},{naive.pk}")
    assert response["Content-Disposition"] == f'attachment; filename="compare-{half.pk}-{naive.pk}.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [int(row["id"]) for row in rows] == [half.pk, naive.pk]
    assert rows[0]["target"] == "50%" and rows[1]["bits"] == "8" and rows[0]["tags"] == "a b"
    assert float(rows[0]["accuracy_after"]) == half.metrics["after"]["accuracy"]
    assert float(rows[1]["reference_accuracy"]) == half.metrics["before"]["accuracy"]
    response = client_in.get(f"/jobs/compare/export.json?ids={half.pk},{naive.pk}")
    assert response["Content-Disposition"].startswith("attachment;")
    body = json.loads(response.content)
    assert [job["id"] for job in body["jobs"]] == [half.pk, naive.pk]
    assert body["jobs"][0]["reference"]["size_bytes"] == half.metrics["before"]["weights_bytes"]
    assert body["jobs"][1]["params"] == NAIVE and set(body["pareto"]) == {"accuracy_latency", "accuracy_size"}
