"""The ONNX corpus (tests/compression_core/onnx_corpus.py): every case imports, prunes, exports and runs.

One test per case: torchvision's coverage list and a few audio / detector / MLP models exported with
both torch exporters, fixed and dynamic batch, single file and external data; and the ONNX models
shipped inside pip wheels (skipped when the registry cannot be reached). Cases whose file torch
itself cannot write are skipped with torch's error.

The whole corpus takes 13-22 min on the shared 2-core VM, so a plain ``pytest`` runs only the cases
not marked ``slow`` (0.6-3.5 min: resnet18, squeezenet, the custom models, the wheel models but ddddocr's);
the others run when the marker expression names the corpus (``pytest -m corpus``) or with
``CONDENSE_ONNX_CORPUS=all``. ``KNOWN_FAILURES`` lists the cases Condense
still fails, with the cause (strict xfail: a case that starts to pass fails the run until its entry
is deleted). ``bench/onnx_corpus.py`` prints the same cases as a table.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.compression_core.onnx_corpus import SHARED, corpus_cases, run_case
from tests.compression_core.onnx_corpus_sources import WHEEL_MODELS, SourceUnavailable, fetch_wheel_model

pytestmark = pytest.mark.corpus

CASES = corpus_cases()

# case name -> why it still fails (bench/onnx_corpus.py, 2026-12-01). Strict: a case that starts to pass
# fails the run until its entry is deleted, so this list is always the truth.
KNOWN_FAILURES: dict[str, str] = {
    "oww_hey_jarvis-wheel": "import: its If chooses a branch from the data of input 'x.1', decided only at run time "
                            "(refused with that sentence, by design)",
}


def _known_failure(name: str) -> str | None:
    return KNOWN_FAILURES.get(name)


def _params() -> list:
    params = []
    for name, case in CASES.items():
        marks = [pytest.mark.slow] if case.slow else []
        reason = _known_failure(name)
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-corpus")


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", _params())
def test_case_imports_prunes_exports_and_runs(name, corpus_dir, request):
    case = CASES[name]
    asked = "corpus" in request.config.getoption("markexpr", "") or os.environ.get("CONDENSE_ONNX_CORPUS") == "all"
    if case.slow and not asked:
        pytest.skip("heavy corpus case: run it with -m corpus, CONDENSE_ONNX_CORPUS=all or bench/onnx_corpus.py")
    row = run_case(case, corpus_dir)
    if row.source is not None:
        pytest.skip(row.source)
    assert row.errors() == {}, f"{name}: {row.errors()} ({'; '.join(row.notes)})"
    if case.external_data:  # same weights as the single-file twin, whose prune/export/run are tested there
        assert row.prune == SHARED
    else:
        assert any(note.startswith("parameters") for note in row.notes)
    assert row.passed


def test_wheel_fetch_without_a_registry_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    spec = WHEEL_MODELS["silero_vad"]
    with pytest.raises(SourceUnavailable, match="pip could not download silero-vad==6.2.3"):
        fetch_wheel_model(spec, tmp_path)
    assert not list(tmp_path.rglob("*.onnx"))
