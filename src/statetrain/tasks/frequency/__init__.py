"""The frequency task: a stateful LSTM trained one time step at a time on the carried state.

The assignment's task (seed 000): an LSTM receives a noisy mixture S(t) of sines and a one-hot
C that picks one of them, and outputs that pure sine, sample by sample. Everything it needs
lives in this package:

* `data.py`: the generator and the (N, n_frequencies + 2) split files; `validation.py`: their
  checks;
* `model.py`: FrequencyLSTM, ExpertLSTM;
* `trainer.py`: StatefulTrainer, the reference loop (L = 1, state carried, detach per step;
  TBPTT k) and frozen prediction; `native.py`: its exact numba twin; `window.py`:
  whole-window training with its curriculum;
* `experts.py`: per-frequency experts combined into one model; `assemble.py`: experts
  assembled into ONE LSTM, `recipe.py` its config side (`assemble:`, `training.init_from`),
  `init_from.py`: a run that starts from given weights (the fine-tune);
* `metrics.py`, `plots.py`: scores per stream, Graph 1/2, the learnability map;
* `export.py`: ONNX, one step with explicit state, checked in onnxruntime.

This module is what the runner and the workflow see of it: the `Task` contract. Torch and the
task's modules are imported inside the methods, so the registry (read by the Snakefile at
parse time) stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..base import Task

# The generator's keys: a scenario with all of them (and no user files) can draw fresh noise.
GENERATOR_KEYS = ("frequencies", "fs", "duration_s", "amplitude_range", "phase_jitter", "seeds")


class FrequencyTask(Task):
    """Per-step regression of the selected sine; frozen MSE per stream picks the best."""

    name: ClassVar[str] = "frequency"
    monitor: ClassVar[str] = "val_mse"
    selection_metric: ClassVar[str] = "mse"
    mode: ClassVar[str] = "min"
    figures: ClassVar[tuple[str, ...]] = ("graph1.png", "graph2.png")
    split_suffix: ClassVar[str] = "npy"
    stateful: ClassVar[bool] = True

    @property
    def frequencies(self) -> list[float]:
        return list(self.spec.get("frequencies") or [])

    def generator_spec(self) -> Mapping[str, Any] | None:
        """The scenario, when window training may draw fresh noise from the generator; None
        for a user's files (windows then come from the training file)."""
        if self.user_files():
            return None
        if not all(k in self.spec for k in GENERATOR_KEYS):
            return None
        return self.spec

    # ---------------------------------------------------------------- data
    @classmethod
    def check_spec(cls, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        from .validation import check_scenario

        return check_scenario(name, super().check_spec(name, spec))

    def user_files(self) -> dict[str, str]:
        return {
            s: self.spec[f"{s}_path"]
            for s in ("train", "validation", "test")
            if f"{s}_path" in self.spec
        }

    def write_split(self, split: str, out: str | Path) -> str:
        from .data import generate_split, save_array

        array = generate_split(self.spec, split)
        save_array(array, out)
        return (
            f"{split}: {len(array)} rows, phase_jitter {self.spec['phase_jitter']:.4f} rad, "
            f"seed {self.spec['seeds'][split]}"
        )

    def check_split(self, path: str | Path) -> dict[str, Any]:
        from .validation import validate_dataset

        return validate_dataset(
            path,
            min_stream_length=int(self.spec.get("min_stream_length", 1)),
            n_frequencies=len(self.frequencies) or None,
        )

    # ---------------------------------------------------------------- the run contract
    def read_split(self, path: str | Path) -> Any:
        from ...validation import load_array
        from .trainer import Split
        from .validation import validate_array

        array = load_array(path)
        validate_array(
            array, path=path, min_stream_length=int(self.spec.get("min_stream_length", 1))
        )
        return Split.from_array(array)

    def build_trainer(
        self,
        splits: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any],
        callbacks: list,
        progress: bool = False,
    ) -> Any:
        import torch

        from ...optim import make_optimizer, make_scheduler
        from .model import FrequencyLSTM
        from .trainer import StatefulTrainer, get_device
        from .window import WindowCurriculum

        training = self.training
        train, validation = splits["train"], splits.get("validation")
        device = get_device(training["device"])
        model = FrequencyLSTM(
            input_size=train.x.shape[1],
            hidden_size=training["hidden_size"],
            num_layers=training["num_layers"],
            forget_bias=training["forget_bias"],
        ).to(device)
        trainer_class = StatefulTrainer
        if training.get("init_from"):  # the weights to start from (a resumed last.pth wins)
            from .init_from import InitialisedTrainer, load_initial_weights

            start = load_initial_weights(model, training["init_from"])
            metadata = {**metadata, "init_from": start}
            trainer_class = InitialisedTrainer
        optimizer = make_optimizer(training, model.parameters())
        window = None
        if training["mode"] == "window":
            window = WindowCurriculum.from_config(
                training["window"], training["seed"], self.generator_spec()
            )
        losses = {
            "mse": torch.nn.MSELoss,
            "l1": torch.nn.L1Loss,
            "huber": torch.nn.HuberLoss,
            "smooth_l1": torch.nn.SmoothL1Loss,
        }
        return trainer_class(
            model,
            train,
            losses[training["loss"]](),
            optimizer,
            device=device,
            clip_grad_norm=training["clip_grad_norm"],
            val_loader=validation,
            tbptt_steps=training["tbptt_steps"],
            state_reset=training["state_reset"],
            engine=training["engine"],
            scheduler=make_scheduler(training, optimizer),
            max_bad_steps=training["max_bad_steps"],
            frequencies=self.frequencies or None,
            progress=progress,
            metadata=metadata,
            callbacks=callbacks,
            monitor=training["monitor"] if validation is not None else None,
            monitor_mode=training["monitor_mode"],
            window=window,
        )

    def score(self, trainer: Any, splits: Mapping[str, Any]) -> dict[str, Any]:
        """Frozen MSE overall and per stream, state carried as in training."""
        return {s: trainer.evaluate(splits[s]) for s in ("validation", "test")}

    def log_figures(self, trainer: Any, splits: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """The best epoch's frozen predictions on the validation split, per stream."""
        import numpy as np

        from . import plots

        validation = splits["validation"]
        path = out_dir / "validation_predictions.png"
        fig = plots.prediction_figure(
            np.column_stack([validation.x, validation.y]),
            trainer.predict(validation),
            validation.starts,
            validation.columns,
            trainer.frequencies,
            fs=float(self.spec.get("fs", 1000.0)),
            title="Frozen predictions of the best epoch (validation set)",
        )
        plots.save_figure(fig, path)
        return [path]

    def summary_columns(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The technique, the data's phase noise, and the MSE per stream (what the
        learnability table and figure read)."""
        row = {
            "technique": technique(metrics),
            "phase_jitter": self.spec.get("phase_jitter"),
            # an expert's dataset keeps some streams: its scores cover those only
            "streams": "+".join(k for k in metrics["test"] if k != "overall"),
            "val_mse": metrics["validation"]["overall"]["mse"],
            "test_mse": metrics["test"]["overall"]["mse"],
            "test_r2": metrics["test"]["overall"]["r2"],
            "test_snr_db": metrics["test"]["overall"]["snr_db"],
        }
        for key, value in metrics["test"].items():
            if key != "overall":
                row[f"test_mse_{key}"] = value["mse"]
        return row

    # ---------------------------------------------------------------- using a trained model
    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> FrequencyTask:
        import math

        config = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
        freqs = ckpt.get("frequencies") or []
        if not isinstance(freqs, (list, tuple)) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0
            for f in freqs
        ):
            raise ValueError(f"frequencies {str(freqs)[:80]} are not a list of positive numbers")
        reset = ckpt.get("state_reset") or "epoch"
        if reset not in ("epoch", "stream"):
            raise ValueError(f"state_reset {str(reset)[:40]!r} is neither 'epoch' nor 'stream'")
        task = cls({"frequencies": list(freqs)}, config)
        task.trained_state_reset = reset
        task.input_size = (ckpt.get("model_args") or {}).get("input_size")
        return task

    def _check_inputs(self, split: Any) -> None:
        from ...validation import DatasetError

        inputs = getattr(self, "input_size", None)
        if isinstance(inputs, int) and split.x.shape[1] != inputs:
            raise DatasetError(
                None,
                "columns",
                f"the split has {split.x.shape[1]} input columns and the model takes {inputs}.",
                "Pass a split with the frequencies the model was trained on.",
            )

    def evaluate_model(
        self, model: Any, split: Any, *, state_reset: str | None = None
    ) -> dict[str, Any]:
        """Frozen metrics with the state carried as the model was trained and scored."""
        from .metrics import evaluate_streams
        from .trainer import predict

        self._check_inputs(split)
        reset = state_reset or getattr(self, "trained_state_reset", "epoch")
        pred = predict(model, split, reset)
        freqs = self.frequencies or list(range(1, 1 + len(split.starts)))
        return evaluate_streams(split.y, pred, split.starts, split.columns, freqs)

    def predict_model(
        self, model: Any, split: Any, *, state_reset: str | None = None
    ) -> dict[str, Any]:
        """One prediction per row, the state carried from each stream's start by default."""
        from .trainer import predict

        self._check_inputs(split)
        return {"prediction": predict(model, split, state_reset or "stream")}

    def onnx_graph(self, model: Any) -> Any:
        """One step with the state as explicit I/O: (x, h0, c0) -> (y, h1, c1); the metadata
        says where the caller zeroes the state (as in training)."""
        from .export import onnx_graph

        graph = onnx_graph(model)
        graph.description["state_reset"] = getattr(self, "trained_state_reset", "epoch")
        return graph

    def check_onnx(self, session: Any, model: Any, split: Any, tolerance: float) -> dict[str, Any]:
        """The split (or a random probe) stepped through onnxruntime with the state carried
        and reset as the model was trained, against ``trainer.predict``."""
        from .export import _state_shape, check_onnx, probe_split

        reset = getattr(self, "trained_state_reset", "epoch")
        if split is None:
            split, reset = probe_split(_state_shape(model)[0]), "stream"
        else:
            self._check_inputs(split)
        return check_onnx(session, model, split, reset, tolerance)

    # ---------------------------------------------------------------- models
    def model_from_args(self, args: Mapping[str, Any]) -> Any:
        """A FrequencyLSTM, or an ExpertLSTM of several, from a checkpoint's model_args."""
        from .model import ExpertLSTM, FrequencyLSTM

        if "experts" in args:
            experts = args["experts"]
            if not isinstance(experts, list) or not all(isinstance(a, Mapping) for a in experts):
                raise TypeError("model_args.experts must be a list of mappings")
            return ExpertLSTM([FrequencyLSTM(**_lstm_args(a)) for a in experts])
        return FrequencyLSTM(**_lstm_args(args))


_LSTM_ARGS = {"input_size": (1, 100_000, 5), "hidden_size": (1, 4096, 64), "num_layers": (1, 16, 1)}


def _lstm_args(args: Mapping[str, Any]) -> dict[str, int]:
    """A FrequencyLSTM's arguments, each a whole number in range (a hostile checkpoint's
    `hidden_size: 1e9` must fail here, not in the allocator)."""
    unknown = set(args) - set(_LSTM_ARGS) - {"forget_bias"}
    if unknown:
        raise TypeError(f"unknown model_args {sorted(unknown)}")
    out = {}
    for key, (lo, hi, default) in _LSTM_ARGS.items():
        value = args.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise TypeError(f"model_args.{key} = {value!r} is not a whole number in [{lo}, {hi}]")
        out[key] = value
    return out


def technique(metrics: Mapping[str, Any]) -> str:
    """How a run was trained, in words: the learnability table's row label."""
    if "assembly" in metrics:  # rule assemble_experts, at any grid point
        return "window-trained experts assembled into one LSTM"
    if "members" in metrics:  # rule combine_experts
        return "window training, one expert per frequency"
    training = metrics["training"]
    if training.get("init_from"):
        return f"{training.get('mode', 'online')} training from given weights (init_from)"
    if training.get("mode") == "window":
        if len(metrics["test"]) == 2:  # overall + one frequency: an expert's own dataset
            return "window training, one-frequency expert"
        return "window training, one shared model"
    steps = training.get("tbptt_steps", 1)
    return "reference loop" + (f", TBPTT {steps}" if steps > 1 else "")
