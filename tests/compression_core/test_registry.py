import pytest

from compression_core.algorithms import registry


def test_builtin_pruners_are_registered_with_schema():
    names = {spec.name for spec in registry.all_algorithms()}
    assert {"LevelPruner", "L1NormPruner"} <= names
    spec = registry.get_algorithm("L1NormPruner")
    assert spec.params_schema["required"] == ["config_list"]
    assert spec.paper_url.startswith("https://")
    assert spec.as_dict()["kind"] == "pruning"


def test_validate_params_fills_defaults_and_canonicalises():
    params = registry.validate_params("L1NormPruner", {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.25}]})
    assert params["config_list"] == [{"op_types": ["Conv2d"], "sparse_ratio": 0.25}]
    assert params["dependency_aware"] is True
    assert params["training"] == {"finetune_epochs": 0, "distillation": False, "alpha": 0.5, "temperature": 4.0,
                                  "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
                                  "batch_size": 64}


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "missing required key 'config_list'"),
        ({"config_list": [], "speed": 1}, "unknown key 'speed'"),
        ({"config_list": [{"op_types": ["Conv2d"], "sparsity": 1.5}]}, "must be < 1"),
        ({"config_list": "Conv2d"}, "must be of type array"),
        ({"config_list": [], "dependency_aware": "yes"}, "must be of type boolean"),
    ],
)
def test_validate_params_errors(params, message):
    with pytest.raises(ValueError) as info:
        registry.validate_params("L1NormPruner", params)
    assert message in str(info.value)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown algorithm 'MagicPruner'"):
        registry.get_algorithm("MagicPruner")


def test_readme_algorithm_table_is_generated_from_the_registry():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert registry.markdown_table() in readme


NNI_PRUNERS = {
    "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner", "ActivationAPoZRankPruner",
    "ActivationMeanRankPruner", "SlimPruner", "TaylorFOWeightPruner", "ADMMPruner", "AGPPruner",
    "LotteryTicketPruner", "NetAdaptPruner", "SimulatedAnnealingPruner", "AutoCompressPruner",
    "AutoTargetPruner",  # Condense's automatic compression to a target
}


def test_every_nni_pruner_is_registered_once_with_its_paper_and_class():
    import compression_core.pruning as pruning

    specs = {spec.name: spec for spec in registry.all_algorithms() if spec.kind == "pruning"}
    assert set(specs) == NNI_PRUNERS
    for name, spec in specs.items():
        assert spec.factory is getattr(pruning, name)
        assert spec.paper and spec.paper_url.startswith("https://arxiv.org/")
        assert "training" in spec.params_schema["properties"]
    data_free = {"LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner"}
    assert {name for name, spec in specs.items() if not spec.needs_data} == data_free


def test_every_schema_default_is_accepted_by_its_class():
    """What the form and the API fill in must construct the pruner (no schema/class drift)."""
    import inspect

    for spec in registry.all_algorithms():
        if spec.kind != "pruning":  # the sensitivity-analysis job maps its parameters itself
            continue
        params = registry.validate_params(spec.name, {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.5}]})
        accepted = inspect.signature(spec.factory).parameters
        for key, value in spec.constructor_kwargs(params).items():
            assert key in accepted, (spec.name, key)
            default = accepted[key].default
            if default is not inspect.Parameter.empty and key != "pruning_params":
                default = list(default) if isinstance(default, tuple) else default
                assert default == value, (spec.name, key, default, value)


@pytest.mark.parametrize("name, params, message", [
    ("AGPPruner", {"pruning_algorithm": "SlimPruner"}, "must be one of"),
    ("NetAdaptPruner", {"sparsity_per_iteration": 0}, "must be > 0"),
    ("SlimPruner", {"regular_scale": -1}, "must be >= 0"),
    ("L1NormPruner", {"training": {"finetune_epochs": -1}}, "must be >= 0"),
    ("L1NormPruner", {"training": {"epochs": 3}}, "unknown key 'epochs'"),
    ("L1NormPruner", {"training": {"optimizer": "lbfgs"}}, "must be one of"),
])
def test_algorithm_parameter_errors_name_the_parameter(name, params, message):
    with pytest.raises(ValueError, match=message):
        registry.validate_params(name, {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.5}], **params})
