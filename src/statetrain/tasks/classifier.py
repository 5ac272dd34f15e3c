"""Defect classification: an LSTM reads a whole multichannel sensor sequence (a steel cast's
temperatures, flows, pressures, ...) and emits one logit: defective or not.

Defects are rare (a few per hundred casts), so three choices follow from the imbalance:

* the loss is `BCEWithLogitsLoss` with ``pos_weight = n_negative / n_positive`` of the training
  split (or the user's override), so the rare class is not simply ignored;
* the splits are stratified by label, so validation and test hold positives at the same rate;
* the model is selected on the area under the precision-recall curve (AUC-PR, average
  precision), whose chance level is the positive rate, not on accuracy, which a model that
  never says "defect" already maximises. The baselines make that explicit.

The data are either the synthetic generator below (normal process drift plus rare chatter or
ramp signatures) or a user's ``.npy`` of shape (N, T, C) with a ``.npy`` of N labels 0/1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from torch import nn

from ..plots import save_figure
from ..validation import DatasetError, load_array
from .base import Arrays, BatchTask, grad_norm, split_rows

log = logging.getLogger("statetrain")

# Defaults of the `data` keys this task reads (the config schema fills the same values; they
# are repeated here so a sparse spec, e.g. in a test, still describes a complete scenario).
SPEC_DEFAULTS: dict[str, Any] = {
    "sequences": 2000,
    "length": 100,
    "channels": 6,
    "positive_rate": 0.07,
    "defect_strength": 1.0,
    "seed": 0,
    "split": {"validation": 0.15, "test": 0.15},
    "path": None,
    "labels_path": None,
}
MIN_SEQUENCES = 10
# Defect sizes at defect_strength = 1, in multiples of the channel's nominal white-noise level.
# Chosen so that a one-layer LSTM of 32 units learns them in ~10 epochs from ~30 positives
# (600 sequences of 60 steps), while a per-sequence std threshold stays far from perfect
# (AUC ≈ 0.85 on the default scenario; the per-sequence mean is at chance).
CHATTER_SIZE = 15.0
RAMP_SIZE = 30.0
STD_FLOOR = 1e-6
EVAL_BATCH = 512  # evaluation chunk: bounds memory on long user sequences, same numbers


# ============================================================================ model
class SequenceClassifier(nn.Module):
    """LSTM over the whole sequence → last layer's final hidden state → one logit.

    The per-channel normalisation lives in buffers (`mean`, `std`) set from the training split,
    so a saved state_dict carries it and the model accepts raw sensor units at inference.
    `pos_weight` (a buffer too) records the loss weight it was trained with, so a model loaded
    elsewhere is evaluated with the same weighted loss.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.register_buffer("mean", torch.zeros(self.input_size))
        self.register_buffer("std", torch.ones(self.input_size))
        self.register_buffer("pos_weight", torch.ones(()))
        # torch warns (and ignores it) when inter-layer dropout is set on a single layer.
        self.lstm = nn.LSTM(
            self.input_size,
            self.hidden_size,
            num_layers=self.num_layers,
            batch_first=True,
            dropout=self.dropout if self.num_layers > 1 else 0.0,
            bidirectional=self.bidirectional,
        )
        self.head_dropout = nn.Dropout(self.dropout)
        self.head = nn.Linear(self.hidden_size * (2 if self.bidirectional else 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) raw values → (B,) logits."""
        z = (x - self.mean) / self.std
        _, (h_n, _) = self.lstm(z)
        # h_n: (num_layers * directions, B, H); the last layer's directions come last.
        h = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]
        return self.head(self.head_dropout(h)).squeeze(-1)


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: np.ndarray, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Sigmoid probabilities of a (N, T, C) array, in eval mode, in bounded chunks."""
    model.eval()
    device = torch.device(device)
    out = []
    for start in range(0, len(x), EVAL_BATCH):
        xb = torch.as_tensor(np.asarray(x[start : start + EVAL_BATCH], np.float32), device=device)
        out.append(torch.sigmoid(model(xb)).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


# ============================================================================ data
def _spec(spec: Mapping[str, Any], key: str) -> Any:
    value = spec.get(key)
    return SPEC_DEFAULTS[key] if value is None else value


def generate_sequences(spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic casting-sensor sequences: x float32 (N, T, C), y float32 (N,) of 0/1.

    Normal behaviour, per channel: a fixed level and unit (channels differ by orders of
    magnitude, as temperatures and flows do, so the model has to normalise), a per-cast offset,
    an AR(1) drift and a slow sine of random phase and period, both scaled by a per-cast
    "turbulence", and white noise whose level also varies from cast to cast (sensor condition).
    Those per-cast spreads are what keep a naive per-sequence mean/std threshold far from
    perfect: a defect adds less variance than the spread between normal casts.

    Exactly round(N·positive_rate) sequences (at least one) carry a defect signature in a
    random subset of channels (at least two when C >= 2), starting at a random time,
    sized `defect_strength` times a multiple of the channel's nominal noise level. Half are
    chatter: a high-frequency oscillation (3–6 steps per cycle, far above the drift's band)
    that sets in during the second half of the window; half are a ramp: a drift that starts
    in the middle third and grows to the end (e.g. a clogging nozzle). Both develop up to the
    window's end, as a defect's precursor does when the window ends at the event; a transient
    that dies out long before the end would only be learnable from far more positives by a
    model that classifies from its final state. Same seed → same arrays.
    """
    n = int(_spec(spec, "sequences"))
    t_len = int(_spec(spec, "length"))
    c = int(_spec(spec, "channels"))
    rate = float(_spec(spec, "positive_rate"))
    strength = float(_spec(spec, "defect_strength"))
    if n < 2 or t_len < 8 or c < 1:
        raise ValueError(
            f"data: sequences={n}, length={t_len}, channels={c}; need sequences >= 2, "
            "length >= 8 and channels >= 1."
        )
    if not 0.0 < rate < 1.0:
        raise ValueError(f"data.positive_rate={rate}; it must lie strictly between 0 and 1.")
    if strength < 0:
        raise ValueError(f"data.defect_strength={strength}; it must be >= 0.")
    rng = np.random.default_rng(int(_spec(spec, "seed")))
    t = np.arange(t_len, dtype=np.float64)

    # The plant: channel levels, units and dynamics are shared by every cast.
    level = rng.uniform(-50.0, 50.0, c)
    unit = 10.0 ** rng.uniform(-1.0, 1.5, c)
    phi = rng.uniform(0.85, 0.97, c)
    ar_std = rng.uniform(0.5, 1.0, c)
    sine_amp = rng.uniform(0.3, 1.0, c)
    noise_base = rng.uniform(0.2, 0.35, c)

    # The casts, in standard units of each channel.
    offset = rng.normal(0.0, 0.5, (n, 1, c))
    turbulence = rng.lognormal(0.0, 0.5, (n, 1, 1))
    period = rng.uniform(0.5 * t_len, 3.0 * t_len, (n, 1, c))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1, c))
    sine = sine_amp * np.sin(2 * np.pi * t[None, :, None] / period + phase)
    innov = rng.normal(0.0, 1.0, (n, t_len, c)) * ar_std * np.sqrt(1.0 - phi**2)
    ar = np.empty((n, t_len, c))
    ar[:, 0] = rng.normal(0.0, 1.0, (n, c)) * ar_std
    for i in range(1, t_len):
        ar[:, i] = phi * ar[:, i - 1] + innov[:, i]
    noise_level = noise_base * rng.lognormal(0.0, 0.35, (n, 1, 1))  # (n, 1, c)
    z = offset + turbulence * (sine + ar) + noise_level * rng.normal(0.0, 1.0, (n, t_len, c))

    n_pos = min(n - 1, max(1, round(n * rate)))
    y = np.zeros(n, dtype=np.float32)
    positives = rng.choice(n, size=n_pos, replace=False)
    y[positives] = 1.0
    min_channels = min(2, c)
    max_channels = max(min_channels, math.ceil(c / 2))
    for idx in positives:
        cast = z[idx]  # a view, (T, C): edits land in z
        k = int(rng.integers(min_channels, max_channels + 1))
        chans = rng.choice(c, size=k, replace=False)
        sigma = noise_base[chans]
        if rng.random() < 0.5:  # chatter
            start = int(rng.integers(t_len // 2, t_len - max(3, t_len // 10)))
            width = t_len - start
            rise = np.minimum(1.0, np.arange(1, width + 1) / 3.0)  # no step at the onset
            cycle = rng.uniform(3.0, 6.0)
            wave = np.sin(2 * np.pi * np.arange(width) / cycle + rng.uniform(0, 2 * np.pi))
            amp = strength * CHATTER_SIZE * sigma * rng.uniform(0.7, 1.3, k)
            cast[start:, chans] += (wave * rise)[:, None] * amp[None, :]
        else:  # ramp
            onset = int(rng.integers(t_len // 3, 2 * t_len // 3))
            ramp = np.clip((t - onset) / max(1, t_len - 1 - onset), 0.0, None)
            amp = strength * RAMP_SIZE * sigma * rng.choice([-1.0, 1.0], k)
            cast[:, chans] += ramp[:, None] * amp[None, :]
    x = level + unit * z
    return x.astype(np.float32), y


def _err(path: str | Path | None, check: str, detail: str, fix: str) -> DatasetError:
    return DatasetError(path, check, detail, fix)


def _check_sequences(x: np.ndarray, path: str | Path | None) -> None:
    """Shape and finiteness of x, naming the first bad (sequence, time, channel)."""
    if x.ndim != 3:
        raise _err(
            path,
            "3-D",
            f"the sequences have shape {x.shape}; expected 3-D (sequences, time steps, channels).",
            "Stack the sequences into one array of shape (N, T, C); a single channel is "
            "x[..., None].",
        )
    if 0 in x.shape:
        raise _err(
            path,
            "non-empty",
            f"the sequences have shape {x.shape}: no sequence, time step or channel.",
            "Point the config at the full data.",
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise _err(
            path,
            "dtype",
            f"the sequences have dtype {x.dtype}; expected real numbers.",
            "Convert with array.astype(numpy.float32).",
        )
    finite = np.isfinite(x)
    if not finite.all():
        s, i, c = (int(v) for v in np.argwhere(~finite)[0])
        count = int((~finite).sum())
        raise _err(
            path,
            "finite",
            f"sequence {s}, time step {i}, channel {c} holds {x[s, i, c]} ({count} non-finite "
            "value(s) in all); every value must be finite (no NaN or Inf).",
            "Interpolate or drop the sequences with missing readings before training.",
        )


def _check_labels(y: np.ndarray, n: int, path: str | Path | None) -> np.ndarray:
    """Labels as float32 0/1 of length n, or DatasetError naming the first bad one."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _err(
            path,
            "labels 1-D",
            f"the labels have shape {y.shape}; expected one label per sequence, shape (N,).",
            "Save the labels as a 1-D array.",
        )
    if len(y) != n:
        raise _err(
            path,
            "label count",
            f"there are {len(y)} labels for {n} sequences; each sequence needs exactly one.",
            "Save one label per sequence, in the same order as the sequences.",
        )
    if y.dtype == bool:
        y = y.astype(np.float32)
    if not np.issubdtype(y.dtype, np.number):
        raise _err(
            path, "binary labels", f"the labels have dtype {y.dtype}.", "Save labels as 0/1."
        )
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _err(
            path,
            "binary labels",
            f"label {i} is {y[i]}; labels must be exactly 0 (normal) or 1 (defective) "
            f"({int(bad.sum())} bad label(s) in all).",
            "Map the classes to 0/1 (e.g. labels = (labels == defect_code)).",
        )
    return y.astype(np.float32)


def _load_labels(path: str | Path) -> np.ndarray:
    """A labels `.npy` (ints, bools or floats), never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise _err(path, "exists", "the labels file does not exist.", "Check data.labels_path.")
    return load_array(path, kinds="fiub")


# ============================================================================ task
class ClassifierTask(BatchTask):
    """Whole-sequence binary classification of rare defects (see the module docstring)."""

    name: ClassVar[str] = "classifier"
    monitor: ClassVar[str] = "val_auc_pr"
    selection_metric: ClassVar[str] = "auc_pr"
    mode: ClassVar[str] = "max"
    figures: ClassVar[tuple[str, ...]] = ("roc_curve.png", "pr_curve.png", "confusion_matrix.png")
    training_defaults: ClassVar[Mapping[str, Any]] = {
        "hidden_size": 64,
        "num_layers": 2,
        "epochs": 30,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 64,
    }
    # Task-specific `training` keys and their defaults (None = automatic / off).
    TRAINING_KEYS: ClassVar[Mapping[str, Any]] = {
        "dropout": 0.2,
        "bidirectional": False,
        "clip_grad_norm": None,
        "pos_weight": None,
        "threshold": 0.5,
    }

    def __init__(self, spec: Mapping[str, Any], training: Mapping[str, Any] | None = None):
        super().__init__(spec, training)
        self.pos_weight: float | None = None

    def _t(self, key: str) -> Any:
        """A training value: the config's, else this task's default."""
        value = self.training.get(key)
        if value is not None:
            return value
        if key in self.training_defaults:
            return self.training_defaults[key]
        return self.TRAINING_KEYS.get(key)

    @property
    def threshold(self) -> float:
        return float(self._t("threshold"))

    # ------------------------------------------------------------------ data
    def _load_user(self) -> tuple[np.ndarray, np.ndarray]:
        path = Path(self.spec["path"])
        labels_path = self.spec.get("labels_path")
        if not labels_path:
            raise _err(
                path,
                "labels_path",
                "data.path is set but data.labels_path is not: a classifier cannot learn "
                "from sequences without their labels.",
                "Set data.labels_path to a .npy of N labels 0/1 (numpy.save(path, labels)).",
            )
        # The project's safe loader: the header is checked by hand, so a pickle, an object
        # array or a truncated file never reaches numpy.
        x = load_array(path)
        _check_sequences(x, path)
        y = _check_labels(_load_labels(labels_path), len(x), labels_path)
        return x.astype(np.float32, copy=False), y

    def make_splits(self) -> dict[str, Arrays]:
        """Generated (from the seed) or the user's sequences, checked whole, then split with
        stratification so every split keeps the rare class at the same rate."""
        if self.spec.get("path"):
            x, y = self._load_user()
            where: str | Path = self.spec["path"]
        else:
            x, y = generate_sequences(self.spec)
            where = "<generated>"
        _check_sequences(x, where)
        y = _check_labels(y, len(x), where)
        n = len(x)
        if n < MIN_SEQUENCES:
            raise _err(
                where,
                "sequence count",
                f"only {n} sequences; at least {MIN_SEQUENCES} are needed to train, select "
                "and test a classifier.",
                "Provide more sequences.",
            )
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == n:
            missing = "positive (1, defective)" if n_pos == 0 else "negative (0, normal)"
            raise _err(
                where,
                "both classes",
                f"all {n} labels are {int(n_pos == n)}: there is no {missing} sequence, so "
                "there is nothing to separate.",
                "Include sequences of both classes.",
            )
        rows = split_rows(n, _spec(self.spec, "split"), int(_spec(self.spec, "seed")), labels=y)
        train_pos = int(y[rows["train"]].sum())
        if train_pos == 0 or train_pos == len(rows["train"]):
            raise _err(
                where,
                "train classes",
                f"after the stratified split the training split holds {train_pos} positive(s) "
                f"of {len(rows['train'])} sequences (of {n_pos} positives in all): it needs "
                "both classes.",
                "Add positive sequences or lower data.split's validation/test fractions.",
            )
        for split in ("validation", "test"):
            held = y[rows[split]]
            if held.size and (held.min() == held.max()):
                raise _err(
                    where,
                    f"{split} classes",
                    f"after the stratified split the {split} split holds {int(held.sum())} "
                    f"positive(s) of {held.size} sequences (of {n_pos} positives in all): its "
                    "AUC-PR, the selection metric, is undefined, so every grid point would "
                    "train and selection would then fail.",
                    "Add positive sequences or raise data.split's validation/test fractions.",
                )
        return {s: {"x": x[idx], "y": y[idx]} for s, idx in rows.items()}

    def validate(self, arrays: Mapping[str, np.ndarray], path: str | Path) -> dict[str, Any]:
        """Check one split and report its size and class balance (a split without positives
        is legal but makes its AUCs undefined, so the count is reported, not refused)."""
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise _err(
                path,
                "arrays",
                f"the split lacks the array(s) {missing} (it holds {sorted(arrays)}).",
                "Save the split with numpy.savez(path, x=..., y=...).",
            )
        x = np.asarray(arrays["x"])
        _check_sequences(x, path)
        y = _check_labels(arrays["y"], len(x), path)
        n, t_len, c = x.shape
        positives = int(y.sum())
        if positives == 0:
            log.warning("%s: no positive sequence; its AUC-ROC and AUC-PR are undefined", path)
        return {
            "sequences": int(n),
            "length": int(t_len),
            "channels": int(c),
            "positives": positives,
            "positive_rate": float(positives / n),
        }

    # ------------------------------------------------------------------ model
    def _resolve_pos_weight(self, train: Mapping[str, np.ndarray]) -> float:
        override = self.training.get("pos_weight")
        if override is not None:
            return float(override)
        y = np.asarray(train["y"])
        n_pos = int((y == 1).sum())
        if n_pos == 0:
            raise _err(
                None,
                "train classes",
                "the training split has no positive sequence, so pos_weight = n_neg/n_pos is "
                "undefined.",
                "Add positives or set training.pos_weight explicitly.",
            )
        return float((len(y) - n_pos) / n_pos)

    def prepare(self, train: Mapping[str, np.ndarray]) -> None:
        """Fix the loss's positive-class weight from the training labels (or the override)."""
        self.pos_weight = self._resolve_pos_weight(train)
        overridden = self.training.get("pos_weight") is not None
        source = "training.pos_weight" if overridden else "n_negative / n_positive of train"
        log.info("classifier: pos_weight = %.4g (%s)", self.pos_weight, source)

    def build_model(self, train: Mapping[str, np.ndarray]) -> nn.Module:
        x = np.asarray(train["x"], dtype=np.float64)
        model = SequenceClassifier(
            x.shape[2],
            hidden_size=int(self._t("hidden_size")),
            num_layers=int(self._t("num_layers")),
            dropout=float(self._t("dropout")),
            bidirectional=bool(self._t("bidirectional")),
        )
        mean = x.mean(axis=(0, 1))
        std = np.maximum(x.std(axis=(0, 1)), STD_FLOOR)
        model.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        weight = self.pos_weight if self.pos_weight is not None else self._resolve_pos_weight(train)
        model.pos_weight.fill_(weight)
        return model

    def model_args(self, model: nn.Module) -> dict[str, Any]:
        return {
            "input_size": model.input_size,
            "hidden_size": model.hidden_size,
            "num_layers": model.num_layers,
            "dropout": model.dropout,
            "bidirectional": model.bidirectional,
        }

    def model_from_args(self, args: Mapping[str, Any]) -> nn.Module:
        return SequenceClassifier(**dict(args))

    def _loss_fn(self, model: nn.Module, device: torch.device, reduction: str) -> nn.Module:
        """Weighted BCE; prepare()'s weight, else the one the model was built/saved with."""
        weight = self.pos_weight if self.pos_weight is not None else float(model.pos_weight)
        return nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(weight, device=device), reduction=reduction
        )

    # ------------------------------------------------------------------ training
    def train_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: Mapping[str, np.ndarray],
        generator: torch.Generator,
        device: torch.device,
    ) -> dict[str, float]:
        model.train()
        x = torch.as_tensor(np.asarray(train["x"], np.float32))
        y = torch.as_tensor(np.asarray(train["y"], np.float32))
        n = len(x)
        batch = int(self._t("batch_size"))
        clip = self._t("clip_grad_norm")
        loss_fn = self._loss_fn(model, device, "mean")
        params = [p for p in model.parameters() if p.requires_grad]
        order = torch.randperm(n, generator=generator)
        loss_sum, correct, seen, skipped = 0.0, 0, 0, 0
        norms: list[float] = []
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            xb, yb = x[idx].to(device), y[idx].to(device)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(grad_norm(params))
            if clip is not None:
                nn.utils.clip_grad_norm_(params, float(clip))
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int(((logits.detach() >= _logit(self.threshold)) == (yb > 0.5)).sum())
            seen += len(idx)
        if skipped:
            log.warning("classifier: skipped %d batch(es) with a non-finite loss", skipped)
        return {
            "train_loss": loss_sum / seen if seen else float("nan"),
            "train_accuracy": correct / seen if seen else float("nan"),
            "grad_norm_mean": float(np.mean(norms)) if norms else float("nan"),
        }

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, float]:
        model.eval()
        x = np.asarray(split["x"], np.float32)
        y = np.asarray(split["y"], np.float64)
        if len(x) == 0:
            return {"loss": float("nan"), **binary_metrics(y, np.zeros(0), self.threshold)}
        loss_fn = self._loss_fn(model, device, "sum")
        loss_sum, logits = 0.0, []
        for start in range(0, len(x), EVAL_BATCH):
            xb = torch.as_tensor(x[start : start + EVAL_BATCH], device=device)
            yb = torch.as_tensor(y[start : start + EVAL_BATCH], dtype=torch.float32, device=device)
            out = model(xb)
            loss_sum += float(loss_fn(out, yb))
            logits.append(out.cpu().numpy())
        prob = torch.sigmoid(torch.as_tensor(np.concatenate(logits), dtype=torch.float64)).numpy()
        return {"loss": loss_sum / len(x), **binary_metrics(y, prob, self.threshold)}

    def predict(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, np.ndarray]:
        """The positive class's probability per sequence."""
        return {"probability": predict_proba(model, np.asarray(split["x"]), device)}

    def baseline(self, train: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray]) -> dict:
        """What a model that ignores the sequences scores: a constant score has AUC-PR = the
        split's positive rate and AUC-ROC = 0.5; always answering the training majority class
        has high accuracy under imbalance (why accuracy is not the selection metric)."""
        y_train = np.asarray(train["y"])
        y = np.asarray(split["y"], np.float64)
        majority = float(y_train.mean() >= 0.5)
        rate = float(y.mean()) if len(y) else float("nan")
        # The best constant logit under the weighted BCE puts p = w·π / (w·π + 1 − π).
        w = self.pos_weight if self.pos_weight is not None else self._resolve_pos_weight(train)
        pi = float(y_train.mean())
        p = float(np.clip(w * pi / (w * pi + 1.0 - pi), 1e-7, 1 - 1e-7))
        loss = float(np.mean(-(w * y * np.log(p) + (1 - y) * np.log(1 - p)))) if len(y) else 0.0
        return {
            "loss": loss,
            "accuracy": float(np.mean(y == majority)) if len(y) else float("nan"),
            "auc_pr": rate,
            "auc_roc": 0.5,
            "positive_rate": rate,
        }

    # ------------------------------------------------------------------ figures
    def plot(
        self,
        model: nn.Module,
        splits: Mapping[str, Mapping[str, np.ndarray]],
        history: Mapping[str, list],
        out: Mapping[str, str | Path],
        title: str = "",
    ) -> None:
        """ROC, PR and confusion matrix of the selected model on the TEST split."""
        test = splits["test"]
        device = next(model.parameters()).device
        y = np.asarray(test["y"], np.float64)
        prob = predict_proba(model, test["x"], device)
        both = 0 < y.sum() < len(y)
        rate = float(y.mean())
        suffix = f" — {title}" if title else ""

        fig, ax = plt.subplots(figsize=(5, 5))
        if both:
            fpr, tpr, _ = roc_curve(y, prob)
            ax.plot(fpr, tpr, label=f"model (AUC = {roc_auc_score(y, prob):.3f})")
        else:
            ax.text(0.5, 0.5, "undefined: the test split holds one class", ha="center")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="chance (AUC = 0.5)")
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"ROC, test split{suffix}",
        )
        ax.legend(loc="lower right")
        save_figure(fig, out["roc_curve.png"])

        fig, ax = plt.subplots(figsize=(5, 5))
        if both:
            precision, recall, _ = precision_recall_curve(y, prob)
            ap = average_precision_score(y, prob)
            ax.step(recall, precision, where="post", label=f"model (AP = {ap:.3f})")
        else:
            ax.text(0.5, 0.5, "undefined: the test split holds one class", ha="center")
        ax.axhline(rate, ls="--", color="grey", label=f"chance = positive rate ({rate:.3f})")
        ax.set(
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"precision-recall, test split{suffix}",
        )
        ax.legend(loc="lower left")
        save_figure(fig, out["pr_curve.png"])

        pred = (prob >= self.threshold).astype(int)
        cm = confusion_matrix(y.astype(int), pred, labels=[0, 1])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(cm, cmap="Blues")
        for (i, j), count in np.ndenumerate(cm):
            dark = count > cm.max() / 2
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=13,
            )
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["normal (0)", "defect (1)"],
            yticklabels=["normal (0)", "defect (1)"],
            xlabel="predicted",
            ylabel="true",
            title=f"test split, threshold {self.threshold:g}{suffix}",
        )
        save_figure(fig, out["confusion_matrix.png"])


# ============================================================================ helpers
def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Thresholded and ranking metrics of probabilities `prob` against 0/1 labels `y`.

    The AUCs are nan (not an exception) on a one-class split: a small validation split may
    legitimately hold no defect, and the run should go on and say so.
    """
    y = np.asarray(y).astype(int)
    if len(y) == 0:
        keys = ("accuracy", "precision", "recall", "f1", "auc_roc", "auc_pr", "positive_rate")
        return {**dict.fromkeys(keys, float("nan")), "threshold": float(threshold)}
    pred = (np.asarray(prob) >= threshold).astype(int)
    both = 0 < y.sum() < len(y)
    return {
        "accuracy": float(np.mean(pred == y)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "auc_roc": float(roc_auc_score(y, prob)) if both else float("nan"),
        "auc_pr": float(average_precision_score(y, prob)) if both else float("nan"),
        "positive_rate": float(y.mean()),
        "threshold": float(threshold),
    }
