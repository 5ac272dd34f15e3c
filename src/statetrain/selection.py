"""Honest selection: the best grid point of a dataset by a frozen validation metric.

The test split plays no part in the choice: its score is copied for the chosen run only after
the choice is made, and a grid point whose validation score is not finite can never win.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .io import copy_file, read_json, write_json, write_text

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


def summarize(
    task_name: str,
    specs: Mapping[str, Mapping[str, Any]],
    metrics_paths: Sequence[str],
    selection_paths: Sequence[str],
    out_csv: str,
) -> Any:
    """summary.csv: one row per dataset × grid point, the selected ones marked; the columns
    after the run's own come from the task (`Task.summary_columns`)."""
    import pandas as pd

    from .tasks import get_task

    selected = {}
    for path in selection_paths:
        sel = read_json(path)
        selected[sel["dataset"]] = sel["selected"]
    rows = []
    for path in metrics_paths:
        m = read_json(path)
        row = {
            "dataset": m["dataset"],
            "grid_point": m["grid_point"],
            "selected": selected.get(m["dataset"]) == m["grid_point"],
            "engine": m["engine"],
            "epochs": m["epochs"],
            "best_epoch": m["best_epoch"],
            "train_seconds": m["train_seconds"],
        }
        row.update(get_task(task_name, specs.get(m["dataset"]) or {}).summary_columns(m))
        rows.append(row)
    df = pd.DataFrame(rows)
    write_text(df.to_csv(index=False, float_format="%.6g"), out_csv)
    log.info("wrote %s (%d runs)", out_csv, len(df))
    return df
