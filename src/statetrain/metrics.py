"""Regression metrics of frozen predictions, overall and per frequency (per stream)."""

from __future__ import annotations

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


class MetricsTracker:
    """Per-epoch series of any metric, over a history dict of lists (the trainer's own).

    Epochs are 1-based. `min_delta`: an epoch is a new best only if it beats the previous best
    by more than `min_delta` (in the direction of `mode`).
    """

    def __init__(self, history: dict[str, list] | None = None) -> None:
        self.history = history if history is not None else {}

    def update(self, name: str, value: float) -> None:
        self.history.setdefault(name, []).append(value)

    def get_history(self, name: str) -> list:
        return list(self.history.get(name, []))

    def get_latest(self, name: str) -> float | None:
        values = self.history.get(name) or [None]
        return values[-1]

    def get_best_epoch(self, name: str, mode: str = "min", min_delta: float = 0.0) -> int:
        """The epoch of the best value (0 when there is none)."""
        sign = 1.0 if mode == "min" else -1.0
        best, best_epoch = float("inf"), 0
        for epoch, value in enumerate(self.history.get(name, []), start=1):
            if value is None or not np.isfinite(value):
                continue
            if sign * value < best - min_delta:
                best, best_epoch = sign * value, epoch
        return best_epoch

    def get_best(self, name: str, mode: str = "min") -> float | None:
        epoch = self.get_best_epoch(name, mode)
        return self.history[name][epoch - 1] if epoch else None

    def has_improved(self, name: str, mode: str = "min", min_delta: float = 0.0) -> bool:
        """Whether the latest epoch is the best so far (by more than `min_delta`)."""
        n = len(self.history.get(name, []))
        return n > 0 and self.get_best_epoch(name, mode, min_delta) == n

    def get_running_average(self, name: str, window: int = 5) -> float | None:
        values = [v for v in self.history.get(name, [])[-window:] if v is not None]
        return float(np.mean(values)) if values else None

    def get_summary(self, mode: str = "min") -> dict[str, dict[str, float | int | None]]:
        out = {}
        for name, values in self.history.items():
            nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if not nums:
                continue
            out[name] = {
                "latest": nums[-1],
                "best": self.get_best(name, mode),
                "best_epoch": self.get_best_epoch(name, mode),
                "mean": float(np.mean(nums)),
                "min": float(np.min(nums)),
                "max": float(np.max(nums)),
            }
        return out

    def row(self, index: int) -> dict[str, object]:
        """Epoch `index + 1` as a dict (None where a metric was not recorded that epoch)."""
        series = {k: v for k, v in self.history.items() if isinstance(v, list)}
        return {k: (v[index] if -len(v) <= index < len(v) else None) for k, v in series.items()}

    def rows(self) -> list[dict[str, object]]:
        """The history as one dict per epoch (for CSV and loggers)."""
        n = max((len(v) for v in self.history.values() if isinstance(v, list)), default=0)
        return [self.row(i) for i in range(n)]
