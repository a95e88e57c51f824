"""In Chromium: the runs table sorts, filters, updates a running job's row and adds a new job's row without a
reload; two selected jobs open the compare page, whose charts show the points, the original and the Pareto
front, and whose CSV downloads. Jobs run inline (compression_core.jobs.run_job) and their status changes are
made from the test, as a worker's would be: no Celery worker needed."""

from __future__ import annotations

import csv
import io
import re

import pytest

from compression_core.jobs import ModelSource, Recipe, run_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

L1_HALF = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
L1_QUARTER = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.25}]}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = {}
    for key, params in (("half", L1_HALF), ("quarter", L1_QUARTER)):
        recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm="L1NormPruner",
                        params=params, dataset="digits", output_dir=str(tmp_path_factory.mktemp(key)),
                        latency_runs=6, latency_budget_s=0.2)
        out[key] = (params, run_job(recipe))
    return out


@pytest.fixture
def jobs(user, monkeypatch, results, workers_paused):
    """A model with two finished L1 jobs (50%, tagged sweep; 25%, tagged sweep and baseline) and a queued one."""
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_create
    from webapp.jobs.transitions import job_transition
    from webapp.modelhub.services import model_create

    monkeypatch.setattr("webapp.jobs.services.job_publish", lambda job_id: None)  # no broker: the test runs them
    model = model_create(owner=user, name="digits", source="builtin", architecture="digits_cnn")

    def finished(key: str, tags: list[str]):
        params, result = results[key]
        job = job_create(owner=user, model=model, algorithm="L1NormPruner", params=params, dataset="digits",
                         name=f"l1 {key}")
        Job.objects.filter(pk=job.pk).update(tags=tags)
        job_transition(job.pk, to="running", worker="w@host")
        return job_transition(job.pk, to="succeeded", progress=1.0, metrics=result.metrics, layers=result.layers)

    half = finished("half", ["sweep"])
    quarter = finished("quarter", ["sweep", "baseline"])
    queued = job_create(owner=user, model=model, algorithm="L1NormPruner", params=L1_HALF, dataset="digits",
                        name="waiting")
    return {"model": model, "half": half, "quarter": quarter, "queued": queued, "results": results,
            "create": lambda name: job_create(owner=user, model=model, algorithm="L1NormPruner", params=L1_HALF,
                                              dataset="digits", name=name)}




def _row_ids(page) -> list[int]:
    return [int(v) for v in page.eval_on_selector_all("#runs-table tbody tr[data-job-id]",
                                                      "rows => rows.map(r => r.dataset.jobId)")]


def test_runs_table_sorts_filters_updates_and_compares(page, live_server, jobs, tmp_path, sign_in):
    from webapp.jobs.transitions import job_transition

    half, quarter, queued = jobs["half"], jobs["quarter"], jobs["queued"]
    sign_in("/jobs/")
    assert _row_ids(page) == [queued.pk, quarter.pk, half.pk]
    assert page.inner_text(f'tr[data-job-id="{half.pk}"] td[data-col=target]') == "50%"
    verdict = half.metrics["latency"]["rows"][0]["verdict"]
    css = {"faster": "better", "regression": "worse"}.get(verdict, "uncertain")
    assert page.locator(f'tr[data-job-id="{half.pk}"] td[data-col=latency] span.ratio.{css}').count() == 1

    # Sorting: fewer parameters first (the queued job has none: last), then the other way round.
    page.click("th[data-sort=params]")
    assert _row_ids(page) == [half.pk, quarter.pk, queued.pk]
    page.click("th[data-sort=params]")
    assert _row_ids(page) == [quarter.pk, half.pk, queued.pk]

    # Filtering is server-side: the URL can be shared.
    page.select_option("#runs-filter-tag", "baseline")
    page.wait_for_url(re.compile(r".*/jobs/\?tag=baseline$"))
    assert _row_ids(page) == [quarter.pk]
    page.goto("/jobs/?status=queued")
    assert _row_ids(page) == [queued.pk]
    page.goto("/jobs/")

    # Live: the queued job starts, a new job is created, the first one finishes; no reload.
    page.evaluate("window.notReloaded = true")
    job_transition(queued.pk, to="running", worker="w@host", progress=0.4, stage="pruning")
    status = f'tr[data-job-id="{queued.pk}"] td[data-col=status]'
    page.wait_for_function(f"document.querySelector('{status}').textContent.includes('running')", timeout=20_000)
    assert "40 %" in page.text_content(status)
    created = jobs["create"]("new one")
    page.wait_for_selector(f'tr[data-job-id="{created.pk}"]', timeout=20_000)
    assert _row_ids(page)[0] == created.pk
    assert page.inner_text(f'tr[data-job-id="{created.pk}"] td[data-col=name]') == "new one"
    result = jobs["results"]["half"][1]
    job_transition(queued.pk, to="succeeded", progress=1.0, metrics=result.metrics, layers=result.layers)
    page.wait_for_function(f"document.querySelector('{status}').textContent.includes('succeeded')", timeout=20_000)
    accuracy = page.get_attribute(f'tr[data-job-id="{queued.pk}"] td[data-col=accuracy]', "data-value")
    assert float(accuracy) == pytest.approx(result.metrics["after"]["accuracy"])
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

    # Select two, compare.
    assert page.is_disabled("#compare-button")
    page.check(f'input.run-select[value="{half.pk}"]')
    assert page.is_disabled("#compare-button")
    page.check(f'input.run-select[value="{quarter.pk}"]')
    assert page.is_enabled("#compare-button")
    page.click("#compare-button")
    page.wait_for_url(re.compile(r".*/jobs/compare/\?ids=\d+,\d+$"))
    ids = [int(i) for i in page.url.rpartition("=")[2].split(",")]
    assert ids == [quarter.pk, half.pk]  # in the table's order
    for chart in ("#compare-accuracy-latency", "#compare-accuracy-size"):
        assert page.locator(f"{chart} circle.point[data-job-id]").count() == 2
        assert page.locator(f"{chart} .reference").count() == 1
        assert page.locator(f"{chart} circle.point.pareto, {chart} .reference.pareto").count() >= 1
        assert page.locator(f"{chart} .axis-title").count() == 2
    # Fewer channels, smaller file: the 50% job is on the size front whatever its accuracy does.
    assert page.locator(f'#compare-accuracy-size circle.point.pareto[data-job-id="{half.pk}"]').count() == 1
    assert page.locator("#compare-accuracy-size polyline.pareto-front").count() == 1
    assert page.locator('#compare-params-table tr.differs[data-param="config_list.0.sparse_ratio"]').count() == 1
    assert page.inner_text('#compare-layers-table tr[data-layer="conv1"]').split("\t")[-2:] == ["12 / 16", "8 / 16"]
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    assert download.suggested_filename == f"compare-{quarter.pk}-{half.pk}.csv"
    rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    assert [(int(row["id"]), row["target"]) for row in rows] == [(quarter.pk, "25%"), (half.pk, "50%")]

    # At phone width the table scrolls inside its card, which stays within the screen.
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto("/jobs/")
    scroll, card = page.evaluate("""() => {
        const s = document.querySelector('.runs-scroll');
        return [[s.scrollWidth, s.clientWidth], document.querySelector('#runs').getBoundingClientRect().right]; }""")
    assert scroll[0] > scroll[1] and card <= 390
    assert page.problems == []
