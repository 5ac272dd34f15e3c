"""statetrain: train stateful recurrent models one time step at a time, honestly evaluated."""

__version__ = "0.1.0"

from .checkpoint import CheckpointError, load_checkpoint_file, save_checkpoint_file
from .config import ConfigError, load_config, validate_config
from .data import FrequencyDataset, generate_dataset
from .metrics import regression_metrics
from .model import FrequencyLSTM
from .runner import load_model, train_run
from .trainer import StatefulTrainer, TrainingError, get_device, predict, set_seed
from .validation import DatasetError, validate_dataset

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "FrequencyDataset",
    "FrequencyLSTM",
    "StatefulTrainer",
    "TrainingError",
    "__version__",
    "generate_dataset",
    "get_device",
    "load_checkpoint_file",
    "load_config",
    "load_model",
    "predict",
    "regression_metrics",
    "save_checkpoint_file",
    "set_seed",
    "train_run",
    "validate_config",
    "validate_dataset",
]
