"""statetrain: train stateful recurrent models one time step at a time, honestly evaluated.

Names are imported lazily (PEP 562): the Snakefile imports `statetrain.config` for every job,
and that should not pay for importing torch.
"""

from importlib import import_module
from typing import Any

# The one place the version is written: pyproject.toml reads it (setuptools `attr:`, a static
# read that imports nothing) and `statetrain --version` prints it.
__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_checkpoint_file": "checkpoint",
    "save_checkpoint_file": "checkpoint",
    "ConfigError": "config",
    "load_config": "config",
    "validate_config": "config",
    "FrequencyDataset": "tasks.frequency.data",
    "generate_dataset": "tasks.frequency.data",
    "regression_metrics": "metrics",
    "FrequencyLSTM": "tasks.frequency.model",
    "load_model": "checkpoint",
    "run": "runner",
    "StatefulTrainer": "tasks.frequency.trainer",
    "TrainingError": "loop",
    "get_device": "loop",
    "predict": "tasks.frequency.trainer",
    "set_seed": "loop",
    "DatasetError": "validation",
    "validate_dataset": "tasks.frequency.validation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'statetrain' has no attribute {name!r}")
