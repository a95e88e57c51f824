"""Fitting a dataset's samples to the model's input: same shape, images resized and converted, or reshaped.

Example::

    >>> check_input_fit([3, 32, 32], [1, 8, 8])   # images: resized and made grey
    >>> fit_inputs(torch.rand(5, 3, 32, 32), [1, 8, 8]).shape
    torch.Size([5, 1, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .formats import element_count

# Image-like samples (C x H x W) have one of these channel counts; grey <-> RGB
# is converted, the alpha channel is dropped.
IMAGE_CHANNELS = (1, 3, 4)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's convert("L")


def _fit_kind(sample_shape: list[int], input_shape: list[int]) -> str:
    if sample_shape == input_shape:
        return "same"
    if len(sample_shape) == 3 and len(input_shape) == 3 and sample_shape[0] in IMAGE_CHANNELS \
            and input_shape[0] in (1, 3):
        return "image"
    if element_count(sample_shape) == element_count(input_shape):
        return "reshape"
    raise ValueError(
        f"the dataset's samples have shape {sample_shape}, but the model takes {input_shape}: images "
        "(C x H x W with 1, 3 or 4 channels) are resized and converted grey <-> RGB for a 1- or 3-channel "
        f"model, other samples must hold as many values as the model's input ({element_count(sample_shape)} vs "
        f"{element_count(input_shape)})"
    )


def check_input_fit(sample_shape, input_shape) -> None:
    """Raise ``ValueError`` (naming both shapes) unless samples of ``sample_shape`` can feed the model.

    Equal shapes fit; images (C x H x W, 1/3/4 channels) fit any 1- or 3-channel
    image model (resized, grey <-> RGB, alpha dropped); any other shape fits
    when it holds the same number of values (reshaped, e.g. 64 features to
    1 x 8 x 8).

    Example::

        >>> check_input_fit([3, 32, 32], [1, 8, 8])   # resized and made grey
        >>> check_input_fit([10], [1, 8, 8])
        Traceback (most recent call last):
        ValueError: the dataset's samples have shape [10], but the model takes [1, 8, 8]: ...
    """
    _fit_kind([int(d) for d in sample_shape], [int(d) for d in input_shape])


def fit_inputs(inputs: torch.Tensor, input_shape) -> torch.Tensor:
    """Make a float batch ``N x *sample_shape`` into ``N x *input_shape`` (see :func:`check_input_fit`).

    Example::

        >>> fit_inputs(torch.rand(5, 3, 32, 32), [1, 8, 8]).shape
        torch.Size([5, 1, 8, 8])
    """
    input_shape = [int(d) for d in input_shape]
    kind = _fit_kind(list(inputs.shape[1:]), input_shape)
    if kind == "same":
        return inputs
    if kind == "reshape":
        return inputs.reshape(len(inputs), *input_shape)
    channels, height, width = input_shape
    if inputs.shape[1] == 4:
        inputs = inputs[:, :3]  # alpha
    if inputs.shape[1] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=inputs.dtype).view(1, 3, 1, 1)
        inputs = (inputs * weights).sum(dim=1, keepdim=True)
    elif inputs.shape[1] == 1 and channels == 3:
        inputs = inputs.expand(-1, 3, -1, -1)
    if tuple(inputs.shape[2:]) != (height, width):
        inputs = F.interpolate(inputs, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return inputs.contiguous()
