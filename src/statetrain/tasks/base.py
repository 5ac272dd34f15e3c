"""The task interface: what a task is, so that one workflow trains all of them.

A task is one module (the data, the model, the loss, the frozen evaluation and its metrics,
the figures) plus one config section (`data:` for the task, the task's `training:` keys). The
workflow's rules (generate → validate → train → select → plot) and everything around a run
(checkpoints, resume, grids, early stopping, schedulers, loggers) are shared.

Two kinds of task exist:

* the frequency task (`statetrain.tasks.frequency`): a stateful LSTM trained one time step at
  a time on the carried state, with its own native engine (`StatefulTrainer`);
* batch tasks (`BatchTask` below, e.g. `vae`, `classifier`): independent samples trained in
  shuffled mini-batches by `BatchTrainer` (`statetrain.batch`).

A batch task's splits are dicts of named arrays stored as `.npz` files (never pickled). All
three splits (train/validation/test) come from `make_splits`, deterministically: generated
from the config's seed, or read from a user's file and split with a fixed seed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..io import write_npz
from ..validation import DatasetError

SPLITS = ("train", "validation", "test")
Arrays = dict[str, np.ndarray]


class Task:
    """What the one runner (`statetrain.runner.run`) asks of every task.

    The runner owns everything around a run: the lock, seeding, the identity hash, resume
    from last.pth, SIGTERM, callbacks and loggers, the NaN guard and the atomic outputs. A
    task supplies its data (read and checked), a trainer whose epoch it defines, and its
    frozen scores. `spec` is the dataset scenario (the task's `data` keys, defaults filled);
    `training` is the validated `training` section of one grid point.
    """

    name: ClassVar[str] = ""
    # What decides the best epoch (a key of the per-epoch history) and the best grid point
    # (a key of the frozen metrics' "overall" dict), with its direction.
    monitor: ClassVar[str] = "val_loss"
    selection_metric: ClassVar[str] = "loss"
    mode: ClassVar[str] = "min"
    # The figure files the task's plot rule writes per dataset (names only).
    figures: ClassVar[tuple[str, ...]] = ()
    # The data files `statetrain evaluate/predict/export` accept (by suffix); empty: the split
    # files' own suffix only.
    data_suffixes: ClassVar[tuple[str, ...]] = ()
    # Trained one time step at a time with the state carried (the reference loop, TBPTT,
    # window training): the stateful training keys (tbptt_steps, engine, ...) are part of its
    # runs' identity, the mini-batch keys (batch_size, ...) are not; the reverse otherwise.
    stateful: ClassVar[bool] = False
    # The extension of the task's prepared split files under results/data/.
    split_suffix: ClassVar[str] = "npz"

    def __init__(self, spec: Mapping[str, Any], training: Mapping[str, Any] | None = None):
        from ..config import training_defaults

        self.spec = dict(spec)
        # The schema's defaults under the given values: a task built by hand or from a
        # checkpoint reads the same values as one built from a validated config.
        self.training = {**training_defaults(self.name), **dict(training or {})}

    # ---------------------------------------------------------------- data
    @classmethod
    def check_spec(cls, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """A scenario's values that the schema cannot check one key at a time (sums,
        combinations); ConfigError naming dataset `name`, before any job. Returns the spec
        (a task may normalise values, e.g. an angle given as 'pi/4')."""
        from ..config import ConfigError

        split = spec.get("split")
        if isinstance(split, Mapping) and split.get("validation", 0) + split.get("test", 0) >= 0.9:
            raise ConfigError(
                f"dataset '{name}': split.validation + split.test = "
                f"{split['validation'] + split['test']:.2f} leaves (almost) nothing to train "
                "on; keep their sum below 0.9."
            )
        return spec

    def user_files(self) -> dict[str, str]:
        """Split files the user gives that are used as they are (no prepared copy)."""
        return {}

    def write_split(self, split: str, out: str | Path) -> str:
        """Generate (or read and split the user's data) and write one split to `out`
        atomically; return a one-line description for the log."""
        raise NotImplementedError

    def check_split(self, path: str | Path) -> dict[str, Any]:
        """Run every check on one split file; the JSON-able report, or DatasetError."""
        raise NotImplementedError

    def read_split(self, path: str | Path) -> Any:
        """Read one split file and run every check on it (DatasetError naming the problem)."""
        raise NotImplementedError

    def build_trainer(
        self,
        splits: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any],
        callbacks: list,
        progress: bool = False,
    ) -> Any:
        """A fresh trainer (an `EpochLoop`) built from the random seed: model, optimizer,
        scheduler."""
        raise NotImplementedError

    def score(self, trainer: Any, splits: Mapping[str, Any]) -> dict[str, Any]:
        """Frozen metrics of the trainer's current (best) model: ``{"validation": {"overall":
        {...}, ...}, "test": {...}}``, plus any baselines the task scores beside it."""
        raise NotImplementedError

    def log_figures(self, trainer: Any, splits: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """Figures of the finished run for the experiment trackers (none by default)."""
        return []

    def summary_columns(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """A run's columns in summary.csv, from its metrics.json: by default every frozen
        metric of validation and test, and every baseline's beside them."""
        row: dict[str, Any] = {}
        for split in ("validation", "test"):
            prefix = "val" if split == "validation" else "test"
            for key, value in metrics[split]["overall"].items():
                row[f"{prefix}_{key}"] = value
            for key, value in (metrics.get("baseline") or {}).get(split, {}).items():
                row[f"baseline_{prefix}_{key}"] = value
        return row

    # ---------------------------------------------------------------- using a trained model
    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> Task:
        """The task as a checkpoint describes it (its training section, checked against the
        schema like a config's: a hostile value fails here, not deep in a metric; data keys
        the model needs at inference, e.g. the frequencies)."""
        config = ckpt.get("config")
        config = dict(config) if isinstance(config, Mapping) else {}
        if config:
            import jsonschema

            from ..config import schema

            training = schema(cls.name)["properties"]["training"]
            # Keys a newer or older statetrain wrote are tolerated; wrong values are not.
            errors = [
                e
                for e in jsonschema.Draft202012Validator(training).iter_errors(config)
                if e.validator != "additionalProperties"
            ]
            error = jsonschema.exceptions.best_match(errors)
            if error is not None:
                where = ".".join(map(str, error.absolute_path)) or "config"
                raise ValueError(f"training key '{where}': {error.message[:200]}")
        return cls({}, config)

    def model_from_args(self, args: Mapping[str, Any]) -> nn.Module:
        """Rebuild the architecture from a checkpoint's plain `model_args` (never code)."""
        raise NotImplementedError

    def evaluate_model(
        self, model: nn.Module, split: Any, *, state_reset: str | None = None
    ) -> dict[str, Any]:
        """Frozen metrics of `model` on one split read by `read_split`: {"overall": {...}}."""
        raise NotImplementedError

    def predict_model(
        self, model: nn.Module, split: Any, *, state_reset: str | None = None
    ) -> dict[str, np.ndarray]:
        """The frozen model's output per row of `split`, as named columns of equal length."""
        raise NotImplementedError

    def onnx_graph(self, model: nn.Module) -> Any:
        """One call of the deployed model as an `export.OnnxGraph` (stateful models take and
        return their state explicitly)."""
        raise NotImplementedError

    def check_onnx(
        self, session: Any, model: nn.Module, split: Any, tolerance: float
    ) -> dict[str, Any]:
        """Run `split` (read by `read_split`; None: a fixed random probe of the model's input
        shape) through the onnxruntime `session` and through PyTorch; at least ``passed``
        and ``max_abs_diff`` (`export.compare_outputs`)."""
        raise NotImplementedError


class BatchTask(Task):
    """A task trained in mini-batches over independent samples (no state between them).

    Subclasses set the class attributes and implement the methods that raise
    NotImplementedError; the run contract (`read_split`, `build_trainer`, `score`) is
    implemented here once for all of them, with `BatchTrainer`.
    """

    # The training split's arrays that mini-batches are cut from (one row per sample).
    batch_keys: ClassVar[tuple[str, ...]] = ("x",)

    # ---------------------------------------------------------------- the run contract
    def write_split(self, split: str, out: str | Path) -> str:
        arrays = self.make_splits()[split]
        save_split(arrays, out)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
        source = self.spec.get("path") or f"the {self.name} generator (seed {self.spec['seed']})"
        return f"{split} from {source}: {shapes}"

    def check_split(self, path: str | Path) -> dict[str, Any]:
        return self.validate(load_split(path), path)

    def read_split(self, path: str | Path) -> Arrays:
        arrays = load_split(path)
        self.validate(arrays, path)
        return arrays

    def build_trainer(
        self,
        splits: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any],
        callbacks: list,
        progress: bool = False,
    ) -> Any:
        from ..batch import BatchTrainer
        from ..loop import get_device
        from ..optim import make_optimizer, make_scheduler

        training = self.training
        model = self.build_model(splits["train"])
        optimizer = make_optimizer(training, model.parameters())
        return BatchTrainer(
            self,
            model,
            optimizer,
            splits["train"],
            splits["validation"],
            device=get_device(training["device"]),
            scheduler=make_scheduler(training, optimizer),
            seed=int(training["seed"]),
            metadata=metadata,
            callbacks=callbacks,
            monitor=training["monitor"],
            monitor_mode=training["monitor_mode"],
        )

    def evaluate_model(
        self, model: nn.Module, split: Any, *, state_reset: str | None = None
    ) -> dict[str, Any]:
        return {"overall": self.evaluate(model, split, _device_of(model))}

    def predict_model(
        self, model: nn.Module, split: Any, *, state_reset: str | None = None
    ) -> dict[str, np.ndarray]:
        return self.predict(model, split, _device_of(model))

    def check_onnx(
        self, session: Any, model: nn.Module, split: Any, tolerance: float
    ) -> dict[str, Any]:
        """The graph's output ("x" in, one output) against `onnx_reference` in PyTorch,
        sequences grouped by length (a variable-length split runs each length unpadded)."""
        from ..export import compare_outputs

        split = self.onnx_probe(model) if split is None else split
        x = np.asarray(split["x"], np.float32)
        lengths = split.get("lengths")
        lengths = np.full(len(x), x.shape[1]) if lengths is None or x.ndim < 3 else lengths
        lengths = np.asarray(lengths, dtype=np.int64)
        out = None
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            for start in range(0, len(rows), 256):
                idx = rows[start : start + 256]
                xb = x[idx, :length] if x.ndim == 3 else x[idx]
                (yb,) = session.run(None, {"x": np.ascontiguousarray(xb)})
                if out is None:
                    out = np.zeros((len(x), *yb.shape[1:]), np.float64)
                out[idx] = yb
        reference = np.asarray(self.onnx_reference(model, split), np.float64)
        report = compare_outputs([out if out is not None else np.zeros(0)], [reference], tolerance)
        report["rows"] = len(x)
        report["what"] = f"{len(x):,} samples"
        return report

    def onnx_probe(self, model: nn.Module) -> Arrays:
        """A fixed random batch of the model's input shape, for a check without data."""
        raise NotImplementedError

    def onnx_reference(self, model: nn.Module, split: Mapping[str, np.ndarray]) -> np.ndarray:
        """What the ONNX graph must output for `split["x"]`, computed by the task's own
        PyTorch path (the one `predict` uses)."""
        raise NotImplementedError

    def score(self, trainer: Any, splits: Mapping[str, Any]) -> dict[str, Any]:
        """The task's frozen metrics and its trivial baseline's, on validation and test."""
        scores: dict[str, Any] = {
            s: {"overall": trainer.evaluate(splits[s])} for s in ("validation", "test")
        }
        scores["baseline"] = {
            s: self.baseline(splits["train"], splits[s]) for s in ("validation", "test")
        }
        return scores

    # ---------------------------------------------------------------- data
    def make_splits(self) -> dict[str, Arrays]:
        """All three splits, generated or read from the user's file; same spec → same arrays."""
        raise NotImplementedError

    def validate(self, arrays: Mapping[str, np.ndarray], path: str | Path) -> dict[str, Any]:
        """Check one split; raise DatasetError (naming the problem and the fix) or return a
        JSON-able report (counts, shapes) that the validate rule writes next to the data."""
        raise NotImplementedError

    # ---------------------------------------------------------------- model
    def build_model(self, train: Mapping[str, np.ndarray]) -> nn.Module:
        """A fresh model sized from the training split and `self.training`."""
        raise NotImplementedError

    def model_args(self, model: nn.Module) -> dict[str, Any]:
        """Plain values that rebuild the architecture: `model_from_args(model_args(m))`."""
        raise NotImplementedError

    # ---------------------------------------------------------------- training
    def prepare(self, train: Mapping[str, np.ndarray]) -> None:
        """Called once before training with the training split (e.g. class weights)."""

    def training_step(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean loss of one mini-batch (to be back-propagated) and any per-batch means to
        log beside it (``train_recon``, ``train_accuracy``, ...).

        `batch` holds the rows of the training split's `batch_keys` arrays, on the model's
        device. The trainer owns everything else of the step (shuffling, zero_grad, backward,
        clipping, the optimizer step, skipping a non-finite loss), so every batch task trains
        the same way. Draw any randomness (input noise) from `generator`: the trainer seeds it
        per epoch, so a resumed run sees the same batches.
        """
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, float]:
        """Frozen-weight metrics of one split (model.eval(), no grad, no input noise).

        Must hold ``loss`` and ``selection_metric``; every value a plain float.
        """
        raise NotImplementedError

    def baseline(self, train: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray]) -> dict:
        """The trivial model's metrics on `split` (what a trained model has to beat)."""
        return {}

    def predict(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, np.ndarray]:
        """The frozen model's output for each sample of `split`, as named columns of equal
        length (what `statetrain predict` writes, one row per sample)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- figures
    def plot(
        self,
        model: nn.Module,
        splits: Mapping[str, Mapping[str, np.ndarray]],
        history: Mapping[str, list],
        out: Mapping[str, str | Path],
        title: str = "",
    ) -> None:
        """Write every figure in `figures` to out[name] (from the selected model)."""
        raise NotImplementedError


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# -------------------------------------------------------------------- split files
def save_split(arrays: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Atomic `.npz` write (no pickled objects: every array must have a plain dtype)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"array '{key}' has dtype object; split files hold numbers only")
    return write_npz({k: np.asarray(v) for k, v in arrays.items()}, path)


# A split archive larger than this once unpacked is refused before numpy reads it: a
# compressed .npz can claim far more than its size on disk (a zip bomb).
MAX_SPLIT_BYTES = 8 * 1024**3


def _check_npz_size(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(i.file_size for i in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # np.load reports an unreadable archive below
    if total > MAX_SPLIT_BYTES:
        raise DatasetError(
            path,
            "size",
            f"the archive unpacks to {total:,} bytes, more than {MAX_SPLIT_BYTES:,}.",
            "Split the data into smaller files, or check that the file is what you meant.",
        )


def load_split(path: str | Path, required: tuple[str, ...] = ()) -> Arrays:
    """Read a split `.npz` without ever unpickling; missing or unreadable → DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            path, "exists", "the file does not exist.", "Check the path in your config."
        )
    _check_npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
            complex_ = [k for k, v in arrays.items() if np.iscomplexobj(v)]
            if complex_:
                raise ValueError(f"array(s) {complex_} hold complex numbers, which are refused")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(
            path,
            "readable",
            f"not a readable NumPy .npz archive of plain arrays ({exc}).",
            "Regenerate it, or save your data with numpy.savez(path, x=..., y=...).",
        ) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DatasetError(
            path,
            "arrays",
            f"the archive lacks the array(s) {missing} (it holds {sorted(arrays)}).",
            f"Save the split with numpy.savez(path, {', '.join(f'{k}=...' for k in required)}).",
        )
    return arrays


def split_rows(
    n: int, fractions: Mapping[str, float], seed: int, labels: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Row indices of train/validation/test: a fixed-seed shuffle, stratified by `labels`.

    `fractions` gives the validation and test shares; train takes the rest. Stratifying keeps
    a rare class present in every split (the classifier's positives at 5 %).
    """
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == v) for v in np.unique(labels)]
    )
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for idx in groups:
        idx = rng.permutation(idx)
        n_val = round(len(idx) * fractions["validation"])
        n_test = round(len(idx) * fractions["test"])
        out["validation"].append(idx[:n_val])
        out["test"].append(idx[n_val : n_val + n_test])
        out["train"].append(idx[n_val + n_test :])
    return {s: np.sort(np.concatenate(parts)) for s, parts in out.items()}
