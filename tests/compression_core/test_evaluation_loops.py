"""The one training loop and the one inference loop: batches, shuffles, stops, devices, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compression_core.evaluation import accuracy, output_logits, predict_logits, train_loop


def _step(batch, model):
    return F.cross_entropy(model(batch[0]), batch[1])


class _Recorder(nn.Module):
    """A linear layer that records the batch sizes and training flags it sees."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.seen: list[tuple[int, bool]] = []

    def forward(self, x):
        self.seen.append((len(x), self.training))
        return self.linear(x)


def test_train_loop_skips_a_last_batch_of_one_and_counts_steps():
    model = _Recorder()
    x, y = torch.randn(33, 4), torch.randint(0, 3, (33,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = train_loop(model, x, y, _step, optimizer, batch_size=16, max_epochs=2)
    assert steps == 4
    assert model.seen == [(16, True)] * 4


def test_train_loop_stops_at_max_steps_mid_epoch_and_needs_a_bound():
    model = _Recorder()
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert train_loop(model, x, y, _step, optimizer, batch_size=8, max_steps=3) == 3
    assert train_loop(model, x, y, _step, optimizer, batch_size=8, max_epochs=1, max_steps=100) == 5
    with pytest.raises(ValueError, match="max_epochs or max_steps"):
        train_loop(model, x, y, _step, optimizer, batch_size=8)


def test_train_loop_is_repeatable_on_a_seed_and_leaves_the_global_rng_alone():
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))

    def trained(seed):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        train_loop(model, x, y, _step, optimizer, batch_size=8, seed=seed, max_epochs=2)
        return model.weight.detach().clone()

    torch.manual_seed(5)
    expected = torch.rand(1)
    first = trained(3)
    assert torch.equal(first, trained(3))
    assert not torch.equal(first, trained(4))
    torch.manual_seed(5)
    trained(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), expected)


def test_train_loop_passes_none_labels_for_unlabelled_data():
    seen = []
    model = nn.Linear(4, 2)

    def step(batch, trained):
        seen.append(batch[1])
        return trained(batch[0]).pow(2).mean()

    train_loop(model, torch.randn(10, 4), None, step, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=5,
               max_epochs=1)
    assert seen == [None, None]


def test_predict_logits_batches_restores_mode_and_returns_float32_cpu():
    model = _Recorder().train()
    logits = predict_logits(model, torch.randn(600, 4))
    assert logits.shape == (600, 3) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert model.seen == [(256, False), (256, False), (88, False)]
    assert model.training
    assert not logits.requires_grad


def test_predict_logits_takes_any_callable_and_its_logits():
    logits = predict_logits(lambda x: {"logits": x.double() * 2, "other": x}, torch.ones(5, 3), batch_size=2)
    assert logits.dtype == torch.float32 and torch.equal(logits, torch.full((5, 3), 2.0))
    assert torch.equal(predict_logits(lambda x: (x, "extra"), torch.ones(2, 3)), torch.ones(2, 3))
    with pytest.raises(ValueError, match="no inputs"):
        predict_logits(nn.Identity(), torch.ones(0, 3))


def test_accuracy_and_output_logits():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(logits, torch.tensor([1, 1, 1, 0])) == 0.75
    assert accuracy(logits, logits.argmax(dim=1)) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(logits, torch.tensor([1]))
    assert output_logits((torch.ones(1), torch.zeros(1))).item() == 1.0
    with pytest.raises(TypeError, match="class scores"):
        output_logits("text")
