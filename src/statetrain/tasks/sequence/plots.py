"""Predictions against the truth over time: the sequence task's figure.

Regression: one panel per target (up to six), the truth, the frozen model and the
persistence and AR baselines over the split's scored rows. Classification: the true class
as a step line over the predicted probability of each class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_PANELS = 6
MAX_ROWS = 3000  # plot at most this many steps (the split's start) so lines stay readable


def prediction_figure(task: Any, model: Any, train: Any, table: Any, path: str | Path) -> Path:
    """Write the figure of `model` on `table` (a SeriesTable with targets) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import save_figure_file
    from .metrics import regression_baselines, softmax

    rows = table.scored_rows()
    out = task._outputs(model, table, rows)
    shown = slice(0, min(len(rows), MAX_ROWS))
    x_axis = np.arange(len(rows))[shown]
    horizon = table.columns.horizon
    if task.objective == "classification":
        probs = softmax(out)
        labels = table.ahead()
        classes = task.classes or list(range(probs.shape[1]))
        fig, axes = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
        axes[0].step(x_axis, labels[shown], where="post", color="k", lw=1.2, label="truth")
        axes[0].step(
            x_axis,
            probs.argmax(axis=1)[shown],
            where="post",
            color="C3",
            lw=0.8,
            label="model (most probable)",
        )
        axes[0].set_yticks(range(len(classes)), [str(c) for c in classes])
        axes[0].legend(loc="upper right", fontsize=8)
        for k, c in enumerate(classes):
            axes[1].plot(x_axis, probs[shown, k], lw=0.8, label=f"p({c})")
        axes[1].set_ylabel("probability")
        axes[1].set_xlabel("step of the split (state carried from each stream's start)")
        axes[1].legend(loc="upper right", fontsize=8, ncol=len(classes))
    else:
        truth = table.ahead()
        pred = model.denormalise(out)
        spec = {"ar_order": task.spec.get("ar_order", 5), "period": task.spec.get("period")}
        base = regression_baselines(
            train, table, ar_order=int(spec["ar_order"] or 5), period=spec["period"]
        )
        names = list(table.columns.targets)[:MAX_PANELS]
        fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.6 * len(names) + 0.6), sharex=True)
        axes = np.atleast_1d(axes)
        for j, (ax, name) in enumerate(zip(axes, names, strict=False)):
            ax.plot(x_axis, truth[shown, j], color="k", lw=1.2, label="truth")
            ax.plot(x_axis, pred[shown, j], color="C3", lw=1.0, label="LSTM (frozen)")
            ax.plot(
                x_axis,
                base["persistence"][shown, j],
                color="C0",
                lw=0.7,
                alpha=0.7,
                label="persistence",
            )
            ax.plot(x_axis, base["ar"][shown, j], color="C2", lw=0.7, alpha=0.7, label="AR")
            ax.set_ylabel(name + (f" (t+{horizon})" if horizon else ""))
        axes[0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[-1].set_xlabel("step of the split (state carried from each stream's start)")
    fig.suptitle(f"Frozen predictions against the truth: {Path(table.path).name}", fontsize=10)
    fig.tight_layout()
    save_figure_file(fig, path)
    plt.close(fig)
    return Path(path)
