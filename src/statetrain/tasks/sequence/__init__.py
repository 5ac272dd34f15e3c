"""The sequence task: stateful step-by-step modelling of a user's multichannel time series.

`task: sequence` trains the frequency task's stateful LSTM (the reference loop, TBPTT,
window training, the native engine) on a user's CSV, Parquet or `.npy` file:

* `data.py`: reading, every check (`DatasetError` naming file, column, row and fix), the
  splits (whole streams, or contiguous time blocks of one long stream; never shuffled) and
  the normalisation fitted on the training split;
* `model.py`: SequenceLSTM, a FrequencyLSTM with K outputs and its normalisation as buffers;
* `trainer.py`: SequenceTrainer, the frequency task's StatefulTrainer scoring per target or
  per class;
* `metrics.py`: frozen metrics and the baselines (persistence, AR, seasonal naive,
  prevalence) on the same rows; `plots.py`: predictions against the truth over time.

Why a `BatchTask` subclass although it trains statefully: the workflow gives batch tasks
the generic figure rule (`plot_task`: `task.plot(...)`) and the frequency task its Graph
1/2 and learnability rules; this task needs the former. Every method of the run contract
that BatchTask implements with mini-batches is overridden here with the stateful trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import BatchTask

log = logging.getLogger("statetrain")

SPLITS = ("train", "validation", "test")


class SequenceTask(BatchTask):
    """Per-step regression or classification of a user's series, state carried per stream."""

    name: ClassVar[str] = "sequence"
    monitor: ClassVar[str] = "val_loss"
    selection_metric: ClassVar[str] = "loss"
    mode: ClassVar[str] = "min"
    figures: ClassVar[tuple[str, ...]] = ("predictions.png",)
    split_suffix: ClassVar[str] = "csv"
    # Every format read_split reads: a new file for `statetrain predict` may be any of them.
    data_suffixes: ClassVar[tuple[str, ...]] = ("csv", "parquet", "pq", "npy")
    stateful: ClassVar[bool] = True

    # ---------------------------------------------------------------- config
    @classmethod
    def check_spec(cls, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Three split files, each its own, when the user gives them instead of `path`."""
        from ...config import check_split_files

        check_split_files(name, spec)
        return super().check_spec(name, spec)

    @cached_property
    def columns(self) -> Any:
        """The column roles; a config that names no input or target, or several label
        columns, is refused here (before any file is read)."""
        from ...validation import DatasetError
        from .data import Columns

        cols = Columns.from_spec(self.spec)
        problem = ""
        if not cols.inputs:
            problem = "data.inputs names no column"
        elif not cols.targets:
            problem = "data.targets names no column"
        elif cols.objective == "classification" and len(cols.targets) != 1:
            problem = f"classification takes one label column, and data.targets has {cols.targets}"
        if problem:
            raise DatasetError(
                self.spec.get("path") or self.spec.get("aeon") or self.spec.get("train_path"),
                "config",
                f"{problem}.",
                "List the input columns in data.inputs and the target column(s) in data.targets "
                "(config/README.md, `data` for task: sequence).",
            )
        return cols

    @property
    def objective(self) -> str:
        return self.columns.objective

    def _min_length(self) -> int:
        return int(self.spec.get("min_stream_length", 2))

    # ---------------------------------------------------------------- data
    def user_files(self) -> dict[str, str]:
        return {s: self.spec[f"{s}_path"] for s in SPLITS if f"{s}_path" in self.spec}

    def _source_table(self) -> Any:
        """The whole `path` (or aeon recording) as one checked table."""
        from .data import SeriesTable, aeon_table, read_table

        if self.spec.get("aeon"):
            name = self.spec["aeon"]
            frame, where = aeon_table(name, int(self.spec.get("seed", 0))), f"aeon:{name}"
        elif self.spec.get("path"):
            frame, where = read_table(self.spec["path"]), self.spec["path"]
        else:
            from ...validation import DatasetError

            raise DatasetError(
                None,
                "source",
                "the sequence task was given no data.",
                "Set data.path (or data.aeon), or all of train_path/validation_path/test_path.",
            )
        return SeriesTable.from_frame(
            frame,
            self.columns,
            where,
            classes=self.spec.get("classes"),
            min_stream_length=self._min_length(),
        )

    def _split_frames(self) -> dict[str, Any]:
        from .data import split_table, take_split

        table = self._source_table()
        parts = split_table(table, self.spec.get("split") or {"validation": 0.15, "test": 0.15})
        return {s: take_split(table, parts[s]) for s in SPLITS}

    @cached_property
    def classes(self) -> list[Any] | None:
        """The class labels in index order: data.classes, else the training split's labels."""
        if self.objective != "classification":
            return None
        if self.spec.get("classes"):
            return list(self.spec["classes"])
        if getattr(self, "_ckpt_classes", None):
            return list(self._ckpt_classes)
        from .data import read_table, sort_classes

        if "train_path" in self.spec:
            frame = read_table(self.spec["train_path"])
        else:
            frame = self._split_frames()["train"]
        target = self.columns.targets[0]
        if target not in [str(c) for c in frame.columns]:
            return None  # the check of the file reports the missing column
        values = frame[target].dropna().to_numpy().tolist()
        if values and all(isinstance(v, float) and v.is_integer() for v in values):
            values = [int(v) for v in values]
        return sort_classes(values)

    def write_split(self, split: str, out: str | Path) -> str:
        from .data import write_table

        frame = self._split_frames()[split]
        write_table(frame, out)
        source = f"aeon:{self.spec['aeon']}" if self.spec.get("aeon") else self.spec["path"]
        return f"{split} from {source}: {len(frame)} rows, columns {list(frame.columns)}"

    def _table(self, path: str | Path, *, require_targets: bool = True) -> Any:
        from .data import SeriesTable, read_table

        return SeriesTable.from_frame(
            read_table(path),
            self.columns,
            path,
            classes=self.classes,
            require_targets=require_targets,
            min_stream_length=self._min_length(),
        )

    def _is_train(self, path: str | Path) -> bool:
        given = self.spec.get("train_path")
        return str(path) == str(given) if given else Path(path).stem == "train"

    def check_split(self, path: str | Path) -> dict[str, Any]:
        from .data import Normaliser

        table = self._table(path)
        if self._is_train(path):
            Normaliser.fit(table)  # refuses a constant column of the training split
        report: dict[str, Any] = {
            "valid": True,
            "rows": len(table),
            "streams": len(table.starts),
            "shortest_stream": int(np.min(table.ends - table.starts)),
            "inputs": list(self.columns.inputs),
            "targets": list(self.columns.targets),
            "objective": self.objective,
            "horizon": self.columns.horizon,
        }
        if table.labels is not None:
            counts = np.bincount(table.labels, minlength=len(self.classes or []))
            report["class_counts"] = {
                str(c): int(n) for c, n in zip(self.classes, counts, strict=True)
            }
        return report

    def read_split(self, path: str | Path) -> Any:
        return self._table(path, require_targets=not getattr(self, "for_inference", False))

    # ---------------------------------------------------------------- training
    def build_model(self, train: Any) -> Any:
        from .data import Normaliser
        from .model import SequenceLSTM

        training = self.training
        k = len(self.classes) if self.objective == "classification" else len(train.columns.targets)
        model = SequenceLSTM(
            input_size=len(self.columns.inputs),
            hidden_size=training["hidden_size"],
            num_layers=training["num_layers"],
            output_size=k,
            forget_bias=training["forget_bias"],
        )
        model.set_normalisation(Normaliser.fit(train))
        return model

    def info(self) -> dict[str, Any]:
        """The data keys a trained model needs to read a new file (saved in checkpoints)."""
        c = self.columns
        return {
            "inputs": list(c.inputs),
            "targets": list(c.targets),
            "stream": c.stream,
            "time": c.time,
            "objective": c.objective,
            "horizon": c.horizon,
            "classes": self.classes,
            "min_stream_length": self._min_length(),
        }

    def _criterion(self, train: Any) -> tuple[Any, np.ndarray | None]:
        import torch

        from ..frequency.trainer import make_loss
        from .metrics import class_weights
        from .trainer import StepCrossEntropy

        if self.objective == "classification":
            weights = class_weights(train.ahead(), len(self.classes))
            log.info("class weights from the training split: %s", np.round(weights, 4).tolist())
            return StepCrossEntropy(torch.tensor(weights, dtype=torch.float32)), weights
        return make_loss(self.training["loss"]), None

    def build_trainer(
        self,
        splits: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any],
        callbacks: list,
        progress: bool = False,
    ) -> Any:
        from ...optim import make_optimizer, make_scheduler
        from ..frequency.trainer import get_device
        from ..frequency.window import WindowCurriculum
        from .trainer import SequenceTrainer, SeriesSplit

        training = self.training
        device = get_device(training["device"])
        model = self.build_model(splits["train"])
        train = SeriesSplit.from_table(splits["train"], model)
        validation = SeriesSplit.from_table(splits["validation"], model)
        model = model.to(device)
        criterion, weights = self._criterion(splits["train"])
        info = self.info()
        info["class_weights"] = None if weights is None else weights.tolist()
        optimizer = make_optimizer(training, model.parameters())
        window = None
        if training["mode"] == "window":
            w = training["window"]
            shortest = int(np.min(np.diff(np.append(train.starts, len(train)))))
            if w["first"] and w["first"] > shortest:
                from ...validation import DatasetError

                raise DatasetError(
                    splits["train"].path,
                    "stream length",
                    f"the shortest training stream has {shortest} scored rows, fewer than the "
                    f"first window training.window.first = {w['first']}.",
                    "Lower training.window.first, or drop the short streams.",
                )
            # windows of the training file (spec None: no generator to draw fresh noise from)
            window = WindowCurriculum.from_config(w, training["seed"], spec=None)
        return SequenceTrainer(
            model,
            train,
            criterion,
            optimizer,
            device=device,
            clip_grad_norm=training["clip_grad_norm"],
            val_loader=validation,
            tbptt_steps=training["tbptt_steps"],
            state_reset="stream",  # state never crosses a stream
            engine=training["engine"],
            scheduler=make_scheduler(training, optimizer),
            max_bad_steps=training["max_bad_steps"],
            progress=progress,
            metadata=metadata,
            callbacks=callbacks,
            monitor=training["monitor"],
            monitor_mode=training["monitor_mode"],
            window=window,
            objective=self.objective,
            targets=self.columns.targets,
            classes=self.classes,
            weights=weights,
            info=info,
        )

    def score(self, trainer: Any, splits: Mapping[str, Any]) -> dict[str, Any]:
        """Frozen metrics of the best model and the baselines', on the same rows."""
        from .metrics import baseline_scores
        from .trainer import SeriesSplit

        scores: dict[str, Any] = {}
        for s in ("validation", "test"):
            split = SeriesSplit.from_table(splits[s], trainer.model)
            scores[s] = trainer.evaluate(split)
        scores["baseline"] = {
            s: baseline_scores(splits["train"], splits[s], self.spec, self.classes)
            for s in ("validation", "test")
        }
        return scores

    def log_figures(self, trainer: Any, splits: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from .plots import prediction_figure

        path = out_dir / "validation_predictions.png"
        prediction_figure(self, trainer.model, splits["train"], splits["validation"], path)
        return [path]

    # ---------------------------------------------------------------- using a trained model
    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> SequenceTask:
        base = super().from_checkpoint(ckpt)
        info = ckpt.get("sequence")
        if not isinstance(info, Mapping):
            raise ValueError("the checkpoint has no 'sequence' section (its data keys)")
        inputs, targets = info.get("inputs"), info.get("targets")
        if not (isinstance(inputs, list) and inputs and all(isinstance(c, str) for c in inputs)):
            raise ValueError(f"sequence.inputs {str(inputs)[:80]} is not a list of names")
        if not (isinstance(targets, list) and all(isinstance(c, str) for c in targets)):
            raise ValueError(f"sequence.targets {str(targets)[:80]} is not a list of names")
        if info.get("objective") not in ("regression", "classification"):
            raise ValueError(f"sequence.objective {str(info.get('objective'))[:40]!r} is unknown")
        horizon = info.get("horizon", 0)
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
            raise ValueError(f"sequence.horizon {horizon!r} is not a whole number >= 0")
        spec = {k: info.get(k) for k in ("inputs", "targets", "stream", "time", "objective")}
        spec["horizon"] = horizon
        spec["min_stream_length"] = 1
        task = cls(spec, base.training)
        task._ckpt_classes = info.get("classes")
        task._ckpt_weights = info.get("class_weights")
        task.for_inference = True
        return task

    def model_from_args(self, args: Mapping[str, Any]) -> Any:
        from ..frequency import _lstm_args
        from .model import SequenceLSTM

        args = dict(args)
        k = args.pop("output_size", 1)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100_000:
            raise TypeError(f"model_args.output_size = {k!r} is not a whole number in [1, 1e5]")
        return SequenceLSTM(**_lstm_args(args), output_size=k)

    def _outputs(self, model: Any, table: Any, rows: np.ndarray) -> np.ndarray:
        """Frozen outputs (len(rows), K) over whole streams, state zeroed at each start."""
        from ..frequency.trainer import Split, predict

        x = model.normalise_inputs(table.x)
        split = Split(x=x, y=np.zeros(len(x), np.float32), starts=table.starts, columns=None)
        out = np.asarray(predict(model, split, "stream"), dtype=np.float64)
        return out.reshape(len(x), model.output_size)[rows]

    def evaluate_model(
        self, model: Any, split: Any, *, state_reset: str | None = None
    ) -> dict[str, Any]:
        from .trainer import SeriesSplit, score_outputs

        self._require_targets(split)
        data = SeriesSplit.from_table(split, model)
        out = self._outputs(model, split, split.scored_rows())
        holder = _Scorer(
            model,
            self.objective,
            list(self.columns.targets),
            self.classes,
            getattr(self, "_ckpt_weights", None),
        )
        return {"overall": score_outputs(holder, data, out)}

    def _require_targets(self, table: Any) -> None:
        if not table.has_targets:
            from ...validation import DatasetError

            raise DatasetError(
                table.path,
                "columns",
                f"the target column(s) {list(self.columns.targets)} are missing, so the model "
                "cannot be scored on this file.",
                "Use `statetrain predict` for a file without targets.",
            )

    def predict_model(
        self, model: Any, split: Any, *, state_reset: str | None = None
    ) -> dict[str, np.ndarray]:
        """One row per input row: per target the value predicted for that row's horizon
        (regression), or class probabilities (binary: the positive class's)."""
        from .metrics import softmax

        out = self._outputs(model, split, np.arange(len(split)))
        if self.objective == "classification":
            probs = softmax(out)
            classes = self.classes or list(range(out.shape[1]))
            if len(classes) == 2:
                return {f"probability_{classes[1]}": probs[:, 1]}
            return {f"probability_{c}": probs[:, k] for k, c in enumerate(classes)}
        pred = model.denormalise(out)
        h = self.columns.horizon
        suffix = f"_t+{h}" if h else ""
        return {f"{t}{suffix}": pred[:, j] for j, t in enumerate(self.columns.targets)}

    # ---------------------------------------------------------------- ONNX
    def onnx_graph(self, model: Any) -> Any:
        """One step, raw inputs in, the targets' units (or probabilities) out."""
        from .export import onnx_graph

        return onnx_graph(model, self.objective == "classification")

    def check_onnx(self, session: Any, model: Any, split: Any, tolerance: float) -> dict[str, Any]:
        """The split's rows (or a random probe) through onnxruntime step by step."""
        from .export import check, probe

        x, starts = probe(model) if split is None else (split.x, split.starts)
        return check(session, model, x, starts, self.objective == "classification", tolerance)

    # ---------------------------------------------------------------- figures
    def prepare(self, train: Any) -> None:
        """Nothing to prepare: normalisation lives in the model, classes in the task."""

    def plot(
        self,
        model: Any,
        splits: Mapping[str, Any],
        history: Mapping[str, list],
        out: Mapping[str, str | Path],
        title: str = "",
    ) -> None:
        from .plots import prediction_figure

        prediction_figure(self, model, splits["train"], splits["test"], out["predictions.png"])


class _Scorer:
    """What score_outputs needs of a trainer, for a model loaded from a checkpoint."""

    def __init__(
        self, model: Any, objective: str, targets: list, classes: Any, weights: Any
    ) -> None:
        self.model = model
        self.objective = objective
        self.targets = targets
        self.classes = classes or []
        k = max(len(self.classes), 1)
        ok = isinstance(weights, list) and len(weights) == k
        self.weights = np.asarray(weights if ok else np.ones(k), dtype=np.float64)
