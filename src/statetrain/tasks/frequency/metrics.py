"""The frequency task's frozen scores: regression metrics overall and per stream (frequency)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...metrics import regression_metrics


def frequency_label(freq: float) -> str:
    """'1hz', '2.5hz': a key that reads as the domain and is safe in CSV headers."""
    return f"{freq:g}hz"


def evaluate_streams(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    starts: np.ndarray,
    columns: np.ndarray,
    frequencies: Sequence[float],
) -> dict[str, dict[str, float]]:
    """Metrics for the whole split (`overall`) and for each stream, keyed by its frequency."""
    out = {"overall": regression_metrics(y_true, y_pred)}
    ends = np.append(starts[1:], len(y_true))
    for start, end, col in zip(starts, ends, columns, strict=True):
        out[frequency_label(frequencies[col])] = regression_metrics(
            y_true[start:end], y_pred[start:end]
        )
    return out
