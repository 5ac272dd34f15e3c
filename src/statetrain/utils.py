"""Model utilities from the seed's training module: parameter counts and a printed summary.

`get_device` and `set_seed` are re-exported from `statetrain.loop` (not copied), so there
is one definition of how a device is picked and what a seed fixes.
"""

from __future__ import annotations

from torch import nn

from .loop import get_device, set_seed

__all__ = ["count_parameters", "get_device", "print_model_summary", "set_seed"]

RULE = 80


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts: how big the model is, and how much of it learns."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return total, trainable


def model_size_mb(model: nn.Module) -> float:
    """Memory of the parameters and buffers in MiB (what a checkpoint of the weights weighs)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1024**2


def print_model_summary(model: nn.Module) -> str:
    """Print the architecture, the parameter counts and the size; return the same text.

    Returning the text (as well as printing it) lets callers log it or put it in a report.
    """
    total, trainable = count_parameters(model)
    text = "\n".join(
        [
            "=" * RULE,
            "Model Summary",
            "=" * RULE,
            repr(model),
            "-" * RULE,
            f"Total parameters: {total:,}",
            f"Trainable parameters: {trainable:,}",
            f"Model size: {model_size_mb(model):.2f} MB",
            "=" * RULE,
        ]
    )
    print(text)
    return text
