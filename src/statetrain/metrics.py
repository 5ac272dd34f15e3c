"""Regression metrics of frozen predictions, overall and per frequency (per stream)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, Pearson r, R² and SNR (dB) in float64.

    SNR = 10·log10(Σy² / Σ(y-ŷ)²): the power of the pure sine over the power of the error.
    Degenerate cases (constant predictions, zero error) give NaN or inf, never an exception.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    err = p - y
    mse = float(np.mean(err**2))
    var = float(np.var(y))
    with np.errstate(divide="ignore", invalid="ignore"):
        sy, sp = y.std(), p.std()
        r = float(np.mean((y - y.mean()) * (p - p.mean())) / (sy * sp)) if sy * sp > 0 else np.nan
        r2 = 1.0 - mse / var if var > 0 else np.nan
        snr = float(10 * np.log10(np.sum(y**2) / np.sum(err**2)))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "pearson_r": r,
        "r2": float(r2),
        "snr_db": snr,
    }


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
