"""Activation, Taylor and Slim pruners: each removes what its paper says it removes."""

import pytest
import torch
import torch.nn as nn

from compression_core.pruning import (
    ActivationAPoZRankPruner,
    ActivationMeanRankPruner,
    SlimPruner,
    TaylorFOWeightPruner,
)
from compression_core.speedup import ModelSpeedup
from tests.compression_core.pruning_fixtures import blob_data, dead_filters, loop_evaluator, small_cnn

CONV_CONFIG = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


def _graded_conv_model():
    """Conv 0's channel c outputs a scaled copy of the (positive) input, so its activations grow with c;
    channels 1, 4 and 6 are dead (always negative before ReLU)."""
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(1.0, 9.0).view(8, 1, 1, 1))
        model[0].bias.zero_()
        for dead in (1, 4, 6):
            model[0].weight[dead] = -1.0
    return model


def test_apoz_removes_the_channels_whose_activations_are_most_often_zero():
    # channel c computes x + b_c on inputs uniform in (-1, 1): it is zero (after ReLU) with probability
    # (1 - b_c) / 2, so the most negative biases (channels 0, 2, 5) have the highest APoZ
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 4))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.copy_(torch.tensor([-0.9, 0.5, -0.5, 0.9, 0.0, -0.2, 0.7, 0.3]))
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    evaluator = loop_evaluator((x, torch.zeros(64, dtype=torch.long)))
    _, masks = ActivationAPoZRankPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.375}], evaluator,
                                        training_steps=4).compress()
    assert dead_filters(masks["0"]["weight"]) == [0, 2, 5]
    assert masks["0"]["bias"].tolist() == [0, 1, 0, 1, 1, 0, 1, 1]


def test_mean_activation_removes_the_channels_of_smallest_mean():
    model = _graded_conv_model()
    x = torch.rand(64, 1, 8, 8)
    evaluator = loop_evaluator((x, torch.zeros(64, dtype=torch.long)))
    before = model[0].weight.detach().clone()
    _, masks = ActivationMeanRankPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5}], evaluator,
                                        training_steps=4).compress()
    # dead channels have mean 0, then the live ones in order of their scale: 0 (x1), 2 (x3)
    assert dead_filters(masks["0"]["weight"]) == [0, 1, 4, 6]
    # the statistics pass does not train
    assert torch.equal(model[0].weight.detach() * masks["0"]["weight"], before * masks["0"]["weight"])


def test_taylor_scores_are_accumulated_weight_times_gradient_squared():
    model = small_cnn()
    reference = small_cnn()
    x, y = blob_data()
    # lr 0: the weights stay put, so the pruner's four steps see the gradients computed here
    total = torch.zeros(16)
    for i in range(4):
        reference.zero_grad()
        nn.functional.cross_entropy(reference(x[i * 16 : i * 16 + 16]), y[i * 16 : i * 16 + 16]).backward()
        total += (reference[3].weight * reference[3].weight.grad).pow(2).flatten(1).sum(1).detach()
    pruner = TaylorFOWeightPruner(model, [{"op_names": ["3"], "sparse_ratio": 0.25}], loop_evaluator(lr=0.0),
                                  training_steps=4)
    _, masks = pruner.compress()
    assert dead_filters(masks["3"]["weight"]) == sorted(total.argsort()[:4].tolist())


def test_taylor_fine_grained_prunes_single_weights():
    model = small_cnn()
    _, masks = TaylorFOWeightPruner(model, [{"op_names": ["3"], "sparse_ratio": 0.5, "granularity": "fine_grained"}],
                                    loop_evaluator(), training_steps=2).compress()
    mask = masks["3"]["weight"]
    assert float(mask.mean()) == pytest.approx(0.5)
    assert not dead_filters(mask)  # scattered zeros, not whole filters


def test_slim_regularisation_shrinks_scales_and_removes_the_smallest():
    plain, slim = small_cnn(), small_cnn()
    evaluator = loop_evaluator(lr=0.05)
    evaluator.train(plain, max_steps=40)
    pruner = SlimPruner(slim, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}], evaluator, training_steps=40,
                        regular_scale=0.05)
    _, masks = pruner.compress()
    gammas_plain = torch.cat([plain[1].weight, plain[4].weight]).abs().detach()
    gammas_slim = torch.cat([slim[1].weight, slim[4].weight]).abs().detach()
    # the L1 penalty's gradient takes lr * regular_scale = 0.0025 off every |gamma| per step (40 steps, 24 scales)
    assert float(gammas_slim.sum()) < float(gammas_plain.sum()) - 0.9 * 24 * 40 * 0.0025
    # global ranking (NNI 2.x default): the 12 smallest |gamma| of all 24 go, wherever they are
    kept = torch.cat([masks["1"]["weight"], masks["4"]["weight"]]).bool()
    assert int((~kept).sum()) == 12
    assert gammas_slim[~kept].max() <= gammas_slim[kept].min()
    # the convolutions producing those channels are masked too, so speedup removes them
    assert dead_filters(masks["0"]["weight"]) == [i for i in range(8) if not kept[i]]
    assert dead_filters(masks["3"]["weight"]) == [i for i in range(16) if not kept[8 + i]]
    pruner.unwrap_model()
    ModelSpeedup(slim, torch.rand(1, 1, 8, 8), masks).speedup_model()
    assert slim[0].out_channels + slim[3].out_channels == 12
    assert slim(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def test_slim_normal_mode_prunes_each_layer_by_its_ratio():
    model = small_cnn()
    _, masks = SlimPruner(model, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.25}], loop_evaluator(),
                          training_steps=5, mode="normal").compress()
    assert int((masks["1"]["weight"] == 0).sum()) == 2 and int((masks["4"]["weight"] == 0).sum()) == 4


@pytest.mark.parametrize("cls, config", [
    (ActivationAPoZRankPruner, CONV_CONFIG),
    (ActivationMeanRankPruner, CONV_CONFIG),
    (TaylorFOWeightPruner, CONV_CONFIG),
    (SlimPruner, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}]),
])
def test_data_driven_pruners_refuse_to_run_without_data(cls, config):
    with pytest.raises(ValueError, match="needs data"):
        cls(small_cnn(), config)
    with pytest.raises(ValueError, match="TorchEvaluator"):
        cls(small_cnn(), config, evaluator=object())
    with pytest.raises(ValueError, match="training_steps"):
        cls(small_cnn(), config, loop_evaluator(), training_steps=0)


def test_activation_pruners_only_prune_output_channels():
    with pytest.raises(ValueError, match="granularity"):
        ActivationAPoZRankPruner(small_cnn(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5,
                                                "granularity": "fine_grained"}], loop_evaluator())
