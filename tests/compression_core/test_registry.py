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

    specs = {spec.name: spec for spec in registry.all_algorithms() if spec.kind == "pruning" and spec.is_builtin}
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


def test_builtins_arrive_through_the_entry_point_group_like_any_plugin():
    from importlib.metadata import entry_points

    (builtin,) = [ep for ep in entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name == "builtin"]
    assert builtin.value == "compression_core.algorithms.catalog:register_builtins"
    seen = []
    builtin.load()(seen.append)
    assert {spec.name for spec in seen} == {spec.name for spec in registry.all_algorithms() if spec.is_builtin}


def test_capabilities_are_fields_of_the_spec():
    get = registry.get_algorithm
    assert get("PostTrainingQuantizer").needs_data_for({"mode": "static"})
    assert not get("PostTrainingQuantizer").needs_data_for({"mode": "dynamic"})
    assert {s.name for s in registry.all_algorithms() if s.trains} == {"QATQuantizer", "DoReFaQuantizer",
                                                                     "BNNQuantizer"}
    forms = {s.name: s.quantized_form for s in registry.algorithms_of_kind(registry.AlgorithmKind.QUANTIZATION)
             if s.is_builtin}
    assert forms == {"PostTrainingQuantizer": "int8", "QATQuantizer": "int8", "NaiveQuantizer": "simulated",
                     "DoReFaQuantizer": "simulated", "BNNQuantizer": "simulated"}
    assert not get("SlimPruner").uses_dependency_groups and get("L1NormPruner").uses_dependency_groups
    assert {s.name for s in registry.all_algorithms() if s.check_config} == {
        "SimulatedAnnealingPruner", "NetAdaptPruner", "AutoCompressPruner"}
    assert [s.name for s in registry.all_algorithms() if s.searches_target] == ["AutoTargetPruner"]
    with pytest.raises(ValueError, match="overall"):
        get("NetAdaptPruner").check_config([{"op_types": ["Conv2d"], "sparse_ratio": 0.5},
                                            {"op_types": ["Linear"], "sparse_ratio": 0.2}])


PLUGIN = '''
from compression_core.algorithms import AlgorithmKind, AlgorithmSpec
from compression_core.algorithms.catalog.schemas import pruning_schema
from compression_core.config import canonicalize_config_list
from compression_core.pruning import L1NormPruner


class HalfL1Pruner(L1NormPruner):
    """L1 norm pruning, at most half of any layer."""

    def __init__(self, model, config_list, **kwargs):
        capped = [{**entry, "sparse_ratio": min(entry.get("sparse_ratio", 0.0), 0.5)} for entry in config_list]
        super().__init__(model, capped, **kwargs)


def register_all(register):
    register(AlgorithmSpec(
        name="HalfL1Pruner", kind=AlgorithmKind.PRUNING, description="L1, capped at 50%",
        paper="none", paper_url="https://example.org/", factory=HalfL1Pruner, params_schema=pruning_schema(),
        granularity="out_channel", uses_dependency_groups=True, supported_types=HalfL1Pruner.supported_types,
        canonical_config=canonicalize_config_list))
'''


def test_a_third_party_package_adds_an_algorithm_through_the_entry_point(tmp_path, monkeypatch):
    """The custom-algorithm interface end to end: an installed package's entry point, then a job."""
    (tmp_path / "half_l1_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "half_l1_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: half-l1-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[condense.algorithms]\nhalf_l1 = half_l1_plugin:register_all\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_entry_points_loaded", False)

    spec = registry.get_algorithm("HalfL1Pruner")
    assert spec.kind == "pruning" and registry.get_algorithm("L1NormPruner").kind == "pruning"

    from compression_core.jobs import ModelSource, Recipe, run_job

    result = run_job(Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8],
                            algorithm="HalfL1Pruner", params={"config_list": [{"op_types": ["Conv2d"],
                                                                                 "sparse_ratio": 0.9}]},
                            output_dir=str(tmp_path / "out"), latency_runs=1, latency_batch_sizes=(1,)))
    convs = [layer for layer in result.layers if layer["type"] == "Conv2d"]
    assert [layer["weight_shape_after"][0] for layer in convs] == [8, 16]  # half of 16 and 32, not a tenth


def test_no_registered_algorithm_says_how_to_install(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    with pytest.raises(RuntimeError, match="pip install -e ."):
        registry.all_algorithms()
