"""A user's multichannel time series: read, checked, split and normalised.

Everything a user's file can get wrong is found here, before any training, and reported as
one `DatasetError` paragraph naming the file, the column, the row and the fix: a missing
column, a non-numeric cell, NaN or Inf, a time that does not increase within a stream, a
stream split across the file, a stream too short, a label outside the classes, a constant
input. Rows are reported as data rows counted from 1 (for a CSV, line = row + 1, the header
being line 1).

The prepared split files are CSVs of the raw values of the columns the task uses (stream,
time, inputs, targets), so a prepared split, a user's own split file and a new file given to
`statetrain predict` are all read by the same `read_table` + `SeriesTable.from_frame`.
Normalisation is fitted on the training split only (`Normaliser.fit`) and travels inside the
model (its buffers), so predictions on a new file use the training statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...io import write_text
from ...validation import DatasetError, load_array, read_csv_strict

SUFFIXES = (".csv", ".parquet", ".pq", ".npy")
SPLITS = ("train", "validation", "test")
# Real recordings the pinned aeon wheel ships (data.aeon): file under aeon/datasets/data/.
AEON_SERIES = {
    "solar": "solar/solar.csv",
    "Uschange": "Uschange/Uschange.csv",
    "Airline": "Airline/Airline.csv",
    "Lynx": "Lynx/Lynx.csv",
    "ShampooSales": "ShampooSales/ShampooSales.csv",
}
AEON_ACTIVITIES = ("BasicMotions",)


def _row_text(path: str | Path | None, row: int) -> str:
    """'data row r (line r+1)' for a CSV, 'row r' otherwise (r counted from 1)."""
    if path is not None and str(path).endswith(".csv"):
        return f"data row {row + 1} (line {row + 2} of the file)"
    return f"row {row + 1}"


def read_table(path: str | Path) -> pd.DataFrame:
    """A user's table as a DataFrame: CSV (strict: a header of unique names, rows as long as
    it), Parquet, or a 2-D `.npy` (columns named '0', '1', ...), read without unpickling."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DatasetError(
            path,
            "format",
            f"the suffix '{path.suffix or path.name}' is not one the sequence task reads.",
            f"Give a {', '.join(SUFFIXES)} file.",
        )
    if not path.is_file():
        raise DatasetError(path, "exists", "the file does not exist.", "Check the path.")
    if path.suffix == ".csv":
        frame = read_csv_strict(path, "one column per channel, one row per time step")
        unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: 0")]
        return frame.drop(columns=unnamed)
    if path.suffix == ".npy":
        array = load_array(path, kinds="fiu")
        if array.ndim != 2:
            raise DatasetError(
                path,
                "shape",
                f"the array has shape {array.shape}; the sequence task reads a 2-D array "
                "(rows = time steps, columns = channels).",
                "Save a (rows, channels) array; name columns in the config by index ('0').",
            )
        return pd.DataFrame(array, columns=[str(j) for j in range(array.shape[1])])
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a broken file
        raise DatasetError(
            path, "readable", f"pyarrow could not read it as Parquet ({exc}).", "Rewrite it."
        ) from None


def aeon_table(name: str, seed: int = 0) -> pd.DataFrame:
    """A real recording the installed aeon wheel ships, as a table (nothing is downloaded).

    `BasicMotions` is the UEA archive's 80 recordings (4 activities × 20, 6 channels of a
    wrist-worn accelerometer and gyroscope, 100 steps each, TRAIN and TEST files together)
    played one after another in a fixed random order (`seed`) as one stream, each step
    labelled with its recording's activity: real labelled data for per-step classification.
    """
    import aeon.datasets

    root = Path(aeon.datasets.__file__).parent / "data"
    if name in AEON_SERIES:
        frame = pd.read_csv(root / AEON_SERIES[name])
        return frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed")])
    if name in AEON_ACTIVITIES:
        from aeon.datasets import load_from_ts_file

        parts = [load_from_ts_file(root / name / f"{name}_{s}.ts") for s in ("TRAIN", "TEST")]
        x = np.concatenate([p[0] for p in parts])  # (80, 6, 100)
        y = np.concatenate([p[1] for p in parts])
        order = np.random.default_rng(seed).permutation(len(x))
        channels = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
        blocks = []
        for k, i in enumerate(order):
            block = pd.DataFrame(x[i].T, columns=channels[: x.shape[1]])
            block.insert(0, "recording", k)
            block["activity"] = str(y[i])
            blocks.append(block)
        frame = pd.concat(blocks, ignore_index=True)
        frame.insert(0, "step", np.arange(len(frame)))
        return frame
    known = ", ".join([*AEON_SERIES, *AEON_ACTIVITIES])
    raise DatasetError(
        f"aeon:{name}", "exists", "aeon does not ship this recording.", f"Use one of {known}."
    )


# ---------------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Columns:
    """Which columns are what, from the config's data keys (names as text: '0' for .npy)."""

    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    stream: str | None = None
    time: str | None = None
    objective: str = "regression"
    horizon: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Columns:
        def name(v: Any) -> str:
            return str(v)

        stream, time = spec.get("stream"), spec.get("time")
        return cls(
            inputs=tuple(name(c) for c in spec.get("inputs") or ()),
            targets=tuple(name(c) for c in spec.get("targets") or ()),
            stream=None if stream is None else name(stream),
            time=None if time is None else name(time),
            objective=str(spec.get("objective", "regression")),
            horizon=int(spec.get("horizon", 0)),
        )

    @property
    def used(self) -> list[str]:
        """Every column the task reads, each once, in file order of meaning."""
        out: list[str] = []
        for c in (self.stream, self.time, *self.inputs, *self.targets):
            if c is not None and c not in out:
                out.append(c)
        return out


def sort_classes(labels: Sequence[Any]) -> list[Any]:
    """Numbers in numeric order, texts alphabetically (the classifier task's convention)."""
    values = list(dict.fromkeys(labels))
    if all(isinstance(v, (int, np.integer)) for v in values):
        return sorted(int(v) for v in values)
    return sorted(str(v) for v in values)


def _label_key(value: Any) -> str:
    """A label as text, whole floats as integers (1.0 in a CSV is the class 1)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------------- a table
@dataclass
class SeriesTable:
    """One checked table: the raw values the task needs, rows in file order.

    x (N, inputs) and, for regression, targets (N, targets) float64 in the user's units;
    for classification, labels (N,) class indices; starts: the first row of every stream;
    time (N,) float64 seconds or plain numbers (None when the config names no time column).
    `targets`/`labels` are None for a file read for prediction without its target columns.
    """

    path: str
    columns: Columns
    x: np.ndarray
    targets: np.ndarray | None
    labels: np.ndarray | None
    starts: np.ndarray
    stream_ids: list[Any]
    time: np.ndarray | None
    frame: pd.DataFrame  # the used columns, raw (what a prepared split file holds)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def has_targets(self) -> bool:
        return self.targets is not None or self.labels is not None

    @property
    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], len(self)).astype(np.int64)

    def scored_rows(self) -> np.ndarray:
        """Rows whose target `horizon` steps ahead lies in the same stream: the rows a model
        is trained and scored on (the last `horizon` rows of each stream have none)."""
        h = self.columns.horizon
        return np.concatenate(
            [
                np.arange(a, b - h, dtype=np.int64)
                for a, b in zip(self.starts, self.ends, strict=True)
            ]
        )

    def ahead(self) -> np.ndarray:
        """The target of each scored row: the value `horizon` steps later, same stream."""
        rows = self.scored_rows() + self.columns.horizon
        return self.targets[rows] if self.targets is not None else self.labels[rows]

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        columns: Columns,
        path: str | Path | None,
        *,
        classes: Sequence[Any] | None = None,
        require_targets: bool = True,
        min_stream_length: int = 2,
    ) -> SeriesTable:
        """Check every rule and return the arrays, or DatasetError naming the first problem."""
        where = str(path) if path is not None else "<table>"
        frame = frame.reset_index(drop=True)
        names = [str(c) for c in frame.columns]
        frame.columns = names
        have_targets = all(c in names for c in columns.targets)
        wanted = [
            c for c in columns.used if require_targets or have_targets or c not in columns.targets
        ]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DatasetError(
                where,
                "columns",
                f"column '{missing[0]}' is missing (the file has {names[:12]}"
                f"{'...' if len(names) > 12 else ''}).",
                "Fix data.inputs/targets/stream/time in the config, or add the column.",
            )
        if len(frame) == 0:
            raise DatasetError(where, "rows", "the table has no rows.", "Give at least one row.")
        regression = columns.objective == "regression"
        numeric = list(columns.inputs) + (list(columns.targets) if regression else [])
        if not have_targets:
            numeric = list(columns.inputs)
        values = {}
        for c in dict.fromkeys(numeric):
            values[c] = _numeric(frame[c], c, where)
        x = np.column_stack([values[c] for c in columns.inputs]).astype(np.float64)
        targets = labels = None
        if have_targets and regression:
            targets = np.column_stack([values[c] for c in columns.targets]).astype(np.float64)
        elif have_targets:
            labels = _labels(frame[columns.targets[0]], columns.targets[0], where, classes)
        starts, ids = _streams(frame, columns.stream, where)
        ends = np.append(starts[1:], len(frame))
        lengths = ends - starts
        need = max(min_stream_length, columns.horizon + 1)
        short = np.flatnonzero(lengths < need)
        if len(short):
            k = int(short[0])
            raise DatasetError(
                where,
                "stream length",
                f"stream {ids[k]!r} (from {_row_text(path, int(starts[k]))}) has "
                f"{lengths[k]} rows, fewer than {need} (min_stream_length "
                f"{min_stream_length}, horizon {columns.horizon}).",
                "Drop or merge short streams, or lower data.min_stream_length / horizon.",
            )
        time = _time(frame, columns.time, starts, where) if columns.time else None
        used = frame[[c for c in columns.used if c in names]]
        return cls(str(where), columns, x, targets, labels, starts, ids, time, used)

    def subset(self, lo: int, hi: int, path: str = "") -> SeriesTable:
        """Rows [lo, hi) as their own table (a time block: its streams restart there)."""
        frame = self.frame.iloc[lo:hi].reset_index(drop=True)
        starts = self.starts[(self.starts > lo) & (self.starts < hi)] - lo
        starts = np.concatenate([[0], starts]).astype(np.int64)
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        ids = [self.stream_ids[first + k] for k in range(len(starts))]
        return SeriesTable(
            path or self.path,
            self.columns,
            self.x[lo:hi],
            None if self.targets is None else self.targets[lo:hi],
            None if self.labels is None else self.labels[lo:hi],
            starts,
            ids,
            None if self.time is None else self.time[lo:hi],
            frame,
        )


def _numeric(series: pd.Series, name: str, where: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(
            where,
            "numeric",
            f"column '{name}', {_row_text(where, r)}: the cell {str(series.iloc[r])[:40]!r} "
            "is not a number.",
            "Fix the cell, or drop the row (every input and regression target is numeric).",
        )
    array = values.to_numpy(dtype=np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(array))
    if len(bad_rows):
        r = int(bad_rows[0])
        raise DatasetError(
            where,
            "finite",
            f"column '{name}', {_row_text(where, r)}: the value is {array[r]} (NaN or Inf; "
            f"{len(bad_rows)} such cell(s) in the column).",
            "Fill or interpolate missing values before training (e.g. pandas "
            "DataFrame.interpolate()), or drop those rows.",
        )
    return array


def _labels(series: pd.Series, name: str, where: str, classes: Sequence[Any] | None) -> np.ndarray:
    if series.isna().any():
        r = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise DatasetError(
            where,
            "label",
            f"column '{name}', {_row_text(where, r)}: the label is missing.",
            "Label every row, or drop unlabelled rows.",
        )
    keys = [_label_key(v) for v in series.to_numpy()]
    if classes is None:
        raw = list(dict.fromkeys(series.to_numpy().tolist()))
        if all(isinstance(v, float) and float(v).is_integer() for v in raw):
            raw = [int(v) for v in raw]
        classes = sort_classes(raw)
    index = {_label_key(c): k for k, c in enumerate(classes)}
    out = np.empty(len(keys), dtype=np.int64)
    for r, key in enumerate(keys):
        k = index.get(key)
        if k is None:
            raise DatasetError(
                where,
                "label",
                f"column '{name}', {_row_text(where, r)}: the label {key[:40]!r} is not one of "
                f"the classes {[str(c) for c in classes][:20]}.",
                "Fix the label, or list every class in data.classes (the training split "
                "decides the classes when data.classes is null).",
            )
        out[r] = k
    return out


def _streams(frame: pd.DataFrame, column: str | None, where: str) -> tuple[np.ndarray, list]:
    """First row of every stream; a stream's rows must be one contiguous block."""
    if column is None:
        return np.zeros(1, dtype=np.int64), ["all"]
    ids = frame[column]
    if ids.isna().any():
        r = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DatasetError(
            where,
            "stream",
            f"column '{column}', {_row_text(where, r)}: the stream id is missing.",
            "Give every row its stream id.",
        )
    values = ids.to_numpy()
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    seen: dict[Any, int] = {}
    for s in starts:
        key = values[s].item() if hasattr(values[s], "item") else values[s]
        if key in seen:
            raise DatasetError(
                where,
                "stream",
                f"column '{column}', {_row_text(where, int(s))}: stream {key!r} starts again "
                f"after other streams (it began at {_row_text(where, seen[key])}); the rows of a "
                "stream must be one contiguous block in time order.",
                f"Sort the file by '{column}' and time (stable), or give the two parts "
                "different ids.",
            )
        seen[key] = int(s)
    return starts, [v.item() if hasattr(v, "item") else v for v in values[starts]]


def _time(frame: pd.DataFrame, column: str, starts: np.ndarray, where: str) -> np.ndarray:
    """The time column as numbers (dates as seconds); it must increase within each stream."""
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series):
        t = _numeric(series, column, where)
    else:
        try:
            stamps = pd.to_datetime(series, utc=True, format="mixed")
        except (ValueError, TypeError) as exc:
            raise DatasetError(
                where,
                "time",
                f"column '{column}' holds neither numbers nor dates ({str(exc)[:120]}).",
                "Give times as numbers or ISO dates (2021-05-01 00:30:00), or drop data.time.",
            ) from None
        if stamps.isna().any():
            r = int(np.flatnonzero(stamps.isna().to_numpy())[0])
            raise DatasetError(
                where, "time", f"column '{column}', {_row_text(where, r)}: no time.", "Fill it."
            )
        t = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    step = np.diff(t)
    within = np.ones(len(step), dtype=bool)
    within[starts[1:] - 1] = False  # a new stream may start at any time
    bad = np.flatnonzero((step <= 0) & within)
    if len(bad):
        r = int(bad[0]) + 1
        raise DatasetError(
            where,
            "time",
            f"column '{column}', {_row_text(where, r)}: the time {series.iloc[r]!r} does not "
            f"increase (the row before has {series.iloc[r - 1]!r}).",
            "Sort each stream by time and drop duplicated time stamps.",
        )
    return t


# ---------------------------------------------------------------------------------- splits
def split_table(
    table: SeriesTable, fractions: Mapping[str, float]
) -> dict[str, tuple[int, int] | list[int]]:
    """How `table` is cut into train/validation/test, never shuffled.

    Three streams or more: whole streams in file order (the first ones train, the next
    validate, the last test), so no stream is cut. Fewer: contiguous time blocks (train,
    then validation, then test); each block starts its own stream.
    Returns, per split, a list of stream indices or one (first row, end row) block.
    """
    n = len(table.starts)
    if n >= 3:
        n_test = max(1, round(n * fractions["test"]))
        n_val = max(1, round(n * fractions["validation"]))
        n_train = n - n_val - n_test
        if n_train < 1:
            raise DatasetError(
                table.path,
                "streams",
                f"{n} streams leave none for training after {n_val} validation and {n_test} "
                "test stream(s).",
                "Give more streams, or lower data.split.validation/test.",
            )
        idx = list(range(n))
        return {
            "train": idx[:n_train],
            "validation": idx[n_train : n_train + n_val],
            "test": idx[n_train + n_val :],
        }
    rows = len(table)
    n_test = round(rows * fractions["test"])
    n_val = round(rows * fractions["validation"])
    a, b = rows - n_val - n_test, rows - n_test
    return {"train": (0, a), "validation": (a, b), "test": (b, rows)}


def take_split(table: SeriesTable, part: tuple[int, int] | list[int]) -> pd.DataFrame:
    """The raw rows of one split (its frame), as `split_table` describes them."""
    if isinstance(part, tuple):
        return table.frame.iloc[part[0] : part[1]]
    pieces = [table.frame.iloc[table.starts[k] : table.ends[k]] for k in part]
    return pd.concat(pieces)


def write_table(frame: pd.DataFrame, out: str | Path) -> Path:
    """A split as CSV (raw values, full float precision), written atomically."""
    return write_text(frame.to_csv(index=False, float_format="%.17g"), out)


# ---------------------------------------------------------------------------------- scaling
@dataclass
class Normaliser:
    """Per-column mean and standard deviation of the training split (float64)."""

    in_mean: np.ndarray
    in_std: np.ndarray
    out_mean: np.ndarray
    out_std: np.ndarray

    @classmethod
    def fit(cls, train: SeriesTable) -> Normaliser:
        """Fitted on the training rows only; a constant column is refused (it carries no
        information and would divide by zero)."""
        in_mean, in_std = _moments(train.x, train.columns.inputs, train.path)
        if train.targets is not None:
            out_mean, out_std = _moments(train.targets, train.columns.targets, train.path)
        else:
            out_mean, out_std = np.zeros(1), np.ones(1)
        return cls(in_mean, in_std, out_mean, out_std)


def _moments(values: np.ndarray, names: Sequence[str], where: str) -> tuple[np.ndarray, ...]:
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    for j, name in enumerate(names):
        if not std[j] > 1e-12 * max(1.0, abs(mean[j])):
            raise DatasetError(
                where,
                "constant",
                f"column '{name}' is constant ({values[0, j]:g}) over all {len(values)} rows of "
                "the training split, so it carries no information and cannot be normalised.",
                "Drop it from data.inputs/targets, or give training data in which it varies.",
            )
    return mean, std


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
