import csv
import io

import pytest
import torch
import torch.nn as nn

from compression_core.pruning import SensitivityAnalysis, sensitivity_csv
from compression_core.pruning import LevelPruner


def _model_and_metric():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.randn(16, 3, 12, 12)
    reference = model(x).detach()

    def metric(m):
        return float(-(m(x) - reference).abs().mean())

    return model, metric


def test_every_layer_and_sparsity_is_measured_and_model_restored():
    model, metric = _model_and_metric()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    analysis = SensitivityAnalysis(model, metric, sparsities=[0.25, 0.5, 0.75])
    result = analysis.analysis(progress=lambda done, total, layer, s: seen.append((done, total, layer, s)))
    assert sorted(result) == ["0", "2", "6"]
    assert all(sorted(curve) == [0.25, 0.5, 0.75] for curve in result.values())
    assert seen[-1][:2] == (9, 9)
    assert analysis.baseline == pytest.approx(0.0)
    # pruning more of a layer never brings its outputs closer to the original (L1 keeps a superset)
    for curve in result.values():
        assert curve[0.25] >= curve[0.5] >= curve[0.75]
        assert curve[0.75] < 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_pre_hooks and not model[0]._forward_pre_hooks


def test_specified_layers_other_pruner_and_early_stop():
    model, metric = _model_and_metric()
    analysis = SensitivityAnalysis(model, metric, sparsities=[0.1, 0.5, 0.9], pruner=LevelPruner,
                                   early_stop_mode="dropped", early_stop_value=1e-9)
    result = analysis.analysis(specified_layers=["2"])
    assert list(result) == ["2"]
    assert list(result["2"]) == [0.1]  # the first trial already dropped more than the limit


def test_csv_export(tmp_path):
    model, metric = _model_and_metric()
    analysis = SensitivityAnalysis(model, metric, sparsities=[0.5, 0.8])
    analysis.analysis(specified_layers=["0", "6"])
    path = tmp_path / "sensitivity.csv"
    analysis.export(path)
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["layername", "0.5", "0.8"]
    assert [r[0] for r in rows[1:]] == ["0", "6"]
    assert float(rows[1][1]) == pytest.approx(analysis.sensitivities["0"][0.5], rel=1e-5)
    assert sensitivity_csv({"a": {0.5: 1.0}}, [0.5, 0.8]).splitlines()[1] == "a,1,"


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsities": [0.0, 0.5]}, "sparsities"),
    ({"sparsities": []}, "sparsities"),
    ({"early_stop_mode": "sideways", "early_stop_value": 1}, "early_stop_mode"),
    ({"early_stop_mode": "dropped"}, "go together"),
    ({"evaluator": 3}, "evaluator"),
])
def test_bad_arguments(kwargs, message):
    model, metric = _model_and_metric()
    args = {"evaluator": metric}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SensitivityAnalysis(model, **args)


def test_unknown_layer_is_named():
    model, metric = _model_and_metric()
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        SensitivityAnalysis(model, metric).analysis(specified_layers=["nope"])
