import pytest
import torch
import torch.nn as nn

from compression_core.pruning import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner


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


def test_l2_pruner_ranks_by_l2_norm_where_l1_disagrees():
    conv = nn.Conv2d(1, 2, (1, 4), bias=False)
    with torch.no_grad():
        conv.weight[0] = torch.tensor([[[1.0, 1.0, 1.0, 1.0]]])  # L1 4, L2 2
        conv.weight[1] = torch.tensor([[[3.0, 0.0, 0.0, 0.0]]])  # L1 3, L2 3
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    _, l1 = L1NormPruner(nn.Sequential(conv), config).compress()
    _, l2 = L2NormPruner(nn.Sequential(conv), config).compress()
    assert l1["0"]["weight"].flatten(1).any(1).tolist() == [True, False]
    assert l2["0"]["weight"].flatten(1).any(1).tolist() == [False, True]


def test_fpgm_removes_the_filters_nearest_the_geometric_median():
    conv = nn.Conv2d(1, 5, 1, bias=False)
    with torch.no_grad():
        # four filters around the origin and one at the centre: the centre one is the median and goes first,
        # though its norm is not the smallest of all
        conv.weight.view(5)[:] = torch.tensor([-2.0, -1.0, 0.5, 1.0, 2.0])
    _, masks = FPGMPruner(nn.Sequential(conv), [{"op_types": ["Conv2d"], "sparse_ratio": 0.2}]).compress()
    assert masks["0"]["weight"].flatten().tolist() == [1, 1, 0, 1, 1]
    distance_sums = [sum(abs(a - b) for b in (-2, -1, 0.5, 1, 2)) for a in (-2, -1, 0.5, 1, 2)]
    assert min(range(5), key=distance_sums.__getitem__) == 2


def test_in_channel_granularity_masks_columns():
    model = _conv_model()
    _, masks = L1NormPruner(model, [{"op_names": ["2"], "sparse_ratio": 0.5, "granularity": "in_channel"}]).compress()
    mask = masks["2"]["weight"]
    columns = mask.transpose(0, 1).flatten(1).any(1)
    assert int(columns.sum()) == 4 and "bias" not in masks["2"]
    norms = model[2].weight.detach().abs().transpose(0, 1).flatten(1).sum(1)
    assert set(norms.argsort(descending=True)[:4].tolist()) == set(columns.nonzero().flatten().tolist())


def test_block_granularity_masks_whole_blocks():
    model = _conv_model()
    _, masks = LevelPruner(model, [{"op_names": ["4"], "sparse_ratio": 0.5, "granularity": [1, 8]}]).compress()
    blocks = masks["4"]["weight"].view(5, 12, 8)
    assert set(blocks.sum(-1).unique().tolist()) == {0.0, 8.0}  # all or nothing per block
    assert float(masks["4"]["weight"].mean()) == pytest.approx(0.5, abs=1 / 60)
    with pytest.raises(ValueError, match="does not divide"):
        LevelPruner(_conv_model(), [{"op_names": ["4"], "sparse_ratio": 0.5, "granularity": [1, 7]}])


def test_level_balanced_mode_prunes_every_block_equally():
    model = _conv_model()
    _, masks = LevelPruner(model, [{"op_names": ["4"], "sparse_ratio": 0.5}], mode="balance",
                           balance_gran=[4]).compress()
    weight = model[4].weight.detach().abs().view(5, 24, 4)
    mask = masks["4"]["weight"].view(5, 24, 4).bool()
    assert mask.sum(-1).unique().tolist() == [2]  # 2 of every 4
    # within each block the kept ones are the largest
    assert bool((weight.masked_fill(~mask, float("inf")).min(-1).values
                 >= weight.masked_fill(mask, -1.0).max(-1).values).all())
    with pytest.raises(ValueError, match="balance_gran"):
        LevelPruner(_conv_model(), [{"op_names": ["4"], "sparse_ratio": 0.5}], mode="balance")
    with pytest.raises(ValueError, match="does not divide"):
        LevelPruner(_conv_model(), [{"op_names": ["4"], "sparse_ratio": 0.5}], mode="balance", balance_gran=[7])


def test_global_ranking_spends_one_budget_across_layers():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(4, 8))
    with torch.no_grad():
        model[0].weight.fill_(1.0)   # strong rows
        model[1].weight.fill_(0.1)   # weak rows
        model[1].weight[0] = 5.0     # one strong row in the weak layer
    config = [{"op_types": ["Linear"], "sparse_ratio": 0.5, "global_group_id": "g"}]
    _, masks = L1NormPruner(model, config).compress()
    # the budget is 8 of the 16 rows: the 7 weak rows, then the weakest row of layer 0 (the strong row of
    # layer 1 outranks every row of layer 0)
    assert masks["1"]["bias"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert int(masks["0"]["bias"].sum()) == 7
    # max_sparse_ratio caps a layer; the rest of the budget comes from the other
    capped = [{"op_types": ["Linear"], "sparse_ratio": 0.5, "global_group_id": "g", "max_sparse_ratio": 0.5}]
    _, masks = L1NormPruner(model, capped).compress()
    assert int(masks["1"]["bias"].sum()) == 4 and int(masks["0"]["bias"].sum()) == 4


def test_non_channel_pruners_refuse_attention_and_dependency_groups_need_channels():
    model = nn.Sequential(nn.Linear(4, 8))
    with pytest.raises(ValueError, match="granularity"):
        FPGMPruner(model, [{"op_types": ["Linear"], "sparse_ratio": 0.5, "granularity": "fine_grained"}])
    with pytest.raises(ValueError, match="dependency_group_id needs a channel granularity"):
        LevelPruner(model, [{"op_types": ["Linear"], "sparse_ratio": 0.5, "dependency_group_id": 1}])
    attention = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="cannot prune attention"):
        FPGMPruner(attention, [{"op_types": ["MultiheadAttention"], "sparse_ratio": 0.5}])
