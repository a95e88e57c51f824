"""Custom algorithms: CONDENSE_PLUGINS modules, and the example plugin (installed through its entry point)."""

from importlib.metadata import entry_points

import pytest
import torch
from safetensors.torch import load_file

from compression_core.algorithms import registry
from compression_core.jobs import ModelSource, Recipe, run_job
from compression_core.quantization import load_packed

PLUGIN_MODULE = '''
from compression_core.algorithms import AlgorithmKind, AlgorithmSpec
from compression_core.algorithms.catalog.schemas import pruning_schema
from compression_core.config import canonicalize_config_list
from compression_core.pruning import L2NormPruner


class TestOnlyPruner(L2NormPruner):
    pass


def register_algorithms(register):
    register(AlgorithmSpec(
        name="TestOnlyPruner", kind=AlgorithmKind.PRUNING, description="L2 under another name",
        paper="none", paper_url="https://example.org", factory=TestOnlyPruner, params_schema=pruning_schema(),
        granularity="out_channel", uses_dependency_groups=True, supported_types=TestOnlyPruner.supported_types,
        canonical_config=canonicalize_config_list))
'''


@pytest.fixture
def fresh_registry(monkeypatch):
    """An empty registry that loads again (entry points, then CONDENSE_PLUGINS) at the next lookup."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return registry


def _recipe(tmp_path, algorithm, params):
    return Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8], algorithm=algorithm,
                  params=params, dataset=None, output_dir=str(tmp_path), latency_runs=1, latency_batch_sizes=(1,),
                  latency_budget_s=0.1)


def test_condense_plugins_loads_a_module_of_the_python_path(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "lab_pruners.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CONDENSE_PLUGINS", " lab_pruners , ")

    spec = fresh_registry.get_algorithm("TestOnlyPruner")
    assert spec.factory.__module__ == "lab_pruners" and not spec.is_builtin
    names = {spec.name for spec in fresh_registry.all_algorithms()}
    assert {"TestOnlyPruner", "L1NormPruner", "RandomChannelPruner"} <= names
    # Plugins stay out of the README's table of the built-ins.
    assert "TestOnlyPruner" not in fresh_registry.markdown_table()
    assert "| L1NormPruner |" in fresh_registry.markdown_table()


def test_a_plugin_both_installed_and_listed_registers_once(monkeypatch, fresh_registry):
    monkeypatch.setenv("CONDENSE_PLUGINS", "condense_example_plugin")
    assert fresh_registry.get_algorithm("PowerOfTwoQuantizer").kind == "quantization"


def test_a_missing_plugin_module_is_named(monkeypatch, fresh_registry):
    monkeypatch.setenv("CONDENSE_PLUGINS", "no_such_plugin_module_xyz")
    for _ in range(2):  # every lookup says so, not only the first
        with pytest.raises(registry.PluginError, match="CONDENSE_PLUGINS lists module 'no_such_plugin_module_xyz', "
                                                       "which cannot be imported: ModuleNotFoundError"):
            fresh_registry.all_algorithms()


def test_a_plugin_module_without_its_function_is_named(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "not_a_plugin.py").write_text("def register_all(register):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CONDENSE_PLUGINS", "not_a_plugin")
    with pytest.raises(registry.PluginError, match=r"'not_a_plugin', which has no function "
                                                   r"register_algorithms\(register\)"):
        fresh_registry.get_algorithm("L1NormPruner")


def test_the_example_plugin_registers_through_its_entry_point(monkeypatch, fresh_registry):
    monkeypatch.delenv("CONDENSE_PLUGINS", raising=False)
    values = {ep.value for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert "condense_example_plugin:register_algorithms" in values
    pruner = fresh_registry.get_algorithm("RandomChannelPruner")
    quantizer = fresh_registry.get_algorithm("PowerOfTwoQuantizer")
    assert (pruner.kind, pruner.granularity, pruner.uses_dependency_groups) == ("pruning", "out_channel", True)
    assert quantizer.quantized_form == registry.QuantizedForm.SIMULATED and not quantizer.needs_data
    assert "seed" in pruner.params_schema["properties"] and pruner.when_to_use


def test_random_channel_pruner_job_removes_half_the_channels(tmp_path):
    params = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], "seed": 3}
    result = run_job(_recipe(tmp_path / "a", "RandomChannelPruner", params))
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["params"] < before["params"] * 0.5 and after["flops"] < before["flops"]
    convs = [layer for layer in result.layers if layer["type"] == "Conv2d"]
    assert [layer["weight_shape_after"][0] for layer in convs] == [8, 16]
    # Seeded: the same seed keeps the same channels, another seed others.
    again = run_job(_recipe(tmp_path / "b", "RandomChannelPruner", params))
    run_job(_recipe(tmp_path / "c", "RandomChannelPruner", {**params, "seed": 4}))
    weights = [load_file(tmp_path / d / "model.safetensors")["conv1.weight"] for d in "abc"]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert again.metrics["after"]["params"] == after["params"]


def test_power_of_two_quantizer_job_gives_powers_of_two_and_claims_no_speedup(tmp_path):
    params = {"config_list": [{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"], "quant_bits": 4}]}
    result = run_job(_recipe(tmp_path, "PowerOfTwoQuantizer", params))
    quantization = result.metrics["quantization"]
    assert quantization["real_int8"] is False and quantization["mode"] == "power of two (simulated)"
    assert [row["name"] for row in quantization["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    weights = load_file(tmp_path / "model.simulated.safetensors")
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        weight = weights[f"{layer}.weight"].double()
        nonzero = weight[weight != 0].abs()
        assert nonzero.numel() > 0.5 * weight.numel()
        assert torch.equal(torch.log2(nonzero), torch.log2(nonzero).round())
        # At most 7 exponents per output channel (4 bits: a sign and 7 levels, or zero).
        for channel in weight.flatten(1):
            assert torch.log2(channel[channel != 0].abs()).unique().numel() <= 7
    # The packed file gives the same weights back.
    unpacked = load_packed(tmp_path / "model.packed.safetensors")
    assert all(torch.equal(unpacked[k], weights[k]) for k in weights)
    timings = result.metrics["latency"]["rows"]
    assert timings and all(row["ratio"] is None and row["verdict"] == "simulated" for row in timings)
    assert any("simulates quantization" in warning for warning in result.warnings)
