"""AGP, Lottery Ticket and ADMM: schedules, rewinding and convergence."""

import pytest
import torch

from compression_core.pruning import ADMMPruner, AGPPruner, LotteryTicketPruner
from compression_core.pruning.iterative import agp_ratio, lottery_ratio
from tests.compression_core.pruning_fixtures import dead_filters, loop_evaluator, small_cnn, sparsity


def test_agp_sparsity_follows_the_cubic_schedule_step_by_step():
    model = small_cnn()
    pruner = AGPPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.75}], loop_evaluator(),
                       total_iteration=4, training_steps=3)
    _, masks = pruner.compress()
    assert [h["step"] for h in pruner.history] == [1, 2, 3, 4]
    for record in pruner.history:
        target = agp_ratio(0.75, record["step"], 4)
        assert record["target"]["3"] == pytest.approx(target)
        # 16 filters: NNI rounds the pruned count down
        assert record["sparsity"]["3"] == pytest.approx(int(16 * target) / 16)
        assert record["sparsity"]["0"] == pytest.approx(int(8 * target) / 8)
    assert [round(h["target"]["3"], 4) for h in pruner.history] == [0.4336, 0.6562, 0.7383, 0.75]
    assert len(dead_filters(masks["3"]["weight"])) == 12


def test_agp_over_another_base_pruner_and_bad_base():
    model = small_cnn()
    pruner = AGPPruner(model, [{"op_names": ["3"], "sparse_ratio": 0.5}], loop_evaluator(), total_iteration=2,
                       training_steps=2, pruning_algorithm="LevelPruner")
    _, masks = pruner.compress()
    assert sparsity(masks["3"]["weight"]) == pytest.approx(0.5, abs=1e-3)
    assert not dead_filters(masks["3"]["weight"])
    with pytest.raises(ValueError, match="unknown pruning algorithm"):
        AGPPruner(small_cnn(), [{"op_names": ["3"], "sparse_ratio": 0.5}], loop_evaluator(),
                  pruning_algorithm="MagicPruner")
    with pytest.raises(ValueError, match="pruning_params"):
        AGPPruner(small_cnn(), [{"op_names": ["3"], "sparse_ratio": 0.5}], loop_evaluator(),
                  pruning_params={"nonsense": 1})


def test_lottery_ticket_rewinds_the_survivors_to_their_initial_values():
    model = small_cnn()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = LotteryTicketPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.75}], loop_evaluator(),
                                 total_iteration=2, training_steps=5)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    for name in ("0", "3"):
        weight, mask = model.get_submodule(name).weight.detach(), masks[name]["weight"]
        assert torch.equal(weight, initial[f"{name}.weight"] * mask)
        assert sparsity(mask) == pytest.approx(0.75, abs=0.01)
    # each round removed the same fraction of what was left: 50%, then 50% of the rest
    assert [round(h["target"]["3"], 4) for h in pruner.history] == [0.5, 0.75]
    assert lottery_ratio(0.75, 1, 2) == pytest.approx(0.5)


def test_lottery_ticket_masks_come_from_trained_weights():
    model = small_cnn()
    untrained = small_cnn()
    pruner = LotteryTicketPruner(model, [{"op_names": ["3"], "sparse_ratio": 0.5}], loop_evaluator(lr=0.5),
                                 total_iteration=1, training_steps=20)
    _, masks = pruner.compress()
    from compression_core.pruning import LevelPruner

    _, untrained_masks = LevelPruner(untrained, [{"op_names": ["3"], "sparse_ratio": 0.5}]).compress()
    assert not torch.equal(masks["3"]["weight"], untrained_masks["3"]["weight"])


def test_admm_pulls_weights_onto_the_sparse_set():
    model = small_cnn()
    pruner = ADMMPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], loop_evaluator(lr=0.05),
                        iterations=6, training_steps=10, rho=1.0)
    _, masks = pruner.compress()
    residuals = [h["3"] for h in pruner.history]
    assert len(residuals) == 6
    assert residuals[-1] < 0.5 * residuals[0]
    assert sparsity(masks["3"]["weight"]) == pytest.approx(0.5, abs=1e-3)


def test_admm_channel_granularity_and_bad_arguments():
    model = small_cnn()
    _, masks = ADMMPruner(model, [{"op_names": ["3"], "sparse_ratio": 0.5, "granularity": "out_channel"}],
                          loop_evaluator(), iterations=2, training_steps=2).compress()
    assert len(dead_filters(masks["3"]["weight"])) == 8
    with pytest.raises(ValueError, match="rho"):
        ADMMPruner(small_cnn(), [{"op_names": ["3"], "sparse_ratio": 0.5}], loop_evaluator(), rho=0)
    with pytest.raises(ValueError, match="iterations"):
        ADMMPruner(small_cnn(), [{"op_names": ["3"], "sparse_ratio": 0.5}], loop_evaluator(), iterations=0)
    with pytest.raises(ValueError, match="needs data"):
        AGPPruner(small_cnn(), [{"op_names": ["3"], "sparse_ratio": 0.5}])
