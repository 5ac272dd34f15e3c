"""`training.init_from`: start a frequency-task run from given weights instead of random ones.

Why: the recipe of issue 19 fine-tunes an *assembled* model (four small per-frequency experts
placed block-diagonally into one LSTM(5, 64), statetrain.tasks.frequency.assemble) jointly at
a small learning rate. That fine-tune is an ordinary training run (window training, resume,
history, selection on frozen validation), except that its weights start from a checkpoint.

Order of precedence: the model is built from the run's seed, then the init checkpoint's
weights replace them, then the runner resumes from the run's own ``last.pth`` if there is one.
So a killed fine-tune continues where it stopped (bit-identical to an uninterrupted one), and
the init checkpoint only decides where a *fresh* run starts. The optimizer always starts fresh
(the init checkpoint's moments belonged to another objective).

A run remembers which weights it started from (``init_from`` in its checkpoints: the path and
a digest of the tensors). A ``last.pth`` that started from other weights (the experts were
retrained, so the assembly changed under the same path) is not resumed: it is set aside and
the run starts afresh from the new weights, instead of silently finishing the stale run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...checkpoint import StaleCheckpointError
from .model import FrequencyLSTM
from .trainer import StatefulTrainer

log = logging.getLogger("statetrain")


class InitFromError(ValueError):
    """`training.init_from` names a checkpoint this run cannot start from."""


class InitChangedError(StaleCheckpointError):
    """A run's last.pth started from other init weights than the run's init_from now holds."""


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of a state dict's names, shapes, dtypes and values (not of the file's bytes,
    which also hold metadata: the same weights written twice give the same digest)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def load_initial_weights(model: FrequencyLSTM, path: str | Path) -> dict[str, str]:
    """Copy the weights of checkpoint ``path`` into ``model``; refuse any other shape.

    Returns what the run records about its start (``path`` and ``weights_sha256``).
    """
    from ...checkpoint import CheckpointError, load_model

    path = Path(path)
    want = {
        "input_size": model.input_size,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
    }
    if not path.is_file():
        raise InitFromError(
            f"training.init_from: '{path}' is not a file. Give the path of a statetrain "
            "checkpoint (e.g. results/<experiment>/best/<name>/best_model.pth). In the workflow "
            "the name of a dataset or of an `assemble` entry is resolved to its selected "
            "best_model.pth and built first; run by hand, give the path itself."
        )
    try:
        init, ckpt = load_model(path)
    except CheckpointError as exc:
        raise InitFromError(f"training.init_from: {exc}") from None
    got = (
        {k: getattr(init, k, None) for k in want}
        if isinstance(init, FrequencyLSTM)
        else ckpt.get("model_args")
    )
    if not isinstance(init, FrequencyLSTM) or got != want:
        raise InitFromError(
            f"training.init_from: checkpoint '{path}' holds a {type(init).__name__} with "
            f"{got}, but this run builds a FrequencyLSTM with {want} (input_size = 1 + the "
            "number of frequencies; hidden_size and num_layers from `training`). A run can only "
            "start from weights of exactly its own shape: set training.hidden_size and "
            "num_layers to the checkpoint's, or point init_from at a checkpoint of this shape "
            "(an `experts` combination is several LSTMs: assemble it with `assemble:` first)."
        )
    model.load_state_dict(init.state_dict())
    start = {"path": str(path), "weights_sha256": weights_digest(init.state_dict())}
    log.info(
        "init_from: a fresh run starts from the weights of %s (digest %s); a last.pth of this "
        "run, if any, still wins",
        path,
        start["weights_sha256"],
    )
    return start


class InitialisedTrainer(StatefulTrainer):
    """A StatefulTrainer whose run started from given weights (``metadata['init_from']``).

    Resuming a ``last.pth`` that started from other weights is refused here (the runner then
    sets it aside as ``.previous`` and starts afresh from the new ones): the run's
    configuration hash covers the init checkpoint's path, not its contents.
    """

    def load_extra(self, ckpt: Mapping[str, Any]) -> None:
        if "model_state_dict" not in ckpt:  # the loop restoring its own state on a failure
            super().load_extra(ckpt)
            return
        mine = self.metadata.get("init_from") or {}
        theirs = ckpt.get("init_from") or {}
        if theirs.get("weights_sha256") != mine.get("weights_sha256"):
            raise InitChangedError(
                f"it started from other weights (init_from {theirs.get('path')!r}, digest "
                f"{theirs.get('weights_sha256')}) than this run's ({mine.get('path')!r}, digest "
                f"{mine.get('weights_sha256')}): the init checkpoint changed, so the run "
                "starts again from the new weights."
            )
        super().load_extra(ckpt)
