"""Model inputs batch by batch (calibration and tracing), and the fit/validation holdout."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from compression_core.data import NO_DATA_MESSAGE, first_batch, holdout, iter_batches


def test_iter_batches_splits_tensors_and_reads_loader_batches():
    assert [args[0].shape[0] for args in iter_batches(torch.rand(10, 3), batch_size=4)] == [4, 4, 2]
    loader = [(torch.rand(2, 3), torch.tensor([0, 1])), ((torch.rand(2, 3), torch.rand(2, 5)), torch.tensor([1, 0]))]
    batches = list(iter_batches(loader))
    assert [len(args) for args in batches] == [1, 2]
    assert len(list(iter_batches(torch.rand(10, 3), batch_size=2, max_batches=3))) == 3


@pytest.mark.parametrize("data, message", [
    (None, "none was given"),
    (torch.zeros(0, 3), "empty tensor"),
    ([], "yielded no batches"),
    ({"x": torch.zeros(1)}, "not dict"),
    ([{"x": torch.zeros(1)}], "not dicts"),
])
def test_iter_batches_says_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        list(iter_batches(data))


def test_first_batch_from_data_or_the_evaluators_dummy_input():
    assert first_batch(torch.rand(10, 3), batch_size=4)[0].shape == (4, 3)
    dummy = torch.rand(1, 3)
    assert first_batch(None, SimpleNamespace(dummy_input=dummy))[0] is dummy
    with pytest.raises(ValueError, match="no dummy_input"):
        first_batch(None, SimpleNamespace(dummy_input=None))
    with pytest.raises(ValueError) as raised:
        first_batch()
    assert str(raised.value) == NO_DATA_MESSAGE


def test_holdout_cuts_the_last_fifth_and_keeps_one_row_each_side():
    fit, validation = holdout((torch.rand(10, 3), torch.arange(10)))
    assert fit[1].tolist() == list(range(8)) and validation[1].tolist() == [8, 9]
    fit, validation = holdout((torch.rand(2, 3), None), fraction=0.01)
    assert (len(fit[0]), len(validation[0])) == (1, 1) and fit[1] is None and validation[1] is None
