import pytest

from compression_core import registry


def test_builtin_pruners_are_registered_with_schema():
    names = {spec.name for spec in registry.all_algorithms()}
    assert {"LevelPruner", "L1NormPruner"} <= names
    spec = registry.get_algorithm("L1NormPruner")
    assert spec.params_schema["required"] == ["config_list"]
    assert spec.paper_url.startswith("https://")
    assert spec.as_dict()["kind"] == "pruning"


def test_validate_params_fills_defaults_and_canonicalises():
    params = registry.validate_params("L1NormPruner", {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.25}]})
    assert params == {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.25}], "dependency_aware": True}


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
