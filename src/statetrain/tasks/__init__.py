"""The tasks one workflow trains: `task: frequency | vae | classifier` in the config.

Each task is one module holding a `Task` subclass (`tasks/base.py` is the contract): how its
data is read and checked, how its trainer is built, how its frozen model is scored, its
figures and how its model is rebuilt from a checkpoint. The registry below is all the rest of
the code knows of the tasks: adding a task is a module plus a line here (README, "How to add
a task").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

# name → (module under statetrain.tasks, class)
_TASKS = {
    "frequency": ("frequency", "FrequencyTask"),
    "vae": ("vae", "VAETask"),
    "classifier": ("classifier", "ClassifierTask"),
    "sequence": ("sequence", "SequenceTask"),
}
TASK_NAMES = tuple(_TASKS)


@dataclass(frozen=True)
class TaskInfo:
    """What the workflow needs to know about a task before any job runs."""

    name: str
    monitor: str  # history key that picks the best epoch
    mode: str  # "min" or "max"
    selection_metric: str  # key of the frozen metrics that picks the best grid point
    figures: tuple[str, ...]  # per-dataset figures of the selected model
    batch: bool = True  # a BatchTask: the workflow's generic figure rule (plot_task)
    stateful: bool = False  # trained step by step with the state carried (Task.stateful)
    split_suffix: str = "npz"  # the prepared split files' extension


def task_class(name: str) -> type:
    """The Task subclass registered under `name`."""
    if name not in _TASKS:
        raise ValueError(f"unknown task '{name}'; known tasks: {', '.join(TASK_NAMES)}")
    module, cls = _TASKS[name]
    return getattr(import_module(f".{module}", __name__), cls)


def task_info(name: str) -> TaskInfo:
    from .base import BatchTask

    cls = task_class(name)
    return TaskInfo(
        name=name,
        monitor=cls.monitor,
        mode=cls.mode,
        selection_metric=cls.selection_metric,
        figures=tuple(cls.figures),
        batch=issubclass(cls, BatchTask),
        stateful=bool(cls.stateful),
        split_suffix=cls.split_suffix,
    )


def get_task(name: str, spec: Mapping[str, Any], training: Mapping[str, Any] | None = None):
    """An instance of a task for one dataset scenario and one training section."""
    return task_class(name)(spec, training)
