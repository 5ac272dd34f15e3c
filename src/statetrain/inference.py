"""Using a trained model: frozen metrics and predictions of any checkpoint on a data file.

What `statetrain evaluate` and `statetrain predict` run, for every task: the checkpoint names
its task, the task rebuilds the model (`checkpoint.load_model`), reads and checks the data
file with the same checks as in training, and scores or predicts. Nothing here writes over an
input: the output path is compared with the checkpoint and the data before any work is done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import load_model
from .io import refuse_overwrite, write_npy, write_text
from .tasks import task_class
from .validation import DatasetError

log = logging.getLogger("statetrain")

PREDICTION_SUFFIXES = (".npy", ".csv")


def task_and_split(ckpt: dict, data: str | Path) -> tuple[Any, Any]:
    """The checkpoint's task and the split file read and checked by it."""
    task_name = ckpt.get("task", "frequency")
    task = task_class(task_name).from_checkpoint(ckpt)
    wanted = [f".{x}" for x in task.data_suffixes or (task.split_suffix,)]
    if Path(data).suffix.lower() not in wanted:
        raise DatasetError(
            data,
            "format",
            f"a {task_name}-task checkpoint reads {' or '.join(wanted)} files, and this file "
            f"is '{Path(data).suffix or 'without suffix'}'.",
            "Pass a split of the checkpoint's task (the workflow writes them under "
            f"results/data/<dataset>/<split>.{task.split_suffix}).",
        )
    return task, task.read_split(data)


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | Path, *, state_reset: str | None = None
) -> dict[str, Any]:
    """Frozen-weight metrics of `checkpoint` on the split file `data` (stateful models: the
    state carried as the checkpoint was scored in training, unless `state_reset` says)."""
    model, ckpt = load_model(checkpoint)
    task, split = task_and_split(ckpt, data)
    return task.evaluate_model(model, split, state_reset=state_reset)


def predict_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    state_reset: str | None = None,
) -> dict[str, Any]:
    """Write the frozen model's predictions for every row of `data` to `out` (.npy: a float
    matrix; .csv: named columns), one row per input row (per sequence or site for batch
    tasks). Stateful models carry the state from each stream's start by default."""
    out = Path(out)
    if out.suffix not in PREDICTION_SUFFIXES:
        raise DatasetError(
            out,
            "format",
            f"predictions are written as {' or '.join(PREDICTION_SUFFIXES)}, chosen by the "
            f"output's suffix, and '{out.suffix or out.name}' is neither.",
            "Name the output file predictions.npy or predictions.csv.",
        )
    refuse_overwrite(out, [checkpoint, data])
    model, ckpt = load_model(checkpoint)
    task, split = task_and_split(ckpt, data)
    columns = task.predict_model(model, split, state_reset=state_reset)
    matrix = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    if out.suffix == ".npy":
        write_npy(matrix.astype(np.float32), out)
    else:
        lines = [",".join(columns)] + [",".join(f"{v:.9g}" for v in row) for row in matrix]
        write_text("\n".join(lines) + "\n", out)
    log.info("wrote %d predictions (%s) to %s", len(matrix), ", ".join(columns)[:80], out)
    return {"rows": len(matrix), "columns": list(columns), "out": str(out)}
