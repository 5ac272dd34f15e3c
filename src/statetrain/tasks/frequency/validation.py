"""The frequency task's dataset checks: an (N, n_frequencies + 2) float array of S, the
one-hot C and the target, in streams of consecutive rows. Each failure raises DatasetError
with one paragraph: which check failed, where (row/column), what was found and expected."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...config import ConfigError, check_split_files, user_paths
from ...validation import ACCEPTED_DTYPES, DatasetError, file_digest, load_array

TARGET_EPS = 1e-3


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def validate_array(
    array: np.ndarray,
    *,
    path: str | Path | None = None,
    min_stream_length: int = 1,
    n_frequencies: int | None = None,
) -> dict[str, Any]:
    """Run every content check on an in-memory array; return the report or raise DatasetError."""
    if array.ndim != 2:
        raise DatasetError(
            path,
            "2-D",
            f"the array has shape {array.shape}; expected 2-D "
            "(rows, columns) = (N, n_frequencies + 2).",
        )
    if array.dtype not in ACCEPTED_DTYPES:
        raise DatasetError(path, "dtype", f"dtype is {array.dtype}, expected float32.")
    n_rows, n_cols = array.shape
    expected_cols = (n_frequencies + 2) if n_frequencies else None
    if n_cols < 3 or (expected_cols and n_cols != expected_cols):
        want = expected_cols or "at least 3"
        raise DatasetError(
            path,
            "columns",
            f"it has {n_cols} columns; expected {want}: [S, C1..Cn (one-hot), target].",
        )
    if n_rows == 0:
        raise DatasetError(path, "non-empty", "it has 0 rows.")
    finite = np.isfinite(array)
    if not finite.all():
        row = _first_bad_row(~finite.all(axis=1))
        col = int(np.flatnonzero(~finite[row])[0])
        raise DatasetError(
            path,
            "finite",
            f"row {row}, column {col} holds {array[row, col]}; "
            "every value must be finite (no NaN or Inf).",
        )
    onehot = array[:, 1:-1]
    binary = (onehot == 0) | (onehot == 1)
    if not binary.all():
        row = _first_bad_row(~binary.all(axis=1))
        col = 1 + int(np.flatnonzero(~binary[row])[0])
        raise DatasetError(
            path,
            "one-hot",
            f"row {row}, column {col} holds {array[row, col]}; C columns must be exactly 0 or 1.",
        )
    hot = onehot.sum(axis=1)
    if not (hot == 1).all():
        row = _first_bad_row(hot != 1)
        raise DatasetError(
            path,
            "one-hot",
            f"row {row} has {int(hot[row])} hot C columns; "
            "exactly one must be 1 (it selects the stream's frequency).",
        )
    which = np.argmax(onehot, axis=1)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(which)) + 1])
    seen: set[int] = set()
    for start in starts:
        col = int(which[start])
        if col in seen:
            raise DatasetError(
                path,
                "contiguous streams",
                f"the stream of column {1 + col} starts again at row {start}; "
                "each frequency must be one contiguous block of rows.",
            )
        seen.add(col)
    lengths = np.diff(np.append(starts, n_rows))
    short = np.flatnonzero(lengths < max(min_stream_length, 2))
    if short.size:
        i = int(short[0])
        raise DatasetError(
            path,
            "stream length",
            f"the stream starting at row {starts[i]} (column {1 + which[starts[i]]}) "
            f"has {lengths[i]} rows; at least {max(min_stream_length, 2)} expected "
            "(data.min_stream_length).",
        )
    target = array[:, -1]
    out = np.abs(target) > 1 + TARGET_EPS
    if out.any():
        row = _first_bad_row(out)
        raise DatasetError(
            path,
            "target range",
            f"row {row} has target {target[row]}; targets "
            f"are pure sines and must lie in [-1-{TARGET_EPS}, 1+{TARGET_EPS}].",
        )
    return {
        "path": str(path) if path is not None else None,
        "rows": int(n_rows),
        "columns": int(n_cols),
        "dtype": str(array.dtype),
        "streams": [
            {"column": int(1 + which[s]), "start": int(s), "length": int(n)}
            for s, n in zip(starts, lengths, strict=True)
        ],
        "mixture_mean": float(array[:, 0].mean()),
        "mixture_std": float(array[:, 0].std()),
        "target_min": float(target.min()),
        "target_max": float(target.max()),
        "checks": [
            "readable",
            "dtype",
            "2-D",
            "columns",
            "non-empty",
            "finite",
            "one-hot",
            "contiguous streams",
            "stream length",
            "target range",
        ],
        "valid": True,
    }


def validate_dataset(
    path: str | Path,
    *,
    min_stream_length: int = 1,
    n_frequencies: int | None = None,
) -> dict[str, Any]:
    """Validate the file at `path`; return a JSON-able report or raise DatasetError."""
    path = Path(path)
    array = load_array(path)
    report = validate_array(
        array, path=path, min_stream_length=min_stream_length, n_frequencies=n_frequencies
    )
    report["sha256"] = file_digest(path)
    return report


# ------------------------------------------------------------------ the config's scenario
MAX_STREAM_ROWS = 50_000_000  # rows of one generated stream (four streams × 4 bytes × 6 cols)

_ANGLE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*\*\s*)?pi(?:\s*/\s*(\d+(?:\.\d+)?))?\s*$")


def parse_angle(value: float | int | str) -> float:
    """Radians from a number or from 'pi', 'pi/4', '3*pi/4' (YAML has no π literal)."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _ANGLE.match(str(value))
    if not match:
        raise ConfigError(
            f"phase_jitter '{value}' is neither a number nor of the form 'pi', 'pi/4', '3*pi/4'."
        )
    factor = float(match.group(1) or 1.0)
    divisor = float(match.group(2) or 1.0)
    return factor * math.pi / divisor


def check_scenario(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A frequency-task scenario's values that the schema cannot check one by one: the
    phase noise as radians, an increasing amplitude range, streams that fit in memory, no
    frequency at or above Nyquist, streams long enough, kept streams among the frequencies;
    user files given for all three splits."""
    check_split_files(name, spec)
    spec["phase_jitter"] = parse_angle(spec["phase_jitter"])
    lo, hi = spec["amplitude_range"]
    if lo > hi:
        raise ConfigError(f"dataset '{name}': amplitude_range [{lo}, {hi}] must be increasing.")
    rows = round(spec["duration_s"] * spec["fs"])
    if rows > MAX_STREAM_ROWS and not user_paths(spec):
        raise ConfigError(
            f"dataset '{name}': duration_s × fs = {rows:,} rows per stream, more than "
            f"{MAX_STREAM_ROWS:,} (the generated splits would not fit in memory). Lower "
            "duration_s or fs."
        )
    aliased = [f for f in spec["frequencies"] if f >= spec["fs"] / 2]
    if aliased:
        raise ConfigError(
            f"dataset '{name}': frequencies {aliased} are at or above half the sampling rate "
            f"fs/2 = {spec['fs'] / 2:g} Hz, so their samples alias to other frequencies. Raise "
            "fs or drop those frequencies."
        )
    if rows < spec["min_stream_length"] and not user_paths(spec):
        raise ConfigError(
            f"dataset '{name}': duration_s × fs = {rows} rows per stream, fewer than "
            f"min_stream_length = {spec['min_stream_length']}. Raise duration_s or lower "
            "min_stream_length."
        )
    unknown = [f for f in spec.get("streams") or [] if f not in spec["frequencies"]]
    if unknown:
        raise ConfigError(
            f"dataset '{name}': streams {unknown} are not among frequencies "
            f"{spec['frequencies']}; list frequencies to keep, e.g. streams: [1]."
        )
    return spec
