import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compression_core import TorchEvaluator
from compression_core.evaluation import TensorDataEvaluator, distillation_loss, tensor_evaluator


def _data(n=96, features=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, classes, generator=g)
    return x, (x @ w).argmax(1)


def _loop_evaluator(optimizers, calls=None, **kwargs):
    x, y = _data()

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        if calls is not None:
            calls.append({"max_steps": max_steps, "max_epochs": max_epochs, "lr_schedulers": lr_schedulers})
        for _ in range(max_epochs or 100):  # ignores max_steps on purpose: the evaluator stops it
            for i in range(0, len(x), 16):
                optimizers.zero_grad()
                training_step((x[i:i + 16], y[i:i + 16]), model).backward()
                optimizers.step()
                if lr_schedulers is not None:
                    lr_schedulers.step()

    def training_step(batch, model):
        return F.cross_entropy(model(batch[0]), batch[1])

    def evaluating_func(model):
        return {"default": float((model(x).argmax(1) == y).float().mean()), "loss": 0.0}

    return TorchEvaluator(training_func, optimizers, training_step, evaluating_func=evaluating_func, **kwargs)


def test_train_stops_after_max_steps_even_if_the_loop_does_not():
    model = nn.Linear(6, 3)
    evaluator = _loop_evaluator(functools.partial(torch.optim.SGD, lr=0.1))
    before = model.weight.detach().clone()
    assert evaluator.train(model, max_steps=5) == 5
    assert not torch.equal(before, model.weight)
    assert evaluator.steps_done == 5


def test_loss_terms_and_step_hooks_see_every_step():
    model = nn.Linear(6, 3)
    seen = {"before": [], "after": 0, "terms": 0}

    def term(m):
        seen["terms"] += 1
        return 10.0 * m.weight.abs().sum()

    def before(m):
        seen["before"].append(m.weight.grad is not None)

    def after(m):
        seen["after"] += 1

    evaluator = _loop_evaluator(lambda p: torch.optim.SGD(p, lr=0.01))
    evaluator.train(model, max_steps=4, loss_terms=[term], before_step=[before], after_step=[after])
    assert seen == {"before": [True] * 4, "after": 4, "terms": 4}


def test_l1_loss_term_shrinks_weights():
    torch.manual_seed(0)
    plain, regularised = nn.Linear(6, 3), nn.Linear(6, 3)
    regularised.load_state_dict(plain.state_dict())
    evaluator = _loop_evaluator(lambda p: torch.optim.SGD(p, lr=0.05))
    evaluator.train(plain, max_steps=20)
    evaluator.train(regularised, max_steps=20, loss_terms=[lambda m: 0.5 * m.weight.abs().sum()])
    assert regularised.weight.abs().sum() < plain.weight.abs().sum()


def test_update_weights_false_only_gathers():
    model = nn.Linear(6, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = []
    evaluator = _loop_evaluator(lambda p: torch.optim.SGD(p, lr=0.5))
    evaluator.train(model, max_steps=3, before_step=[lambda m: grads.append(m.weight.grad.abs().sum())],
                    update_weights=False)
    assert len(grads) == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_optimizer_instance_is_rebuilt_for_a_copy_with_its_settings():
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.0},
                           {"params": model[2].parameters(), "lr": 0.1}], lr=0.5)
    evaluator = _loop_evaluator(opt)
    evaluator.bind_model(model)
    clone = copy.deepcopy(model)
    first_before = clone[0].weight.detach().clone()
    last_before = clone[2].weight.detach().clone()
    evaluator.train(clone, max_steps=3)
    assert torch.equal(clone[0].weight, first_before)          # lr 0 group kept its lr
    assert not torch.equal(clone[2].weight, last_before)
    assert torch.equal(model[2].weight, opt.param_groups[1]["params"][0])  # the user's optimizer is untouched


def test_scheduler_factories_reach_the_loop_and_instances_are_refused():
    calls = []
    evaluator = _loop_evaluator(lambda p: torch.optim.SGD(p, lr=0.1), calls,
                                lr_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    evaluator.train(nn.Linear(6, 3), max_steps=2)
    assert isinstance(calls[0]["lr_schedulers"], torch.optim.lr_scheduler.StepLR)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="factories"):
        _loop_evaluator(opt, lr_schedulers=torch.optim.lr_scheduler.StepLR(opt, 1))


def test_evaluate_uses_default_entry_and_restores_training_flag():
    model = nn.Linear(6, 3).train()
    value = _loop_evaluator(lambda p: torch.optim.SGD(p, lr=0.1)).evaluate(model)
    assert 0.0 <= value <= 1.0 and model.training


@pytest.mark.parametrize("kwargs, message", [
    ({"training_func": None}, "training_func"),
    ({"optimizers": [1]}, "optimizers"),
])
def test_bad_evaluator_arguments(kwargs, message):
    args = {"training_func": lambda *a, **k: None, "optimizers": lambda p: torch.optim.SGD(p, lr=0.1),
            "training_step": lambda b, m: m(b).sum()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TorchEvaluator(**args)
    with pytest.raises(ValueError, match="evaluating_func"):
        TorchEvaluator(lambda *a, **k: None, lambda p: torch.optim.SGD(p, lr=0.1), lambda b, m: 0).evaluate(
            nn.Linear(1, 1))


def test_tensor_evaluator_learns_labelled_data():
    train, test = _data(seed=0), _data(seed=0)
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    evaluator = tensor_evaluator(train, test, lr=0.05, batch_size=16)
    before = evaluator.evaluate(model)
    evaluator.train(model, max_epochs=15)
    assert evaluator.evaluate(model) > max(before, 0.8)


def test_distillation_on_unlabelled_data_moves_student_toward_teacher():
    x, _ = _data(n=256)
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    student = nn.Linear(6, 3)
    evaluator = TensorDataEvaluator((x, None), teacher=teacher, lr=0.02, batch_size=32, temperature=2.0)
    agreement_before = evaluator.evaluate(student)
    with torch.no_grad():
        loss_before = distillation_loss(student(x), teacher(x), 2.0)
    evaluator.train(student, max_epochs=20)
    with torch.no_grad():
        loss_after = distillation_loss(student(x), teacher(x), 2.0)
    assert loss_after < loss_before * 0.5
    assert evaluator.evaluate(student) > agreement_before
    # the teacher is a frozen copy: training the student never changes the original
    assert all(p.requires_grad for p in teacher.parameters())


def test_distillation_loss_is_zero_for_identical_logits():
    logits = torch.randn(4, 5)
    assert float(distillation_loss(logits, logits, 3.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"train_data": (torch.randn(4, 2), None)}, "teacher"),
    ({"alpha": 1.5}, "alpha"),
    ({"temperature": 0}, "temperature"),
    ({"train_data": (torch.randn(4, 2), torch.zeros(3, dtype=torch.long))}, "differ in length"),
    ({"optimizer": "lbfgs"}, "unknown optimizer"),
])
def test_tensor_evaluator_bad_input(kwargs, message):
    args = {"train_data": (torch.randn(4, 2), torch.zeros(4, dtype=torch.long))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TensorDataEvaluator(**args)
