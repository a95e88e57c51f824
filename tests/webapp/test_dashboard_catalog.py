"""The algorithms page (every registered algorithm, the example plugin's included) and the API reference pages."""

import re

import pytest

from compression_core.algorithms import all_algorithms, get_algorithm

pytestmark = pytest.mark.django_db


def _section(html: str, name: str) -> str:
    match = re.search(rf'<section class="card algorithm" id="algo-{name}".*?</section>', html, re.S)
    assert match, f"no section for {name}"
    return match.group(0)


def test_the_algorithms_page_lists_every_registered_algorithm_with_its_parameters(client_in):
    response = client_in.get("/algorithms/")
    assert response.status_code == 200
    html = response.content.decode()
    names = [spec.name for spec in all_algorithms()]
    assert {"L1NormPruner", "PostTrainingQuantizer", "SensitivityAnalysis", "RandomChannelPruner",
            "PowerOfTwoQuantizer"} <= set(names)
    for name in names:
        section = _section(html, name)
        spec = get_algorithm(name)
        params = re.findall(r'<tr data-param="([^"]+)">', section)
        assert params == list(spec.params_schema.get("properties", {})), name
        assert f'href="#algo-{name}"' in html  # the table of contents
        assert spec.paper_url in section and spec.when_to_use[:40] in section.replace("&#x27;", "'")
    # The table of contents groups by kind, pruners first.
    assert [kind for kind in re.findall(r'<section id="kind-(\w+)"', html)] == ["pruning", "quantization", "analysis"]
    assert 'aria-current="page">Algorithms</a>' in html


def test_a_parameter_row_gives_type_default_range_and_description(client_in):
    html = client_in.get("/algorithms/").content.decode()
    plugin = _section(html, "RandomChannelPruner")
    assert "plugin (condense_example_plugin)" in plugin and "No data" in plugin
    seed = re.search(r'<tr data-param="seed">(.*?)</tr>', plugin, re.S).group(1)
    cells = [re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", seed, re.S)]
    assert cells == ["seed", "integer", "0", "≥ 0, ≤ 2147483647",
                     "Seed of the random choice: the same seed removes the same channels"]
    ptq = _section(html, "PostTrainingQuantizer")
    assert "none when mode = &quot;dynamic&quot;" in ptq and "real int8 model" in ptq
    mode = re.search(r'<tr data-param="mode">(.*?)</tr>', ptq, re.S).group(1)
    assert "&quot;static&quot;, &quot;dynamic&quot;" in mode
    qat = _section(html, "QATQuantizer")
    assert "it trains for its own epochs" in qat
    config_list = re.search(r'<tr data-param="config_list">(.*?)</tr>', _section(html, "L1NormPruner"), re.S).group(1)
    assert "(required)" in config_list and "array of objects" in config_list


def test_the_job_form_offers_the_plugin_algorithms(client_in, digits_model):
    html = client_in.get("/jobs/new/").content.decode()
    assert re.search(r'<option value="RandomChannelPruner"', html)
    assert re.search(r'<option value="PowerOfTwoQuantizer"', html)


def test_the_algorithms_page_requires_login(client):
    response = client.get("/algorithms/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url, asset", [("/api/v1/docs/", "swagger-ui-dist/swagger-ui-bundle.js"),
                                        ("/api/v1/redoc/", "redoc/bundles/redoc.standalone.js")])
def test_the_api_reference_serves_its_assets_locally(client_in, url, asset):
    response = client_in.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"/static/drf_spectacular_sidecar/{asset}" in html and "/api/v1/schema/" in html
    # Nothing from another origin: every src and href is a path on this server.
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert urls and all(u.startswith("/") or u.startswith("data:") for u in urls), urls
    assert "googleapis" not in html and "cdn" not in html.lower()


def test_the_api_reference_is_linked_from_every_page_and_needs_a_session(client, client_in):
    html = client_in.get("/").content.decode()
    assert 'id="nav-api"' in html and 'href="/api/v1/docs/"' in html and 'id="nav-algorithms"' in html
    assert ">API reference</a>" in html and ">schema (YAML)</a>" in html
    client.logout()
    assert client.get("/api/v1/docs/").status_code in (401, 403)
