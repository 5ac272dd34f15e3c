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


def model_from_args(
    task: str, args: Mapping[str, Any], training: Mapping[str, Any] | None = None
) -> Any:
    """Rebuild a trained model's architecture from a checkpoint's plain `model_args` (data,
    never code), for any task: what evaluate, predict, export and plots load."""
    if task == "frequency":
        from ..model import ExpertLSTM, FrequencyLSTM

        if "experts" in args:
            experts = args["experts"]
            if not isinstance(experts, list) or not all(isinstance(a, Mapping) for a in experts):
                raise TypeError("model_args.experts must be a list of mappings")
            return ExpertLSTM([FrequencyLSTM(**_lstm_args(a)) for a in experts])
        return FrequencyLSTM(**_lstm_args(args))
    return get_task(task, {}, training).model_from_args(args)


_LSTM_ARGS = {"input_size": (1, 100_000), "hidden_size": (1, 4096), "num_layers": (1, 16)}


def _lstm_args(args: Mapping[str, Any]) -> dict[str, int]:
    """A FrequencyLSTM's arguments, each a whole number in range (a hostile checkpoint's
    `hidden_size: 1e9` must fail here, not in the allocator)."""
    unknown = set(args) - set(_LSTM_ARGS) - {"forget_bias"}
    if unknown:
        raise TypeError(f"unknown model_args {sorted(unknown)}")
    out = {}
    for key, (lo, hi) in _LSTM_ARGS.items():
        value = args.get(key, {"input_size": 5, "hidden_size": 64, "num_layers": 1}[key])
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise TypeError(f"model_args.{key} = {value!r} is not a whole number in [{lo}, {hi}]")
        out[key] = value
    return out
