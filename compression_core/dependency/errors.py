"""Errors raised by the channel analysis and by speedup."""

from __future__ import annotations


class SpeedupError(ValueError):
    """A model, dummy input, mask or plan that speedup cannot work with.

    Raised before the model is modified: when it is raised, the user's model
    is unchanged.
    """
