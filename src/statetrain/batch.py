"""The trainer of batch tasks (the VAE, the sequence classifier): shuffled mini-batches.

It shares the epoch loop, best-epoch tracking, callbacks, schedulers and resumable
checkpoints with the frequency task's StatefulTrainer (`trainer.EpochLoop`); only how an
epoch trains and how the frozen model is scored come from the task. Shuffling and input noise
are drawn from a generator seeded by (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .callbacks import Callback
from .loop import EpochLoop, TrainingError
from .tasks.base import BatchTask

log = logging.getLogger("statetrain")


def epoch_seed(seed: int, epoch: int) -> int:
    """One independent stream per (seed, epoch) (numpy's SeedSequence mixes the two)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchTrainer(EpochLoop):
    """Train `task`'s model on `train`, score it frozen on `validation` after every epoch."""

    def __init__(
        self,
        task: BatchTask,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: Mapping[str, np.ndarray],
        validation: Mapping[str, np.ndarray] | None = None,
        *,
        device: torch.device | str = "cpu",
        scheduler: Any = None,
        seed: int = 0,
        metadata: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        monitor: str | None = None,
        monitor_mode: str | None = None,
    ) -> None:
        self.task = task
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_split = train
        self.val_split = validation
        self.seed = seed
        self.has_validation = validation is not None
        self.engine, self.engine_reason = "torch", f"{task.name} task: mini-batches in PyTorch"
        task.prepare(train)
        self._init_loop(
            metadata,
            callbacks,
            monitor or (task.monitor if self.has_validation else "train_loss"),
            monitor_mode or (task.mode if self.has_validation else "min"),
        )

    def epoch_row(self, epoch: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        row = minibatch_epoch(
            self.task, self.model, self.optimizer, self.train_split, generator, self.device
        )
        if not np.isfinite(row["train_loss"]):
            raise TrainingError(
                f"epoch {epoch}: every mini-batch had a non-finite loss, so training stopped; "
                "the last checkpoint holds the last finite weights. Lower training.lr, keep "
                "clip_grad_norm on, and check the input data."
            )
        return row

    def evaluate(self, split: Mapping[str, np.ndarray]) -> dict[str, float]:
        self.model.eval()
        return self.task.evaluate(self.model, split, self.device)

    def validation_row(self) -> dict[str, Any]:
        assert self.val_split is not None
        return {f"val_{k}": v for k, v in self.evaluate(self.val_split).items()}

    def describe(self) -> None:
        total = sum(p.numel() for p in self.model.parameters())
        log.info(
            "task %s, model %s: %s parameters",
            self.task.name,
            type(self.model).__name__,
            f"{total:,}",
        )

    def model_args(self) -> dict[str, Any]:
        return self.task.model_args(self.model)

    def extra_payload(self, best_only: bool) -> dict[str, Any]:
        return {"task": self.task.name}


def minibatch_epoch(
    task: BatchTask,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Mapping[str, np.ndarray],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """One shuffled pass over `train` in mini-batches of training['batch_size']: the task
    computes each batch's loss (`BatchTask.training_step`), this loop owns the optimizer step
    (zero_grad, backward, clip at training['clip_grad_norm'], step) for every batch task.

    A batch whose loss is not finite is skipped (no step) and counted, so one bad batch does
    not poison the weights; ``train_loss`` is NaN when every batch was skipped. Returns the
    epoch's means: ``train_loss``, the task's per-batch values, ``grad_norm_mean`` (before
    clipping) and ``skipped_batches``.
    """
    model.train()
    tensors = {
        key: torch.as_tensor(np.asarray(train[key])) for key in task.batch_keys if key in train
    }
    n = len(tensors["x"])
    batch_size = int(task.training["batch_size"])
    clip = task.training.get("clip_grad_norm")
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, float] = {"train_loss": 0.0}
    norms: list[float] = []
    seen = skipped = 0
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        batch = {key: t[index].to(device) for key, t in tensors.items()}
        loss, stats = task.training_step(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        loss.backward()
        norms.append(grad_norm(params))
        if clip is not None:
            nn.utils.clip_grad_norm_(params, float(clip))
        optimizer.step()
        size = len(index)
        seen += size
        sums["train_loss"] += float(loss.detach()) * size
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + float(value) * size
    if skipped:
        log.warning(
            "%s: skipped %d of %d batch(es) with a non-finite loss",
            task.name,
            skipped,
            -(-n // batch_size),
        )
    row: dict[str, Any] = {k: v / seen if seen else math.nan for k, v in sums.items()}
    row["grad_norm_mean"] = float(np.mean(norms)) if norms else math.nan
    row["skipped_batches"] = float(skipped)
    return row


def grad_norm(params: list[torch.Tensor]) -> float:
    """Total L2 norm of the gradients before clipping: the history shows how close training
    runs to the clip."""
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
