"""The frequency task's StatefulTrainer on a user's series: every engine and mode, K outputs.

Nothing of the training loop is copied: `SequenceTrainer` subclasses `StatefulTrainer`, so
the reference loop (L = 1, state carried, detach per step), TBPTT k, whole-window training
and the native engine are the very code the frequency task runs. What differs is the
scoring (per target or per class, in the user's units) and that the state is zeroed at
every stream start (a user's streams are independent recordings: state never crosses them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..frequency.trainer import Split, StatefulTrainer
from ..frequency.trainer import predict as torch_predict
from .data import SeriesTable
from .metrics import (
    classification_metrics,
    cross_entropy,
    regression_metrics,
    softmax,
)

log = logging.getLogger("statetrain")


@dataclass
class SeriesSplit(Split):
    """A SeriesTable as the engines consume it: normalised float32 inputs of the scored
    rows, their normalised targets (N, K) or class indices (N,), the stream starts."""

    table: SeriesTable | None = field(default=None, repr=False)

    @classmethod
    def from_table(cls, table: SeriesTable, model: Any) -> SeriesSplit:
        rows = table.scored_rows()
        x = model.normalise_inputs(table.x[rows])
        if table.targets is not None:
            y = model.normalise_targets(table.ahead())
        else:
            y = table.ahead().astype(np.float32)
        # the scored rows of each stream are a prefix of it: starts move by the rows dropped
        lengths = table.ends - table.starts - table.columns.horizon
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        columns = np.arange(len(starts), dtype=np.int64)
        return cls(x=x, y=np.ascontiguousarray(y), starts=starts, columns=columns, table=table)


class StepCrossEntropy(nn.Module):
    """Class-weighted cross-entropy of per-step logits (..., K) against class indices stored
    as floats (...,): the trainer's criterion(out, y) for classification, any batch shape."""

    native_loss = "cross_entropy"  # the native kernel runs this loss (with `weight`)

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = logits.shape[-1]
        return F.cross_entropy(logits.reshape(-1, k), target.reshape(-1).long(), weight=self.weight)


class SequenceTrainer(StatefulTrainer):
    """StatefulTrainer scoring a SequenceLSTM per target (regression) or per class."""

    def __init__(
        self,
        *args: Any,
        objective: str = "regression",
        targets: Sequence[str] = (),
        classes: Sequence[Any] | None = None,
        weights: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.objective = objective
        self.targets = list(targets)
        self.classes = list(classes or [])
        self.weights = weights
        self.info = dict(info or {})
        super().__init__(*args, **kwargs)

    def _resolve_engine(self, requested: str) -> tuple[str, str]:
        engine, why = super()._resolve_engine(requested)
        if requested == "auto" and engine != "native" and self.window is None:
            log.warning("engine auto: running the torch reference loop, because %s", why)
        return engine, why

    # ---------------------------------------------------------------- evaluation
    def predict(self, split: Split) -> np.ndarray:
        """Frozen outputs (N, K) in normalised units (regression) or logits, state zeroed at
        each stream start; natively when the engine is native."""
        k = self.model.output_size
        if self.engine == "native":
            from ..frequency import native

            out = native.evaluate(self.model, split.x, split.starts, state_reset="stream")
        else:
            out = torch_predict(self.model, split, "stream")
        return np.asarray(out, dtype=np.float64).reshape(len(split), k)

    def evaluate(self, split: Split) -> dict[str, dict[str, float]]:
        out = self.predict(split)
        return {"overall": score_outputs(self, split, out)}

    def validation_row(self) -> dict[str, Any]:
        overall = self.evaluate(self.val_split)["overall"]
        keep = ("loss", "mse_", "r2_", "auc_pr", "balanced_accuracy", "accuracy")
        return {f"val_{k}": v for k, v in overall.items() if k.startswith(keep)}

    def model_args(self) -> dict[str, Any]:
        args = super().model_args()
        args["output_size"] = self.model.output_size
        return args

    def extra_payload(self, best_only: bool) -> dict[str, Any]:
        extra = super().extra_payload(best_only)
        extra["task"] = "sequence"  # which task rebuilds the model from this checkpoint
        extra["sequence"] = dict(self.info)
        return extra


def score_outputs(trainer: Any, split: Split, out: np.ndarray) -> dict[str, float]:
    """Metrics of raw model outputs on a SeriesSplit, in the user's units."""
    model = trainer.model
    if trainer.objective == "classification":
        labels = split.y.astype(np.int64)
        probs = softmax(out)
        metrics = {"loss": cross_entropy(labels, probs, trainer.weights)}
        metrics.update(classification_metrics(labels, probs, trainer.classes))
        return metrics
    truth = split.table.ahead()
    pred = model.denormalise(out)
    metrics = {"loss": float(np.mean((out - split.y.astype(np.float64)) ** 2))}
    metrics.update(regression_metrics(truth, pred, trainer.targets))
    return metrics
