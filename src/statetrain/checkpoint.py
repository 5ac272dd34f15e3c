"""Checkpoint I/O: atomic writes, finite tensors only, and loads that never run code.

A checkpoint is data: ``torch.load(..., weights_only=True)`` refuses anything but tensors and
plain containers, so a malicious pickle is rejected instead of executed. Writes go to a
temporary file in the same directory, are flushed and fsynced, then renamed over the target:
a crash at any instant leaves either the old complete file or the new complete file.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "statetrain-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message says why and what to do."""


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


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # interrupted or failed: never leave a partial temp file
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        raise CheckpointError(
            f"Could not write checkpoint '{path}': {exc.strerror or exc}. The previous "
            "checkpoint, if any, is intact; free disk space or fix the directory's permissions "
            "and run again."
        ) from exc
    _fsync_dir(path.parent)
    return path


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint as data only; CheckpointError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Check the path.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' cannot be loaded: {msg}. It is truncated, corrupt, not a "
            "statetrain checkpoint, or holds code (only tensors and plain data are accepted). "
            "Delete it to start that run afresh."
        ) from None
    if not isinstance(payload, dict) or "model_state_dict" not in payload:
        raise CheckpointError(
            f"Checkpoint '{path}' holds no 'model_state_dict': not a statetrain checkpoint."
        )
    return payload
