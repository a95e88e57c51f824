"""Errors raised when a model file cannot be loaded or saved."""

from __future__ import annotations

__all__ = ["ModelFormatError", "PICKLE_REFUSED_MESSAGE", "TORCHSCRIPT_REFUSED_MESSAGE", "TORCH_EXPORT_REFUSED_MESSAGE"]


class ModelFormatError(ValueError):
    """A model file is not in a format Condense can (or will) load.

    The message is meant for the person who uploaded the file: it says what the
    file is, why it is refused and what to upload instead.

    Example::

        try:
            model = load_model("upload.bin")
        except ModelFormatError as exc:
            print(exc)      # shown as-is in the web form / API error
    """


_ADVICE = (
    "Export the model to ONNX, or upload its state_dict as safetensors with a built-in architecture."
)

PICKLE_REFUSED_MESSAGE = (
    "This file is a Python pickle (torch.save of a whole model); pickles can run arbitrary code, "
    "so Condense does not load them. " + _ADVICE
)

TORCHSCRIPT_REFUSED_MESSAGE = (
    "This file is a TorchScript archive (torch.jit.save), which is made of Python pickles and code; "
    "pickles can run arbitrary code, so Condense does not load them. " + _ADVICE
)

TORCH_EXPORT_REFUSED_MESSAGE = (
    "This file is a torch.export archive (.pt2), which contains Python pickles; pickles can run "
    "arbitrary code, so Condense does not load them. " + _ADVICE
)
