import pytest
import torch.nn as nn

from compression_core.config import canonicalize_config_list, select_modules


def _model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8, 10), nn.Linear(10, 2)
    )


def test_sparsity_alias_becomes_sparse_ratio():
    assert canonicalize_config_list([{"op_types": ["Conv2d"], "sparsity": 0.3}]) == [
        {"op_types": ["Conv2d"], "sparse_ratio": 0.3}
    ]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"op_types": ["Conv2d"], "sparsty": 0.5}, "unknown key 'sparsty'"),
        ({"op_types": ["Conv2d"], "sparse_ratio": 1.0}, "must be in [0, 1)"),
        ({"op_types": ["Conv2d"], "sparse_ratio": -0.1}, "must be in [0, 1)"),
        ({"op_types": ["Conv2d"], "sparse_ratio": "half"}, "must be a number"),
        ({"sparse_ratio": 0.5}, "select layers"),
        ({"op_types": ["Conv2d"]}, "say how much to prune"),
        ({"op_types": "Conv2d", "sparsity": 0.5, "sparse_ratio": 0.5}, "only one of"),
        ({"op_names_re": ["("], "sparsity": 0.5}, "bad regular expression"),
    ],
)
def test_bad_entries_name_the_problem(entry, message):
    with pytest.raises(ValueError) as info:
        canonicalize_config_list([entry])
    assert message in str(info.value)


def test_not_a_list_is_refused():
    with pytest.raises(ValueError, match="list of dicts"):
        canonicalize_config_list({"op_types": ["Conv2d"]})


def test_selection_by_type_name_regex_and_exclusion():
    model = _model()
    assert sorted(select_modules(model, [{"op_types": ["Conv2d"], "sparsity": 0.5}])) == ["0", "2"]
    assert sorted(select_modules(model, [{"op_types": ["default"], "sparsity": 0.5}])) == ["0", "2", "4", "5"]
    selected = select_modules(model, [{"op_names_re": [r"[45]"], "sparsity": 0.2, "exclude_op_names": ["5"]}])
    assert sorted(selected) == ["4"]
    selected = select_modules(
        model,
        [{"op_types": ["Conv2d", "Linear"], "sparsity": 0.5}, {"op_names": ["5"], "exclude": True}],
    )
    assert sorted(selected) == ["0", "2", "4"]


def test_later_entries_override_earlier_ones():
    selected = select_modules(
        _model(), [{"op_types": ["Conv2d"], "sparsity": 0.5}, {"op_names": ["2"], "sparse_ratio": 0.8}]
    )
    assert selected["0"]["sparse_ratio"] == 0.5
    assert selected["2"]["sparse_ratio"] == 0.8


def test_op_name_that_matches_no_layer_is_an_error():
    with pytest.raises(ValueError, match="'conv9' matches no layer"):
        select_modules(_model(), [{"op_names": ["conv9"], "sparsity": 0.5}])


def test_op_name_of_unsupported_type_is_an_error():
    with pytest.raises(ValueError, match="is a ReLU"):
        select_modules(_model(), [{"op_names": ["1"], "sparsity": 0.5}], supported_types=(nn.Conv2d,))
