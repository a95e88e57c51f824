"""In Chromium: an upload is answered at once, its page says it is being inspected and updates itself when the
inspecting worker is done, whether the model is accepted or rejected."""

from __future__ import annotations

import re

import pytest
import torch

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]




def _upload_builtin(page, input_shape: str = "") -> None:
    page.goto("/models/new/")
    page.check("input[name=source][value=builtin]")
    page.select_option("#id_architecture", "digits_cnn")
    if input_shape:
        page.fill("#id_input_shape", input_shape)
    page.click("#model-submit")
    page.wait_for_url(re.compile(r".*/models/\d+/$"))


def test_the_model_page_updates_itself_when_the_inspection_ends(page, live_server, user, inspect_in_worker, sign_in):
    torch.manual_seed(0)
    sign_in()
    _upload_builtin(page)
    # Answered before the worker's child process has even started: the page says so and offers no job yet.
    assert page.locator("#inspection-pending").count() == 1
    assert page.get_attribute("#model-status", "data-status") == "inspecting"
    assert page.locator("#compress-link").count() == 0
    # condense.js polls the API and reloads the page once the status changes: no reload from the test.
    page.wait_for_selector("#compress-link", timeout=90_000)
    assert page.get_attribute("#model-status", "data-status") == "ready"
    assert page.inner_text("#model-input-shape").replace(" ", "") == "1×8×8"
    assert page.locator("#layer-table").count() == 1

    _upload_builtin(page, input_shape="3, 32, 32")
    page.wait_for_selector("#inspection-rejected", timeout=90_000)
    assert "does not run on an input of shape" in page.inner_text("#rejection-reason")
    assert page.get_attribute("#model-status", "data-status") == "rejected"
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#delete-model")
    page.wait_for_url(re.compile(r".*/models/$"))
    assert page.problems == []
