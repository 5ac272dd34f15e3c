"""Optimizers and learning-rate schedulers from a `training` config section, for every task.

The trainer owns the optimizer step; these only build what it steps, so that one config key
(`training.optimizer`, `training.scheduler`) means the same thing whatever the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def make_optimizer(training: Mapping[str, Any], params: Any) -> torch.optim.Optimizer:
    name, lr, wd = training["optimizer"], training["lr"], training["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=training["momentum"], weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, momentum=training["momentum"], weight_decay=wd)


def make_scheduler(training: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """Stepped once per epoch (plateau: on the monitored frozen metric)."""
    sch = training["scheduler"]
    kind = sch["type"]
    if kind == "none":
        return None
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=training["monitor_mode"],
            factor=sch["factor"],
            patience=sch["patience"],
            min_lr=sch["min_lr"],
        )
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, sch["step_size"], gamma=sch["gamma"])
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=sch["t_max"] or training["epochs"], eta_min=sch["min_lr"]
    )
