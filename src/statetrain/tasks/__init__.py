"""The tasks one workflow trains: `task: frequency | vae | classifier` in the config.

This registry is importable without torch (the Snakefile reads it at parse time for the
frequency task); a batch task's module, which needs torch, is imported only when that task
is used. See `tasks/base.py` for the interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

TASK_NAMES = ("frequency", "vae", "classifier")
_BATCH = {"vae": ("vae", "VAETask"), "classifier": ("classifier", "ClassifierTask")}


@dataclass(frozen=True)
class TaskInfo:
    """What the workflow needs to know about a task before any job runs."""

    name: str
    monitor: str  # history key that picks the best epoch
    mode: str  # "min" or "max"
    selection_metric: str  # key of the frozen metrics that picks the best grid point
    figures: tuple[str, ...]  # per-dataset figures of the selected model
    training_defaults: Mapping[str, Any] = field(default_factory=dict)
    batch: bool = True


# The stateful frequency task: data.py (generator, FrequencyDataset), model.py (FrequencyLSTM),
# trainer.py (StatefulTrainer, the reference loop), native.py (its numba engine), window.py
# (whole-window curriculum), plots.graph1/graph2. It keeps its own trainer for speed.
FREQUENCY = TaskInfo(
    name="frequency",
    monitor="val_mse",
    mode="min",
    selection_metric="mse",
    figures=("graph1.png", "graph2.png"),
    batch=False,
)


def task_class(name: str) -> type:
    """The BatchTask subclass of a batch task (imports torch)."""
    if name not in _BATCH:
        raise ValueError(f"'{name}' is not a batch task; batch tasks: {', '.join(_BATCH)}")
    module, cls = _BATCH[name]
    return getattr(import_module(f".{module}", __name__), cls)


def task_info(name: str) -> TaskInfo:
    if name == "frequency":
        return FREQUENCY
    if name not in _BATCH:
        raise ValueError(f"unknown task '{name}'; known tasks: {', '.join(TASK_NAMES)}")
    cls = task_class(name)
    return TaskInfo(
        name=name,
        monitor=cls.monitor,
        mode=cls.mode,
        selection_metric=cls.selection_metric,
        figures=tuple(cls.figures),
        training_defaults=dict(cls.training_defaults),
    )


def get_task(name: str, spec: Mapping[str, Any], training: Mapping[str, Any] | None = None):
    """An instance of a batch task for one dataset scenario and one training section."""
    return task_class(name)(spec, training)
