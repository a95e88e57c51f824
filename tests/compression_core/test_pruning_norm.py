import pytest
import torch
import torch.nn as nn

from compression_core.pruning import L1NormPruner, LevelPruner


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))


def test_level_pruner_zeroes_exactly_the_smallest_weights():
    model = _conv_model()
    weight = model[4].weight.detach().clone()
    pruner = LevelPruner(model, [{"op_types": ["Linear"], "sparse_ratio": 0.75}])
    _, masks = pruner.compress()
    mask = masks["4"]["weight"]
    assert mask.shape == weight.shape
    assert int(mask.sum()) == weight.numel() - int(weight.numel() * 0.75)
    kept = weight.abs()[mask.bool()]
    dropped = weight.abs()[~mask.bool()]
    assert kept.min() >= dropped.max()


def test_l1_pruner_removes_filters_of_smallest_l1_norm():
    model = _conv_model()
    norms = model[0].weight.detach().abs().sum(dim=(1, 2, 3))
    _, masks = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparsity": 0.5}]).compress()
    kept = masks["0"]["weight"].flatten(1).bool().all(1)
    assert int(kept.sum()) == 4
    assert set(norms.argsort(descending=True)[:4].tolist()) == set(kept.nonzero().flatten().tolist())
    # whole filters: every weight of a pruned filter is masked, and its bias too
    assert masks["0"]["weight"][~kept].abs().sum() == 0
    assert torch.equal(masks["0"]["bias"], kept.float())
    assert int(masks["2"]["weight"].flatten(1).bool().all(1).sum()) == 3


def test_masks_are_applied_during_forward_and_kept_after_unwrap():
    model = _conv_model()
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparsity": 0.5}])
    _, masks = pruner.compress()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training would touch pruned weights; the hook re-masks them
    model(torch.randn(2, 3, 8, 8))
    pruned = ~masks["0"]["weight"].bool()
    assert model[0].weight[pruned].abs().sum() == 0
    pruner.unwrap_model()
    assert not model[0]._forward_pre_hooks
    assert model[0].weight[pruned].abs().sum() == 0


def test_dependency_group_members_lose_the_same_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1))
    torch.manual_seed(1)
    config = [
        {"op_names": ["0"], "sparse_ratio": 0.5, "dependency_group_id": 1},
        {"op_names": ["1"], "sparse_ratio": 0.5, "dependency_group_id": 1},
    ]
    _, masks = L1NormPruner(model, config).compress()
    assert torch.equal(masks["0"]["bias"], masks["1"]["bias"])
    assert int(masks["0"]["bias"].sum()) == 4


def test_pruner_that_selects_nothing_says_so():
    with pytest.raises(ValueError, match="selects no layer"):
        L1NormPruner(_conv_model(), [{"op_types": ["BatchNorm2d"], "sparsity": 0.5}])
