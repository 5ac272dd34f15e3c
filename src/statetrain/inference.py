"""Using a trained model: frozen metrics and predictions of any checkpoint on a data file.

What `statetrain evaluate` and `statetrain predict` run. The model is rebuilt from the
checkpoint by its own task (`checkpoint.load_model`), the data file is read with the same safe
readers and checked with the same checks as in training, and nothing here writes over an
input: the output path is compared with the checkpoint and the data before any work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model
from .io import refuse_overwrite, write_npy, write_text
from .validation import DatasetError

log = logging.getLogger("statetrain")

PREDICTION_SUFFIXES = (".npy", ".csv")


def _expect_suffix(data: str | Path, task: str) -> None:
    want = ".npy" if task == "frequency" else ".npz"
    if Path(data).suffix != want:
        raise DatasetError(
            data,
            "format",
            f"a {task}-task checkpoint reads {want} split files, and this file is "
            f"'{Path(data).suffix or 'without suffix'}'.",
            f"Pass a split of the checkpoint's task (the workflow writes them under "
            f"results/data/<dataset>/<split>{want}).",
        )


def _frequency_split(data: str | Path, ckpt: Mapping[str, Any]) -> Any:
    from .trainer import Split
    from .validation import load_array, validate_array

    array = load_array(data)
    validate_array(array, path=data)
    split = Split.from_array(array)
    inputs = int(getattr(ckpt.get("model_args"), "get", lambda *_: 0)("input_size", 0) or 0)
    if inputs and split.x.shape[1] != inputs:
        raise DatasetError(
            data,
            "columns",
            f"the file has {split.x.shape[1]} input columns and the model takes {inputs}.",
            "Pass a split with the same frequencies as the model was trained on.",
        )
    return split


def _batch_split(data: str | Path, task: Any) -> dict[str, np.ndarray]:
    from .tasks.base import load_split

    arrays = load_split(data)
    task.validate(arrays, data)
    return arrays


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | Path, *, state_reset: str | None = None
) -> dict[str, Any]:
    """Frozen-weight metrics of `checkpoint` on the split file `data` (state carried as the
    checkpoint was scored in training, unless `state_reset` says otherwise)."""
    from .tasks import get_task

    model, ckpt = load_model(checkpoint)
    task_name = ckpt.get("task", "frequency")
    _expect_suffix(data, task_name)
    if task_name == "frequency":
        from .metrics import evaluate_streams
        from .trainer import predict

        split = _frequency_split(data, ckpt)
        pred = predict(model, split, state_reset or ckpt.get("state_reset") or "epoch")
        freqs = ckpt.get("frequencies") or list(range(1, 1 + len(split.starts)))
        return evaluate_streams(split.y, pred, split.starts, split.columns, freqs)
    task = get_task(task_name, {}, ckpt.get("config") or {})
    return {"overall": task.evaluate(model, _batch_split(data, task), torch.device("cpu"))}


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
    from .tasks import get_task

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
    task_name = ckpt.get("task", "frequency")
    _expect_suffix(data, task_name)
    if task_name == "frequency":
        from .trainer import predict

        split = _frequency_split(data, ckpt)
        columns = {"prediction": predict(model, split, state_reset or "stream")}
    else:
        task = get_task(task_name, {}, ckpt.get("config") or {})
        columns = task.predict(model, _batch_split(data, task), torch.device("cpu"))
    matrix = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    if out.suffix == ".npy":
        write_npy(matrix.astype(np.float32), out)
    else:
        lines = [",".join(columns)] + [",".join(f"{v:.9g}" for v in row) for row in matrix]
        write_text("\n".join(lines) + "\n", out)
    log.info("wrote %d predictions (%s) to %s", len(matrix), ", ".join(columns)[:80], out)
    return {"rows": len(matrix), "columns": list(columns), "out": str(out)}
