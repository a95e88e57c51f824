"""In Chromium: every page fits a phone's width (tables scroll inside their card), and deleting a job or a model
from its page asks first, then deletes it or says which job is in the way."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
L1_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
#: Elements wider than the page, for the failure message: which one makes it scroll sideways.
WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .slice(-8).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
     + (typeof e.className === 'string' && e.className ? '.' + e.className.split(' ').join('.') : '')
     + ' ' + Math.round(e.getBoundingClientRect().right))"""


@pytest.fixture
def site(user, monkeypatch, settings, workers_paused):
    """A model with a finished pruning job (run in this process, real results: layers, fine-tuning, latency)."""
    from webapp.jobs.services import job_create, job_execute
    from webapp.modelhub.services import model_create

    monkeypatch.setattr("webapp.jobs.services.job_publish", lambda job_id: None)  # no broker: run here
    settings.CONDENSE_HEARTBEAT_S = 0  # the job's progress reports renew its lease
    model = model_create(owner=user, name="digits with a rather long name for a phone screen", source="builtin",
                         architecture="digits_cnn")
    job = job_create(owner=user, model=model, algorithm="L1NormPruner", dataset="digits",
                     params={"config_list": L1_HALF, "training": {"finetune_epochs": 2}},
                     name="prune half of every convolution, then fine-tune")
    job_execute(job.pk, task_id="task-pages")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return {"model": model, "job": job}




def test_no_page_scrolls_sideways_at_a_phone_width(page, live_server, site, sign_in):
    page.set_viewport_size(PHONE)
    sign_in()
    model, job = site["model"], site["job"]
    for path in ("/", "/models/", f"/models/{model.pk}/", "/models/new/", "/datasets/", "/jobs/", "/jobs/new/",
                 f"/jobs/{job.pk}/", "/workers/"):
        page.goto(path)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"{path} is {width} px wide: {page.evaluate(WIDEST)}"
    # The job page's wide tables scroll inside their cards, and its charts shrink to the screen.
    page.goto(f"/jobs/{job.pk}/")
    for chart in ("#layer-chart", "#training-chart"):
        assert page.locator(chart).bounding_box()["width"] <= PHONE["width"]
    assert page.evaluate("getComputedStyle(document.querySelector('#layers-table').parentElement).overflowX") == "auto"
    assert page.problems == []


def test_delete_a_finished_job_from_its_page(page, live_server, site, sign_in):
    job = site["job"]
    sign_in()
    page.goto(f"/jobs/{job.pk}/")
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#job-delete-button")
    page.wait_for_url(f"{live_server.url}/jobs/")
    assert asked and asked[0].startswith(f"Delete job #{job.pk} with its results")
    assert f"Job #{job.pk} deleted" in page.inner_text("#messages")
    assert page.locator(f'a[href="/jobs/{job.pk}/"]').count() == 0
    assert page.problems == []


def test_deleting_a_model_in_use_says_which_job(page, live_server, site, sign_in):
    from webapp.jobs.services import job_create

    model = site["model"]
    queued = job_create(owner=model.owner, model=model, algorithm="L1NormPruner", dataset="digits",
                        params={"config_list": L1_HALF})
    sign_in()
    page.goto(f"/models/{model.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#model-delete-button")
    page.wait_for_selector("#messages")
    assert re.search(rf"/models/{model.pk}/$", page.url)
    message = page.inner_text("#messages")
    assert f"the model is used by job #{queued.pk} (queued); cancel it first, then delete it" in message
    assert f"finished job #{site['job'].pk} (succeeded)" in message
    assert page.locator("#model-name").inner_text() == model.name
