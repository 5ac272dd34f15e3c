"""Figures: loss curves, the assignment's Graph 1 and Graph 2, the learnability map.

Every figure has labelled axes with units and a legend, and is sized to be read in the
Snakemake report at its default width.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .io import save_figure_file

TARGET_VARIANCE = 0.5  # variance of a unit sine: the MSE of a model that learned nothing


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Write a figure (parent folders made) and free it: every task's figures go through here."""
    try:
        save_figure_file(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def loss_curves(history: Mapping[str, list], path: str | Path, title: str = "") -> None:
    """Online training loss against frozen validation MSE, per epoch (log scale)."""
    if "val_mse" not in history and "val_loss" in history:
        _batch_curves(history, path, title)
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = history.get("epoch") or list(range(1, len(history["train_loss"]) + 1))
    ax.plot(epochs, history["train_loss"], "o-", label="online training loss (weights moving)")
    if history.get("val_mse"):
        ax.plot(epochs, history["val_mse"], "s-", label="frozen validation MSE")
        for key in sorted(k for k in history if k.startswith("val_mse_")):
            ax.plot(
                epochs,
                history[key],
                "--",
                lw=1,
                alpha=0.7,
                label=f"validation {key.removeprefix('val_mse_')}",
            )
    ax.axhline(TARGET_VARIANCE, color="grey", ls=":", label="0.5 = learned nothing")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(title or "Loss curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


# Frozen validation metrics worth a curve (bounded or comparable across epochs), by name or
# as the prefix of a per-target / per-class key (r2_load, f1_walking).
CURVE_METRICS = ("auc", "auc_pr", "auc_roc", "f1", "macro_f1", "accuracy", "balanced_accuracy")
CURVE_METRICS += ("recon", "kl", "r2")


def _batch_curves(history: Mapping[str, list], path: str | Path, title: str = "") -> None:
    """Training vs frozen validation loss, and the validation metrics when the task logs any
    (a second panel only then: an empty axis says nothing)."""
    epochs = history.get("epoch") or list(range(1, len(history["train_loss"]) + 1))

    def plotted(key: str) -> bool:
        name, values = key.removeprefix("val_"), history[key]
        numeric = bool(values) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )
        return (
            key.startswith("val_")
            and key != "val_loss"
            and numeric
            and any(name == m or name.startswith(m + "_") for m in CURVE_METRICS)
        )

    metrics = [k for k in sorted(history) if plotted(k)][:8]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4))
    axes = list(axes) if metrics else [axes]
    axes[0].plot(epochs, history["train_loss"], "o-", ms=3, label="training loss (online)")
    axes[0].plot(epochs, history["val_loss"], "s-", ms=3, label="frozen validation loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8)
    for key in metrics:
        axes[1].plot(epochs, history[key], "o-", ms=3, label=key.removeprefix("val_"))
    if metrics:
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("frozen validation metric")
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Training curves")
    save_figure(fig, path)


def sweep_curves(
    histories: Mapping[str, Mapping[str, list]],
    path: str | Path,
    title: str = "",
    monitor: str = "val_mse",
) -> None:
    """The monitored frozen validation metric per epoch of every grid point, overlaid."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hist in histories.items():
        values = hist.get(monitor) or hist["train_loss"]
        ax.plot(range(1, len(values) + 1), values, "o-", ms=3, label=name)
    if monitor == "val_mse":
        ax.axhline(TARGET_VARIANCE, color="grey", ls=":", label="0.5 = learned nothing")
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"frozen validation {monitor.removeprefix('val_')}")
    ax.set_title(title or f"Sweep: validation {monitor.removeprefix('val_')} per grid point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def close(fig: plt.Figure) -> None:
    plt.close(fig)


__all__ = ["close", "loss_curves", "save_figure", "sweep_curves"]
