"""Checkpoint I/O: atomic writes, finite tensors only, and loads that never run code.

A checkpoint is data: ``torch.load(..., weights_only=True)`` refuses anything but tensors and
plain containers, so a malicious pickle is rejected instead of executed. Writes go to a
temporary file in the same directory, are flushed and fsynced, then renamed over the target:
a crash at any instant leaves either the old complete file or the new complete file.
"""

from __future__ import annotations

import platform
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import WriteError, atomic_write

FORMAT = "statetrain-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message says why and what to do."""


class StaleCheckpointError(CheckpointError):
    """A sound checkpoint of this run's configuration that no longer fits what the run starts
    from (its ``init_from`` weights changed): kept as ``.previous``, not ``.corrupt``."""


def versions() -> dict[str, str]:
    from . import __version__

    return {
        "statetrain": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _non_finite(obj: Any, prefix: str = "") -> str | None:
    """The key path of the first floating tensor holding NaN/Inf, or None."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not torch.isfinite(obj).all():
            return prefix or "<tensor>"
        return None
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def save_checkpoint_file(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Write `payload` atomically; refuse NaN/Inf weights so they never reach a saved file."""
    path = Path(path)
    bad = _non_finite(payload)
    if bad:
        raise CheckpointError(
            f"Refusing to write checkpoint '{path}': tensor '{bad}' holds NaN or Inf. "
            "The previous checkpoint is kept; lower the learning rate or enable gradient "
            "clipping (training.clip_grad_norm)."
        )
    payload = {"format": FORMAT, "versions": versions(), **payload}
    try:
        return atomic_write(path, lambda fh: torch.save(payload, fh))
    except WriteError as exc:
        cause = exc.__cause__
        why = getattr(cause, "strerror", None) or str(cause or exc)
        raise CheckpointError(
            f"Could not write checkpoint '{path}': {why}. The previous checkpoint, if any, is "
            "intact; free disk space or fix the directory's permissions and run again."
        ) from exc


# A statetrain checkpoint is kilobytes to a few MB; one far above this is not ours.
MAX_CHECKPOINT_BYTES = 2 * 1024**3


def _check_archive(path: Path) -> None:
    """Refuse before torch reads a byte of data: a zip whose records are compressed (torch
    only writes stored records, so a deflated one can only be a zip bomb) or whose records
    claim more bytes than any statetrain checkpoint holds."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format, or garbage: torch.load's own checks follow
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' cannot be loaded: a broken zip archive ({exc}). Delete it to "
            "start that run afresh."
        ) from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    total = sum(i.file_size for i in infos)
    if packed or total > MAX_CHECKPOINT_BYTES:
        why = (
            f"record '{packed[0]}' is compressed, which torch.save never writes"
            if packed
            else f"its records claim {total:,} bytes"
        )
        raise CheckpointError(
            f"Checkpoint '{path}' is refused: {why}. It was not written by statetrain; use "
            "the file the training run wrote."
        )


def check_finite(payload: Mapping[str, Any], path: str | Path) -> None:
    """NaN/Inf weights are refused on read too: a model that can only predict NaN must not be
    evaluated, exported or resumed into a crash loop."""
    bad = _non_finite(
        {
            k: payload.get(k)
            for k in ("model_state_dict", "best_state_dict", "window_state")  # its weights too
            if k in payload
        }
    )
    if bad:
        raise CheckpointError(
            f"Checkpoint '{path}' holds NaN or Inf in tensor '{bad}': the model it stores is "
            "broken. Retrain (delete the file and run the workflow again) or use an earlier "
            "checkpoint."
        )


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint as data only; CheckpointError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint '{path}' does not exist (or is not a file). Check the path."
        )
    _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' cannot be loaded: {msg}. It is truncated, corrupt, not a "
            "statetrain checkpoint, or holds code (only tensors and plain data are accepted). "
            "Delete it to start that run afresh."
        ) from None
    state = payload.get("model_state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"Checkpoint '{path}' holds no 'model_state_dict' of named tensors: not a "
            "statetrain checkpoint. Use a best_model.pth or last.pth written by statetrain."
        )
    if not isinstance(payload.get("model_args", {}), Mapping):
        raise CheckpointError(f"Checkpoint '{path}': 'model_args' is not a mapping.")
    check_finite(payload, path)
    return payload


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The trained model of any statetrain checkpoint, in eval mode, with the checkpoint.

    The architecture is rebuilt from the checkpoint's plain ``model_args`` by its task, first
    on PyTorch's meta device (no memory), and compared with the stored tensors' names and
    shapes: a checkpoint whose arguments lie about its weights is refused before anything
    of the claimed size is allocated.
    """
    from .tasks import TASK_NAMES, task_class

    ckpt = load_checkpoint_file(path)
    task = ckpt.get("task", "frequency")
    if task not in TASK_NAMES:
        raise CheckpointError(
            f"Checkpoint '{path}' is of task {task!r}, which this statetrain does not know "
            f"(known: {', '.join(TASK_NAMES)})."
        )
    args = ckpt.get("model_args") or {}
    try:
        builder = task_class(task).from_checkpoint(ckpt)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' describes its {task} model with values this statetrain cannot "
            f"use ({' '.join(str(exc).split())}). It was altered or not written by statetrain; "
            "retrain it."
        ) from None
    try:
        with torch.device("meta"):
            skeleton = builder.model_from_args(args)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' has model_args {args} that do not build a {task} model "
            f"({exc}). It was not written by this statetrain or was altered; retrain it."
        ) from None
    expected = {k: (tuple(v.shape), str(v.dtype)) for k, v in skeleton.state_dict().items()}
    stored = {k: (tuple(v.shape), str(v.dtype)) for k, v in ckpt["model_state_dict"].items()}
    if expected != stored:
        diff = sorted(set(expected.items()) ^ set(stored.items()))[:3]
        raise CheckpointError(
            f"Checkpoint '{path}': its weights do not match its own model_args {args} (first "
            f"differences, name, shape and dtype: {diff}). The file was altered or is not a "
            "statetrain checkpoint; retrain it."
        )
    model = builder.model_from_args(args)
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()
    return model, ckpt
