"""Honest selection: the best grid point of a dataset by a frozen validation metric.

The test split plays no part in the choice: its score is copied for the chosen run only after
the choice is made, and a grid point whose validation score is not finite can never win.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from .io import copy_file, read_json, write_json

log = logging.getLogger("statetrain")


class SelectionError(RuntimeError):
    """No grid point can be selected; the message says why and where to look."""


def select_grid_point(
    dataset: str,
    names: Sequence[str],
    metrics_paths: Sequence[str],
    model_paths: Sequence[str],
    out_model: str,
    out_selection: str,
    out_metrics: str,
    metric: str = "mse",
    mode: str = "min",
) -> dict[str, Any]:
    """Pick the run with the best frozen validation `metric` (`mode` min or max), copy its
    model, and write the selection (every candidate's score) and the chosen run's metrics."""
    key = f"val_{metric}"
    candidates = []
    for name, path in zip(names, metrics_paths, strict=True):
        m = read_json(path)
        score = m["validation"]["overall"].get(metric)
        candidates.append({"grid_point": name, key: score, "best_epoch": m["best_epoch"]})
    finite = [
        i
        for i, c in enumerate(candidates)
        if isinstance(c[key], (int, float)) and math.isfinite(c[key])
    ]
    if not finite:
        raise SelectionError(
            f"dataset {dataset}: no grid point has a finite validation {metric}, so none can be "
            "selected; the train logs (results/logs/train/) say why each run ended as it did."
        )
    pick = min if mode == "min" else max
    best = pick(finite, key=lambda i: candidates[i][key])
    chosen = read_json(metrics_paths[best])
    copy_file(model_paths[best], out_model)
    selection = {
        "dataset": dataset,
        "criterion": f"{'lowest' if mode == 'min' else 'highest'} frozen validation {metric} "
        "(the test split is not used to choose)",
        "selected": names[best],
        "source": model_paths[best],
        "candidates": candidates,
    }
    write_json(selection, out_selection)
    write_json({**chosen, "selected": names[best]}, out_metrics)
    log.info(
        "%s: selected %s (validation %s %.6g, test %s %.6g)",
        dataset,
        names[best],
        metric,
        chosen["validation"]["overall"][metric],
        metric,
        chosen["test"]["overall"][metric],
    )
    return selection
