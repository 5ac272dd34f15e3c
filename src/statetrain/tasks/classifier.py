"""Sequence classification: an LSTM reads a whole multichannel sequence and names its class.

Two uses, one task:

* the defect classifier of seed 003: a steel cast's sensor sequences (temperatures, flows,
  pressures, ...), binary and imbalanced (a few defects per hundred casts), from the
  synthetic generator below or a user's ``.npy``;
* the time-series classification benchmarks (the UCR/UEA archives): binary or multi-class,
  any label values, the archive's own test split, variable-length sequences, and the
  archive's reference baselines beside the LSTM (`statetrain.tasks.ucr`).

Choices that follow from imbalance and from honest benchmarking:

* labels of any values (0/1, 1..9, "badminton", ...) are mapped to class indices in a stable
  order (numeric labels numerically) and the label texts travel in every split file and in
  the checkpoint, so predictions are named by the user's own labels;
* two classes keep `BCEWithLogitsLoss` with ``pos_weight = n_negative / n_positive`` of the
  training split (or the user's override); more classes use cross-entropy with "balanced"
  class weights ``n / (K · n_k)`` of the training split, so a rare class is not ignored;
* validation is carved from the training file, stratified, with a fixed seed; the test split
  is the user's own file when given (`data.test_path`), never touched before the end, else
  carved the same way;
* the model is selected on AUC-PR (average precision; the macro average over classes for
  more than two), whose chance level is the class rate, not on accuracy, which a model that
  always answers the majority class already maximises. The baselines make that explicit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
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
from .base import Arrays, BatchTask, split_rows

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
    "test_path": None,
    "test_labels_path": None,
    "classes": None,
    "archive": None,
    "baselines": None,
}
MIN_SEQUENCES = 10
MAX_CLASSES = 1000
MAX_LABEL_CHARS = 100
BINARY = ("0", "1")  # the class texts of a plain 0/1 problem (the generator's)
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
    """LSTM over the whole sequence → last layer's final hidden state → class logits.

    Two classes give one logit (the second class's), more give one per class. The per-channel
    normalisation lives in buffers (`mean`, `std`) set from the training split, so a saved
    state_dict carries it and the model accepts raw units at inference. `pos_weight` (binary)
    or `class_weight` (more classes) records the loss weights it was trained with, so a model
    loaded elsewhere is evaluated with the same weighted loss. `classes` holds the label
    texts, index by index (what predictions are named by).

    Sequences shorter than the padded length pass `lengths`: they are packed, so each
    sequence's final state is taken at its own last step and the padding is never read.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
        bidirectional: bool = False,
        classes: Sequence[str] = BINARY,
    ) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.classes = tuple(str(c) for c in classes)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes {list(self.classes)}: need at least two distinct labels")
        self.num_classes = len(self.classes)
        self.register_buffer("mean", torch.zeros(self.input_size))
        self.register_buffer("std", torch.ones(self.input_size))
        self.register_buffer("pos_weight", torch.ones(()))
        if self.num_classes > 2:
            self.register_buffer("class_weight", torch.ones(self.num_classes))
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
        outputs = 1 if self.num_classes == 2 else self.num_classes
        self.head = nn.Linear(self.hidden_size * (2 if self.bidirectional else 1), outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C) raw values (zero-padded past `lengths`) → (B,) or (B, K) logits."""
        z = (x - self.mean) / self.std
        if lengths is not None and bool((lengths < x.shape[1]).any()):
            packed = nn.utils.rnn.pack_padded_sequence(
                z, lengths.to("cpu", torch.int64), batch_first=True, enforce_sorted=False
            )
            _, (h_n, _) = self.lstm(packed)  # h_n comes back in the batch's own order
        else:
            _, (h_n, _) = self.lstm(z)
        # h_n: (num_layers * directions, B, H); the last layer's directions come last.
        h = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]
        out = self.head(self.head_dropout(h))
        return out.squeeze(-1) if self.num_classes == 2 else out


class _Probabilities(nn.Module):
    """x -> class probabilities (B, K), as `class_probabilities` computes them."""

    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.model.num_classes == 2:
            p = torch.sigmoid(logits)
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)


def _chunks(x: np.ndarray, lengths: np.ndarray | None):
    for start in range(0, len(x), EVAL_BATCH):
        xb = torch.as_tensor(np.asarray(x[start : start + EVAL_BATCH], np.float32))
        lb = None if lengths is None else torch.as_tensor(lengths[start : start + EVAL_BATCH])
        yield start, xb, lb


@torch.no_grad()
def class_probabilities(
    model: nn.Module,
    x: np.ndarray,
    device: torch.device | str = "cpu",
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """(N, K) class probabilities of a (N, T, C) array, in eval mode, in bounded chunks."""
    model.eval()
    device = torch.device(device)
    k = getattr(model, "num_classes", 2)
    out = []
    for _, xb, lb in _chunks(x, lengths):
        logits = model(xb.to(device), lb).double().cpu()
        if k == 2:
            p = torch.sigmoid(logits)
            out.append(torch.stack([1 - p, p], dim=1).numpy())
        else:
            out.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, k))


def predict_proba(
    model: nn.Module,
    x: np.ndarray,
    device: torch.device | str = "cpu",
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Binary models: the second class's probability (N,); more classes: (N, K)."""
    proba = class_probabilities(model, x, device, lengths)
    return proba[:, 1] if proba.shape[1] == 2 else proba


# ============================================================================ data
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
            "x[..., None]. Sequences of different lengths go in a .ts file (aeon's "
            "write_to_ts_file), which keeps each one's length.",
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
            "Interpolate or drop the sequences with missing readings before training "
            "(sequences of different lengths: a .ts file, not NaN padding).",
        )


def _check_lengths(lengths: np.ndarray, x: np.ndarray, path: str | Path | None) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.shape != (len(x),) or lengths.dtype.kind not in "iu":
        raise _err(
            path,
            "lengths",
            f"the lengths have shape {lengths.shape} and dtype {lengths.dtype}; expected "
            f"{len(x)} integers, one per sequence.",
            "Regenerate the split from the config.",
        )
    bad = (lengths < 1) | (lengths > x.shape[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _err(
            path,
            "lengths",
            f"sequence {i} claims length {int(lengths[i])}; lengths lie in 1..{x.shape[1]}.",
            "Regenerate the split from the config.",
        )
    return lengths.astype(np.int64)


def _label_texts(y: np.ndarray, path: str | Path | None) -> np.ndarray:
    """Labels of any plain dtype → their texts (integral numbers without '.0')."""
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
    if y.dtype.kind in "US":
        texts = y.astype(str)
    elif y.dtype == bool or y.dtype.kind in "iu":
        texts = y.astype(np.int64).astype(str)
    elif y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise _err(
                path,
                "labels",
                f"label {i} is {y[i]}; a label must be a finite number or a text.",
                "Give every sequence its class.",
            )
        integral = y == np.round(y)
        texts = np.where(integral, np.round(y).astype(np.int64).astype(str), y.astype(str))
    else:
        raise _err(
            path,
            "labels",
            f"the labels have dtype {y.dtype}.",
            "Save labels as integers, floats, booleans or texts (numpy 'U' arrays).",
        )
    for i, text in enumerate(texts):
        if not text.strip() or len(text) > MAX_LABEL_CHARS or any(c in text for c in ',"\n\r'):
            raise _err(
                path,
                "labels",
                f"label {i} is {text[:40]!r}; a label text must be 1..{MAX_LABEL_CHARS} "
                "characters without commas, quotes or line breaks (it names a column of the "
                "predictions CSV).",
                "Rename the classes.",
            )
    return texts


def class_order(texts: np.ndarray) -> tuple[str, ...]:
    """The distinct labels in a stable order: numerically when every label is a number (so
    '10' follows '9'), else as text. Index i of this tuple is class i everywhere."""
    distinct = sorted(set(texts.tolist()))
    try:
        return tuple(sorted(distinct, key=float))
    except ValueError:
        return tuple(distinct)


def encode_labels(texts: np.ndarray, classes: Sequence[str], path: str | Path | None) -> np.ndarray:
    """Label texts → float32 class indices; a label outside `classes` is refused by row."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(texts), dtype=np.float32)
    for i, text in enumerate(texts):
        if text not in index:
            unseen = sorted(set(texts.tolist()) - set(index))
            raise _err(
                path,
                "classes",
                f"label {i} is {text}, outside the classes (unseen "
                f"classes: {', '.join(map(repr, unseen[:10]))}; the training classes: "
                f"{', '.join(map(repr, classes[:20]))}).",
                "A model can only name classes it was trained on: correct the label, add it "
                "to data.classes and sequences of that class to the training file, or drop "
                "those sequences from this file.",
            )
        out[i] = index[text]
    return out


def _check_labels(y: np.ndarray, n: int, path: str | Path | None) -> np.ndarray:
    """A split's labels: class indices 0/1 as float32 (the binary check of split files that
    carry no `classes` array, as the generator's and earlier versions' files)."""
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
            f"label {i} is {y[i]}; a split without a `classes` array holds labels 0 "
            f"(normal) or 1 (defective) only ({int(bad.sum())} bad label(s) in all).",
            "Save the split with its classes (numpy.savez(path, x=..., y=class indices, "
            "classes=numpy.array(label_texts))), or map the labels to 0/1.",
        )
    return y.astype(np.float32)


def _check_indices(y: np.ndarray, n: int, k: int, path: str | Path | None) -> np.ndarray:
    """A split's class indices 0..k-1 (a split that carries `classes`)."""
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "fiu":
        raise _err(
            path,
            "label count",
            f"the labels have shape {y.shape} and dtype {y.dtype} for {n} sequences; "
            "expected one class index per sequence.",
            "Regenerate the split from the config.",
        )
    bad = ~np.isin(y, np.arange(k))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _err(
            path,
            "labels",
            f"label {i} is {y[i]}, outside the split's {k} classes (indices 0..{k - 1}).",
            "Regenerate the split from the config.",
        )
    return y.astype(np.float32)


def _load_labels(path: str | Path) -> np.ndarray:
    """A labels `.npy` (ints, bools, floats or texts), never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise _err(path, "exists", "the labels file does not exist.", "Check data.labels_path.")
    return load_array(path, kinds="fiubU")


def _read_sequences(
    path: str | Path, labels_path: str | Path | None, key: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, Path]:
    """One user file → (x, lengths or None, label texts, the file the labels came from): a
    `.ts` (labels inside, read by aeon) or a `.npy` of shape (N, T, C) with a labels `.npy`."""
    path = Path(path)
    labels_key = "data.labels_path" if key == "data.path" else "data.test_labels_path"
    if path.suffix == ".ts":
        from .ucr import read_ts

        x, lengths, texts = read_ts(path)
        _check_sequences(x, path)
        texts = _label_texts(texts, path)
        full = bool((lengths == x.shape[1]).all())
        return x, (None if full else lengths), texts, path
    if path.suffix != ".npy":
        raise _err(
            path,
            "format",
            f"{key} is a '{path.suffix or 'suffix-less'}' file; the classifier reads a .npy "
            "of shape (N, T, C) or a .ts file of the UCR/UEA archives.",
            f"Point {key} at a .npy or .ts file.",
        )
    if not labels_path:
        raise _err(
            path,
            "labels_path",
            f"{key} is set but {labels_key} is not: a classifier cannot learn or be scored "
            "from sequences without their labels.",
            f"Set {labels_key} to a .npy of N labels (numpy.save(path, labels)), or use a "
            ".ts file, which holds its labels.",
        )
    # The project's safe loader: the header is checked by hand, so a pickle, an object
    # array (a ragged list of sequences) or a truncated file never reaches numpy.
    x = load_array(path)
    _check_sequences(x, path)
    raw = _load_labels(labels_path)
    texts = _label_texts(raw, labels_path)
    if len(texts) != len(x):
        raise _err(
            labels_path,
            "label count",
            f"there are {len(texts)} labels for {len(x)} sequences; each sequence needs "
            "exactly one.",
            "Save one label per sequence, in the same order as the sequences.",
        )
    return x.astype(np.float32, copy=False), None, texts, Path(labels_path)


def _lengths_of(split: Mapping[str, np.ndarray]) -> np.ndarray | None:
    lengths = split.get("lengths")
    return None if lengths is None else np.asarray(lengths, dtype=np.int64)


def _classes_of(split: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    classes = split.get("classes")
    return BINARY if classes is None else tuple(np.asarray(classes).astype(str).tolist())


def _take(arrays: Mapping[str, np.ndarray], idx: np.ndarray) -> Arrays:
    """Rows `idx` of a split (classes are per file, not per row)."""
    return {k: (v if k == "classes" else v[idx]) for k, v in arrays.items()}


def _pad_to(x: np.ndarray, length: int) -> np.ndarray:
    if x.shape[1] >= length:
        return x
    return np.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0)))


# ============================================================================ task
class ClassifierTask(BatchTask):
    """Whole-sequence classification, binary or multi-class (see the module docstring)."""

    name: ClassVar[str] = "classifier"
    monitor: ClassVar[str] = "val_auc_pr"
    selection_metric: ClassVar[str] = "auc_pr"
    mode: ClassVar[str] = "max"
    figures: ClassVar[tuple[str, ...]] = ("roc_curve.png", "pr_curve.png", "confusion_matrix.png")
    batch_keys: ClassVar[tuple[str, ...]] = ("x", "y", "lengths")

    def __init__(self, spec: Mapping[str, Any], training: Mapping[str, Any] | None = None):
        super().__init__(spec, training)
        self.pos_weight: float | None = None
        self.class_weight: np.ndarray | None = None
        self._baselines: tuple[int, Any] | None = None

    @property
    def threshold(self) -> float:
        return float(self.training["threshold"])

    # ------------------------------------------------------------------ data
    @classmethod
    def check_spec(cls, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        from ..config import ConfigError

        if "labels_path" in spec and "path" not in spec:
            raise ConfigError(f"dataset '{name}': labels_path is given without path; add path.")
        return super().check_spec(name, spec)

    def _user_data(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The training file (and the test file when given), checked whole, labels encoded
        with the classes of the training file."""
        path = Path(spec["path"])
        x, lengths, texts, y_path = _read_sequences(path, spec.get("labels_path"), "data.path")
        declared = spec.get("classes")
        if declared:
            classes = tuple(_label_texts(np.asarray(declared), "data.classes").tolist())
            if len(set(classes)) != len(classes):
                raise _err(
                    path,
                    "classes",
                    f"data.classes lists a label twice ({list(classes)}).",
                    "List each class once.",
                )
        else:
            classes = class_order(texts)
        out: dict[str, Any] = {"where": path, "x": x, "lengths": lengths, "classes": classes}
        out["y"] = encode_labels(texts, classes, y_path)
        test_path = spec.get("test_path")
        if test_path:
            tx, tlen, ttexts, ty_path = _read_sequences(
                test_path, spec.get("test_labels_path"), "data.test_path"
            )
            if tx.shape[2] != x.shape[2]:
                raise _err(
                    test_path,
                    "channels",
                    f"the test sequences have {tx.shape[2]} channel(s) and the training "
                    f"sequences ({path}) {x.shape[2]}.",
                    "Give both files the same channels in the same order.",
                )
            out["test"] = {"x": tx, "lengths": tlen, "y": encode_labels(ttexts, classes, ty_path)}
        return out

    @staticmethod
    def _class_name(classes: Sequence[str], k: int) -> str:
        if tuple(classes) == BINARY:
            return "positive (1, defective)" if k == 1 else "negative (0, normal)"
        return repr(classes[k])

    def make_splits(self) -> dict[str, Arrays]:
        """Generated (from the seed) or the user's sequences, checked whole, then split with
        stratification so every split keeps every class at the same rate. With
        data.test_path the test split is the user's file, untouched, and validation is
        carved from the training file alone."""
        from .ucr import resolve_archive

        spec = resolve_archive(self.spec)
        test: dict[str, Any] | None = None
        lengths: np.ndarray | None = None
        if spec.get("path"):
            user = self._user_data(spec)
            x, y, lengths, classes = user["x"], user["y"], user["lengths"], user["classes"]
            where: str | Path = user["where"]
            test = user.get("test")
        else:
            if spec.get("test_path"):
                raise _err(
                    spec["test_path"],
                    "test_path",
                    "data.test_path is set without data.path: a test file needs the training "
                    "file it is scored against.",
                    "Set data.path to the training sequences.",
                )
            x, y = generate_sequences(spec)
            classes = BINARY
            where = "<generated>"
        n = len(x)
        if n < MIN_SEQUENCES:
            raise _err(
                where,
                "sequence count",
                f"only {n} sequences; at least {MIN_SEQUENCES} are needed to train, select "
                "and test a classifier.",
                "Provide more sequences.",
            )
        if len(classes) < 2:
            only = classes[0]
            none = " (no positive sequence)" if only == "0" else ""
            raise _err(
                where,
                "both classes",
                f"all {n} labels are {only}: there is one class only{none}, so there is "
                "nothing to separate.",
                "Include sequences of at least two classes.",
            )
        if len(classes) > MAX_CLASSES:
            raise _err(
                where,
                "classes",
                f"the labels hold {len(classes)} distinct values; at most {MAX_CLASSES} classes.",
                "Check data.labels_path: it may hold measurements, not class labels.",
            )
        counts = np.bincount(y.astype(np.int64), minlength=len(classes))
        if counts.min() < 2:
            k = int(np.argmin(counts))
            if counts[k] == 0:
                raise _err(
                    where,
                    "class size",
                    f"data.classes declares the class {classes[k]!r}, and no sequence of the "
                    "training file has it.",
                    "Drop it from data.classes, or add sequences of that class.",
                )
            row = int(np.flatnonzero(y == k)[0])
            raise _err(
                where,
                "class size",
                f"label {row} is {classes[k]}, and no other sequence has that class: a class "
                "needs at least two sequences, one to train on and one to check it "
                f"(classes and counts: {dict(zip(classes, counts.tolist(), strict=True))}).",
                "Add sequences of that class, or correct the label.",
            )
        fractions = dict(_spec(spec, "split"))
        if test is not None:
            fractions["test"] = 0.0  # the user's test file replaces the carved test split
        rows = split_rows(n, fractions, int(_spec(spec, "seed")), labels=y)
        train_counts = np.bincount(y[rows["train"]].astype(np.int64), minlength=len(classes))
        if train_counts.min() == 0:
            k = int(np.argmin(train_counts))
            raise _err(
                where,
                "train classes",
                f"after the stratified split the training split holds {int(train_counts[k])} "
                f"sequence(s) of class {self._class_name(classes, k)} (of {int(counts[k])} "
                "in all): it needs every class.",
                "Add sequences of that class or lower data.split's validation/test fractions.",
            )
        held_out = ("validation",) if test is not None else ("validation", "test")
        for split in held_out:
            held = y[rows[split]]
            if len(classes) == 2 and held.size and held.min() == held.max():
                raise _err(
                    where,
                    f"{split} classes",
                    f"after the stratified split the {split} split holds {int(held.sum())} "
                    f"positive(s) of {held.size} sequences (of {int(counts[1])} positives in "
                    "all): its AUC-PR, the selection metric, is undefined, so every grid point "
                    "would train and selection would then fail.",
                    "Add positive sequences or raise data.split's validation/test fractions.",
                )
        # Sequences of different lengths (a .ts archive, or a test file of another length)
        # are zero-padded to the longest and carry their true lengths; the model packs them.
        length = max(x.shape[1], test["x"].shape[1] if test is not None else 0)
        ragged = (
            lengths is not None
            or length != x.shape[1]
            or (test is not None and (test["lengths"] is not None or test["x"].shape[1] != length))
        )
        labels = np.asarray(classes)
        arrays: Arrays = {"x": _pad_to(x, length), "y": y}
        if ragged:
            arrays["lengths"] = np.full(n, x.shape[1], np.int64) if lengths is None else lengths
        splits = {s: {**_take(arrays, idx), "classes": labels} for s, idx in rows.items()}
        if test is not None:
            splits["test"] = {"x": _pad_to(test["x"], length), "y": test["y"], "classes": labels}
            if ragged:
                t_len = test["lengths"]
                splits["test"]["lengths"] = (
                    np.full(len(test["x"]), test["x"].shape[1], np.int64)
                    if t_len is None
                    else t_len
                )
        return splits

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
        classes = _classes_of(arrays)
        if "classes" in arrays:
            y = _check_indices(np.asarray(arrays["y"]), len(x), len(classes), path)
        else:
            y = _check_labels(arrays["y"], len(x), path)
        n, t_len, c = x.shape
        report: dict[str, Any] = {"sequences": int(n), "length": int(t_len), "channels": int(c)}
        if "lengths" in arrays:
            lengths = _check_lengths(arrays["lengths"], x, path)
            report["min_length"] = int(lengths.min())
        if len(classes) == 2:
            positives = int(y.sum())
            if positives == 0:
                log.warning("%s: no positive sequence; its AUC-ROC and AUC-PR are undefined", path)
            report.update(positives=positives, positive_rate=float(positives / n))
        if classes != BINARY:
            counts = np.bincount(y.astype(np.int64), minlength=len(classes))
            report["classes"] = dict(zip(classes, counts.tolist(), strict=True))
        return report

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

    @staticmethod
    def _balanced_weights(train: Mapping[str, np.ndarray], k: int) -> np.ndarray:
        """n / (K · n_k): every class weighs as much in the loss as if classes were equal."""
        counts = np.bincount(np.asarray(train["y"]).astype(np.int64), minlength=k)
        if counts.min() == 0:
            missing = _classes_of(train)[int(np.argmin(counts))]
            raise _err(
                None,
                "train classes",
                f"the training split has no sequence of class {missing!r}, so its weight "
                "n / (K · n_k) is undefined.",
                "Add sequences of that class to the training file.",
            )
        return counts.sum() / (k * counts.astype(np.float64))

    def prepare(self, train: Mapping[str, np.ndarray]) -> None:
        """Fix the loss's class weights from the training labels (or the override)."""
        k = len(_classes_of(train))
        if k > 2:
            self.class_weight = self._balanced_weights(train, k)
            log.info(
                "classifier: %d classes, class weights %s (n / (K · n_k) of train)",
                k,
                np.array2string(self.class_weight, precision=3),
            )
            return
        self.pos_weight = self._resolve_pos_weight(train)
        overridden = self.training.get("pos_weight") is not None
        source = "training.pos_weight" if overridden else "n_negative / n_positive of train"
        log.info("classifier: pos_weight = %.4g (%s)", self.pos_weight, source)

    def build_model(self, train: Mapping[str, np.ndarray]) -> nn.Module:
        x = np.asarray(train["x"], dtype=np.float64)
        classes = _classes_of(train)
        model = SequenceClassifier(
            x.shape[2],
            hidden_size=int(self.training["hidden_size"]),
            num_layers=int(self.training["num_layers"]),
            dropout=float(self.training["dropout"]),
            bidirectional=bool(self.training["bidirectional"]),
            classes=classes,
        )
        lengths = _lengths_of(train)
        if lengths is None:
            mean = x.mean(axis=(0, 1))
            std = np.maximum(x.std(axis=(0, 1)), STD_FLOOR)
        else:  # the statistics of the real steps, never of the zero padding
            valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
            steps = x[valid]
            mean = steps.mean(axis=0)
            std = np.maximum(steps.std(axis=0), STD_FLOOR)
        model.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        forget_bias = float(self.training.get("forget_bias") or 0.0)
        if forget_bias:
            # PyTorch's gate order is (input, forget, cell, output). A positive forget bias
            # makes the cells remember by default: the final state then still sees the
            # start of a long sequence (GunPoint's gesture sits 50-100 steps before its end).
            with torch.no_grad():
                for name, bias in model.lstm.named_parameters():
                    if name.startswith("bias_ih"):
                        bias[model.hidden_size : 2 * model.hidden_size] += forget_bias
        if model.num_classes > 2:
            weight = (
                self.class_weight
                if self.class_weight is not None
                else self._balanced_weights(train, model.num_classes)
            )
            model.class_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        else:
            pw = self.pos_weight if self.pos_weight is not None else self._resolve_pos_weight(train)
            model.pos_weight.fill_(pw)
        return model

    def model_args(self, model: nn.Module) -> dict[str, Any]:
        """Plain values that rebuild the model; `classes` only when they are not the plain
        0/1 pair, so a binary checkpoint of an earlier version still reads the same."""
        args = {
            "input_size": model.input_size,
            "hidden_size": model.hidden_size,
            "num_layers": model.num_layers,
            "dropout": model.dropout,
            "bidirectional": model.bidirectional,
        }
        if model.classes != BINARY:
            args["classes"] = list(model.classes)
        return args

    def model_from_args(self, args: Mapping[str, Any]) -> nn.Module:
        args = dict(args)
        classes = args.get("classes", list(BINARY))
        if (
            not isinstance(classes, list)
            or not 2 <= len(classes) <= MAX_CLASSES
            or not all(isinstance(c, str) and 0 < len(c) <= MAX_LABEL_CHARS for c in classes)
        ):
            raise TypeError(
                f"model_args.classes must be a list of 2..{MAX_CLASSES} label texts, "
                f"not {str(classes)[:80]}"
            )
        return SequenceClassifier(**args)

    def _loss_fn(self, model: nn.Module, device: torch.device, reduction: str) -> nn.Module:
        """Weighted BCE (two classes) or weighted cross-entropy (more): prepare()'s weights,
        else those the model was built/saved with."""
        if getattr(model, "num_classes", 2) > 2:
            weight = (
                torch.as_tensor(self.class_weight, dtype=torch.float32)
                if self.class_weight is not None
                else model.class_weight.detach().float()
            )
            return nn.CrossEntropyLoss(weight=weight.to(device), reduction=reduction)
        weight = self.pos_weight if self.pos_weight is not None else float(model.pos_weight)
        return nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(weight, device=device), reduction=reduction
        )

    def _check_classes(self, model: nn.Module, split: Mapping[str, np.ndarray]) -> None:
        got = _classes_of(split)
        if "classes" in split and tuple(model.classes) != got:
            raise _err(
                None,
                "classes",
                f"the split's classes {list(got)[:20]} are not the model's "
                f"{list(model.classes)[:20]}.",
                "Score a model on splits of the dataset it was trained on.",
            )

    # ------------------------------------------------------------------ training
    def training_step(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Class-weighted loss of a batch of (padded) sequences, and its accuracy."""
        x, y = batch["x"].float(), batch["y"]
        logits = model(x, batch.get("lengths"))
        if getattr(model, "num_classes", 2) > 2:
            y = y.long()
            hit = logits.detach().argmax(dim=1) == y
        else:
            y = y.float()
            hit = (logits.detach() >= _logit(self.threshold)) == (y > 0.5)
        loss = self._loss_fn(model, x.device, "mean")(logits, y)
        return loss, {"train_accuracy": float(hit.float().mean())}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, float]:
        model.eval()
        self._check_classes(model, split)
        k = getattr(model, "num_classes", 2)
        x = np.asarray(split["x"], np.float32)
        y = np.asarray(split["y"], np.float64)
        if len(x) == 0:
            if k == 2:
                return {"loss": float("nan"), **binary_metrics(y, np.zeros(0), self.threshold)}
            return {"loss": float("nan"), **multiclass_metrics(y, np.zeros((0, k)))}
        lengths = _lengths_of(split)
        loss_fn = self._loss_fn(model, device, "sum")
        loss_sum, logits = 0.0, []
        for start, xb, lb in _chunks(x, lengths):
            yb = torch.as_tensor(y[start : start + EVAL_BATCH], device=device)
            out = model(xb.to(device), lb)
            loss_sum += float(loss_fn(out, yb.long() if k > 2 else yb.float()))
            logits.append(out.cpu().numpy())
        z = torch.as_tensor(np.concatenate(logits), dtype=torch.float64)
        if k > 2:
            if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is not None:
                # weighted cross-entropy's "mean" divides by the summed weights: do the same
                w = loss_fn.weight.double().cpu().numpy()[y.astype(np.int64)]
                loss = loss_sum / float(w.sum())
            else:  # pragma: no cover - the loss always carries weights
                loss = loss_sum / len(x)
            return {"loss": loss, **multiclass_metrics(y, torch.softmax(z, dim=1).numpy())}
        prob = torch.sigmoid(z).numpy()
        return {"loss": loss_sum / len(x), **binary_metrics(y, prob, self.threshold)}

    def predict(
        self, model: nn.Module, split: Mapping[str, np.ndarray], device: torch.device
    ) -> dict[str, np.ndarray]:
        """Class probabilities per sequence: a plain 0/1 model gives one column `probability`
        (of class 1, as before); any other labelling one column per class, named by the
        class's label."""
        self._check_classes(model, split)
        proba = class_probabilities(model, np.asarray(split["x"]), device, _lengths_of(split))
        if tuple(model.classes) == BINARY:
            return {"probability": proba[:, 1]}
        return {label: proba[:, i] for i, label in enumerate(model.classes)}

    # ------------------------------------------------------------------ ONNX
    def onnx_graph(self, model: nn.Module) -> Any:
        """Sequences x (B, T, C) in raw units -> class probabilities (B, K); B and T dynamic
        (sequences of different lengths: one call per length, unpadded)."""
        from ..export import OnnxGraph

        c, k = int(model.input_size), int(model.num_classes)
        return OnnxGraph(
            module=_Probabilities(model),
            example=(torch.zeros(2, 3, c),),
            inputs=("x",),
            outputs=("probabilities",),
            dynamic_axes={"x": {0: "batch", 1: "time"}, "probabilities": {0: "batch"}},
            doc=(
                f"statetrain classifier: x (B,T,{c}) sequences in the training data's units "
                f"-> probabilities (B,{k}) of the classes {list(model.classes)} in that order. "
                "Sequences of different lengths: call once per length, without padding."
            ),
            description={
                "input_size": c,
                "hidden_size": int(model.hidden_size),
                "num_layers": int(model.num_layers),
                "bidirectional": bool(model.bidirectional),
                "classes": ",".join(model.classes),
            },
        )

    def onnx_probe(self, model: nn.Module) -> Arrays:
        """Random sequences in the training data's units (its per-channel mean and std)."""
        rng = np.random.default_rng(0)
        z = rng.standard_normal((32, 40, int(model.input_size)))
        x = model.mean.cpu().numpy() + model.std.cpu().numpy() * z
        return {"x": x.astype(np.float32), "lengths": rng.integers(5, 41, 32)}

    def onnx_reference(self, model: nn.Module, split: Mapping[str, np.ndarray]) -> np.ndarray:
        device = next(model.parameters()).device
        return class_probabilities(model, np.asarray(split["x"]), device, _lengths_of(split))

    def _aeon_baselines(self, train: Mapping[str, np.ndarray]) -> Any:
        """1-NN DTW and MiniRocket fitted once per training split (validation and test are
        scored with the same fit), or None when the config asks for none."""
        names = self.spec.get("baselines")
        if names is None:  # automatic: on real data, not on the generator's
            names = (
                ["dtw", "minirocket"] if (self.spec.get("path") or self.spec.get("archive")) else []
            )
        if not names:
            return None
        if self._baselines is None or self._baselines[0] != id(train):
            from .ucr import Baselines

            fitted = Baselines(names).fit(
                np.asarray(train["x"]), np.asarray(train["y"]), _lengths_of(train)
            )
            self._baselines = (id(train), fitted)
        return self._baselines[1]

    def baseline(self, train: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray]) -> dict:
        """What a model that ignores the sequences scores (a constant score has AUC-PR = the
        class rate and AUC-ROC = 0.5; always answering the training majority class has high
        accuracy under imbalance, which is why accuracy is not the selection metric), and,
        on real data, the archive's reference classifiers fitted on the same training split:
        ``dtw_accuracy``, ``minirocket_macro_f1``, ... (data.baselines)."""
        k = len(_classes_of(train))
        out = self._trivial(train, split) if k == 2 else self._trivial_multi(train, split, k)
        fitted = self._aeon_baselines(train)
        if fitted is not None:
            out.update(
                fitted.score(np.asarray(split["x"]), np.asarray(split["y"]), _lengths_of(split))
            )
        return out

    def _trivial(self, train: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray]) -> dict:
        y_train = np.asarray(train["y"])
        y = np.asarray(split["y"], np.float64)
        majority = float(y_train.mean() >= 0.5)
        rate = float(y.mean()) if len(y) else float("nan")
        # The best constant logit under the weighted BCE puts p = w·π / (w·π + 1 − π).
        w = self.pos_weight if self.pos_weight is not None else self._resolve_pos_weight(train)
        pi = float(y_train.mean())
        p = float(np.clip(w * pi / (w * pi + 1.0 - pi), 1e-7, 1 - 1e-7))
        loss = float(np.mean(-(w * y * np.log(p) + (1 - y) * np.log(1 - p)))) if len(y) else 0.0
        pred = np.full(len(y), majority)
        return {
            "loss": loss,
            "accuracy": float(np.mean(y == majority)) if len(y) else float("nan"),
            "balanced_accuracy": _balanced(y, pred),
            "macro_f1": _macro_f1(y, pred),
            "auc_pr": rate,
            "auc_roc": 0.5,
            "positive_rate": rate,
        }

    def _trivial_multi(
        self, train: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray], k: int
    ) -> dict:
        y_train = np.asarray(train["y"]).astype(np.int64)
        y = np.asarray(split["y"]).astype(np.int64)
        if len(y) == 0:
            return dict.fromkeys(("loss", "accuracy", "balanced_accuracy", "macro_f1"), math.nan)
        prior = np.bincount(y_train, minlength=k) / len(y_train)
        w = self.class_weight if self.class_weight is not None else self._balanced_weights(train, k)
        # The best constant under weighted cross-entropy: p_k ∝ w_k · π_k.
        p = np.clip(w * prior / np.sum(w * prior), 1e-7, None)
        loss = float(np.sum(w[y] * -np.log(p[y])) / np.sum(w[y]))
        majority = int(np.argmax(prior))
        pred = np.full(len(y), majority)
        rates = np.bincount(y, minlength=k) / len(y)
        return {
            "loss": loss,
            "accuracy": float(np.mean(y == majority)),
            "balanced_accuracy": _balanced(y, pred),
            "macro_f1": _macro_f1(y, pred),
            "auc_pr": float(np.mean(rates[rates > 0])),
            "auc_roc": 0.5,
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
        """ROC, PR and confusion matrix of the selected model on the TEST split (one
        one-vs-rest curve per class when there are more than two)."""
        test = splits["test"]
        device = next(model.parameters()).device
        y = np.asarray(test["y"]).astype(np.int64)
        proba = class_probabilities(model, np.asarray(test["x"]), device, _lengths_of(test))
        classes = tuple(model.classes)
        k = len(classes)
        suffix = f" — {title}" if title else ""
        # The curves: the positive class for two classes, every class one-vs-rest for more.
        curves = [(classes[1], 1)] if k == 2 else [(c, i) for i, c in enumerate(classes)]
        named = classes != BINARY

        fig, ax = plt.subplots(figsize=(5, 5))
        drawn = 0
        for label, i in curves:
            yi = (y == i).astype(int)
            if 0 < yi.sum() < len(yi):
                fpr, tpr, _ = roc_curve(yi, proba[:, i])
                auc = roc_auc_score(yi, proba[:, i])
                name = f"class {label} " if (k > 2 or named) else ""
                ax.plot(fpr, tpr, label=f"{name}model (AUC = {auc:.3f})".strip())
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "undefined: the test split holds one class", ha="center")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="chance (AUC = 0.5)")
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"ROC{', one vs rest' if k > 2 else ''}, test split{suffix}",
        )
        ax.legend(loc="lower right", fontsize=8 if k > 4 else None)
        save_figure(fig, out["roc_curve.png"])

        fig, ax = plt.subplots(figsize=(5, 5))
        drawn = 0
        for label, i in curves:
            yi = (y == i).astype(int)
            if 0 < yi.sum() < len(yi):
                precision, recall, _ = precision_recall_curve(yi, proba[:, i])
                ap = average_precision_score(yi, proba[:, i])
                name = f"class {label} " if (k > 2 or named) else ""
                ax.step(recall, precision, where="post", label=f"{name}model (AP = {ap:.3f})")
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "undefined: the test split holds one class", ha="center")
        if k == 2:
            rate = float(np.mean(y == 1)) if len(y) else float("nan")
            ax.axhline(rate, ls="--", color="grey", label=f"chance = positive rate ({rate:.3f})")
        else:
            ax.axhline(1 / k, ls="--", color="grey", label=f"chance ≈ 1/K ({1 / k:.3f})")
        ax.set(
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"precision-recall{', one vs rest' if k > 2 else ''}, test split{suffix}",
        )
        ax.legend(loc="lower left", fontsize=8 if k > 4 else None)
        save_figure(fig, out["pr_curve.png"])

        if k == 2:
            pred = (proba[:, 1] >= self.threshold).astype(int)
            ticks = ["normal (0)", "defect (1)"] if not named else [str(c) for c in classes]
            how = f"threshold {self.threshold:g}"
        else:
            pred = proba.argmax(axis=1)
            ticks = [str(c) for c in classes]
            how = "most probable class"
        cm = confusion_matrix(y, pred, labels=list(range(k)))
        size = max(4.5, 0.45 * k + 2)
        fig, ax = plt.subplots(figsize=(size, size - 0.5))
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
                fontsize=13 if k <= 4 else 9,
            )
        ax.set(
            xticks=list(range(k)),
            yticks=list(range(k)),
            xticklabels=ticks,
            yticklabels=ticks,
            xlabel="predicted",
            ylabel="true",
            title=f"test split, {how}{suffix}",
        )
        save_figure(fig, out["confusion_matrix.png"])


# ============================================================================ helpers
def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _spec(spec: Mapping[str, Any], key: str) -> Any:
    value = spec.get(key)
    return SPEC_DEFAULTS[key] if value is None else value


def _balanced(y: np.ndarray, pred: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    import warnings

    with warnings.catch_warnings():  # a split missing a class: sklearn warns, the value stands
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(np.asarray(y).astype(int), pred))


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float(f1_score(np.asarray(y).astype(int), pred, average="macro", zero_division=0))


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Thresholded and ranking metrics of probabilities `prob` against 0/1 labels `y`.

    The AUCs are nan (not an exception) on a one-class split: a small validation split may
    legitimately hold no defect, and the run should go on and say so. Balanced accuracy and
    macro-F1 are the benchmarks' scores, comparable with the multi-class ones.
    """
    y = np.asarray(y).astype(int)
    if len(y) == 0:
        keys = (
            "accuracy",
            "balanced_accuracy",
            "macro_f1",
            "precision",
            "recall",
            "f1",
            "auc_roc",
            "auc_pr",
            "positive_rate",
        )
        return {**dict.fromkeys(keys, float("nan")), "threshold": float(threshold)}
    pred = (np.asarray(prob) >= threshold).astype(int)
    both = 0 < y.sum() < len(y)
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": _balanced(y, pred),
        "macro_f1": _macro_f1(y, pred),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "auc_roc": float(roc_auc_score(y, prob)) if both else float("nan"),
        "auc_pr": float(average_precision_score(y, prob)) if both else float("nan"),
        "positive_rate": float(y.mean()),
        "threshold": float(threshold),
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of the most probable class, and the macro
    averages over classes (one vs rest) of AUC-ROC and AUC-PR, the selection metric.

    A class absent from the split has no AUC; the averages run over the classes the split
    holds (nan when it holds one class only), so a small validation split still selects.
    """
    y = np.asarray(y).astype(int)
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "auc_roc", "auc_pr")
    if len(y) == 0:
        return dict.fromkeys(keys, float("nan"))
    pred = np.asarray(proba).argmax(axis=1)
    rocs, aps = [], []
    for i in range(proba.shape[1]):
        yi = (y == i).astype(int)
        if 0 < yi.sum() < len(yi):
            rocs.append(roc_auc_score(yi, proba[:, i]))
            aps.append(average_precision_score(yi, proba[:, i]))
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": _balanced(y, pred),
        "macro_f1": _macro_f1(y, pred),
        "auc_roc": float(np.mean(rocs)) if rocs else float("nan"),
        "auc_pr": float(np.mean(aps)) if aps else float("nan"),
    }
