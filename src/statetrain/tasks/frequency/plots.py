"""The frequency task's figures: Graph 1 (one frequency), Graph 2 (every frequency), the
frozen predictions of a run, and the learnability map over phase noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ...plots import save_figure

TARGET_VARIANCE = 0.5  # variance of a unit sine: the MSE of a model that learned nothing


def _stream(array: np.ndarray, pred: np.ndarray, starts: np.ndarray, index: int):
    ends = np.append(starts[1:], len(array))
    a, b = int(starts[index]), int(ends[index])
    return array[a:b], pred[a:b]


def _panel(
    ax: plt.Axes, rows: np.ndarray, pred: np.ndarray, fs: float, freq: float, window_s: float
) -> None:
    n = min(len(rows), max(2, round(window_s * fs)))
    t = np.arange(n) / fs
    ax.plot(t, rows[:n, 0], color="0.75", lw=0.6, label="noisy mixture S")
    ax.plot(t, rows[:n, -1], color="C0", lw=1.6, label=f"target sin(2π·{freq:g}·t)")
    step = max(1, n // 400)
    mse = float(np.mean((pred - rows[:, -1]) ** 2))
    ax.plot(
        t[::step],
        pred[:n:step],
        ".",
        color="C3",
        ms=3,
        label=f"LSTM prediction (stream MSE {mse:.4f})",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.grid(alpha=0.3)


def graph1(
    array: np.ndarray,
    pred: np.ndarray,
    starts: np.ndarray,
    columns: np.ndarray,
    frequencies: Sequence[float],
    fs: float,
    path: str | Path,
    freq: float = 3.0,
    window_s: float = 1.0,
    title: str = "",
) -> None:
    """The assignment's Graph 1: one frequency, target line, predictions as dots, S behind."""
    idx = [i for i, c in enumerate(columns) if math.isclose(frequencies[c], freq)]
    i = idx[0] if idx else 0
    rows, p = _stream(array, pred, starts, i)
    fig, ax = plt.subplots(figsize=(8, 4))
    _panel(ax, rows, p, fs, frequencies[columns[i]], window_s)
    ax.set_title(title or f"Graph 1: extracting {frequencies[columns[i]]:g} Hz (test set)")
    ax.legend(fontsize=7, loc="upper right")
    save_figure(fig, path)


def prediction_figure(
    array: np.ndarray,
    pred: np.ndarray,
    starts: np.ndarray,
    columns: np.ndarray,
    frequencies: Sequence[float],
    fs: float,
    window_s: float = 1.0,
    title: str = "",
) -> plt.Figure:
    """One panel per stream: target line, predictions as dots, noisy mixture behind."""
    n = len(starts)
    cols = 2 if n > 1 else 1
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(11, 3.2 * nrows), squeeze=False)
    for i in range(n):
        ax = axes[i // cols][i % cols]
        rows, p = _stream(array, pred, starts, i)
        _panel(ax, rows, p, fs, frequencies[columns[i]], window_s)
        ax.set_title(f"{frequencies[columns[i]]:g} Hz")
        ax.legend(fontsize=6, loc="upper right")
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title or "Graph 2: every frequency extracted from the mixture (test set)")
    fig.tight_layout()
    return fig


def graph2(
    array: np.ndarray,
    pred: np.ndarray,
    starts: np.ndarray,
    columns: np.ndarray,
    frequencies: Sequence[float],
    fs: float,
    path: str | Path,
    window_s: float = 1.0,
    title: str = "",
) -> None:
    """The assignment's Graph 2: one panel per frequency."""
    save_figure(
        prediction_figure(array, pred, starts, columns, frequencies, fs, window_s, title), path
    )


def _angle_label(w: float) -> str:
    if w == 0:
        return "0"
    frac = w / math.pi
    for den in (1, 2, 3, 4, 6, 8, 16):
        num = frac * den
        if abs(num - round(num)) < 1e-4:  # the CSV keeps 6 significant digits
            num = round(num)
            top = "π" if num == 1 else f"{num}π"
            return top if den == 1 else f"{top}/{den}"
    return f"{w:.2f}"


def learnability(summary: pd.DataFrame, path: str | Path) -> None:
    """Test MSE against phase jitter: one line per grid point, the selected model marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    df = summary.sort_values("phase_jitter")
    if "streams" in df:  # experts' one-stream datasets are scored through their combination
        n_streams = df["streams"].fillna("").str.count("hz")
        df = df[n_streams == n_streams.max()]
    # One line per technique and grid point (a technique alone when there is no grid).
    key = ["technique", "grid_point"] if "technique" in df else ["grid_point"]
    if "technique" in df and df.groupby("technique")["grid_point"].nunique().max() == 1:
        key = ["technique"]
    for name, group in df.groupby(key, sort=True):
        label = ", ".join(map(str, name)) if isinstance(name, tuple) else str(name)
        ax.plot(group["phase_jitter"], group["test_mse"], "o-", ms=4, alpha=0.8, label=label)
    best = df[df["selected"]]
    ax.plot(
        best["phase_jitter"],
        best["test_mse"],
        "k*",
        ms=12,
        label="selected per dataset (by validation)",
    )
    ax.axhline(TARGET_VARIANCE, color="grey", ls=":", label="0.5 = learned nothing")
    ticks = sorted(df["phase_jitter"].unique())
    ax.set_xticks(ticks, [_angle_label(w) for w in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("phase jitter w (rad): φ ~ U(-w, w) per sample")
    ax.set_ylabel("frozen test MSE")
    ax.set_title("Learnability: test MSE against phase noise")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def learnability_table(summary: pd.DataFrame) -> str:
    """Markdown: frozen test MSE of the selected model, per technique (rows) and phase
    jitter (columns); one-stream expert datasets are left out (their combination counts)."""
    df = summary[summary["selected"]].copy()
    if "streams" in df:
        n_streams = df["streams"].fillna("").str.count("hz")
        df = df[n_streams == n_streams.max()]
    if "technique" not in df:
        df["technique"] = "reference loop"
    jitters = sorted(df["phase_jitter"].unique(), reverse=True)
    lines = [
        "| technique | " + " | ".join(f"w = {_angle_label(w)}" for w in jitters) + " |",
        "|---|" + "---|" * len(jitters),
    ]
    for name, group in df.groupby("technique", sort=True):
        cells = []
        for w in jitters:
            hit = group[group["phase_jitter"] == w]["test_mse"]
            cells.append(f"{hit.min():.4g}" if len(hit) else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "graph1",
    "graph2",
    "learnability",
    "learnability_table",
    "prediction_figure",
]
