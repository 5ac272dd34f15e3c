"""The epoch loop every trainer shares: frozen validation after each epoch, best-epoch
tracking, the scheduler, callbacks, and resumable all-or-nothing checkpoints.

A task's trainer subclasses `EpochLoop` and says how one epoch trains (`epoch_row`) and how the
frozen model is scored (`validation_row`); everything a resumed run needs lives in `history`
and the checkpoint, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn

from .callbacks import Callback, ModelCheckpoint
from .checkpoint import (
    CheckpointError,
    StaleCheckpointError,
    load_checkpoint_file,
    save_checkpoint_file,
)
from .metrics import MetricsTracker

log = logging.getLogger("statetrain")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many consecutive non-finite steps)."""


def set_seed(seed: int) -> None:
    """Seed every generator a run touches, so that a config and seed fix the weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; an explicit preference wins."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


_RESUMED_FIELDS = ("history", "epoch", "best_score", "best_epoch", "best_state", "tracking")


def _count(value: Any, name: str) -> int:
    """A non-negative integer field of a checkpoint (bool and strings are malformed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"field '{name}' is {value!r}, not a whole number")
    if value < 0:
        raise ValueError(f"field '{name}' is negative ({value})")
    return int(value)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])


class EpochLoop:
    """What every trainer shares: the epoch loop, frozen validation, best-epoch tracking,
    scheduler, callbacks and resumable checkpoints.

    A subclass says how one epoch trains (`epoch_row`) and how the frozen model is scored
    (`validation_row`); everything a resumed run needs lives in `history` and the checkpoint,
    so a resumed run continues exactly where the interrupted one stopped.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    has_validation: bool

    def _init_loop(
        self,
        metadata: Mapping[str, Any] | None,
        callbacks: Sequence[Callback],
        monitor: str,
        monitor_mode: str,
    ) -> None:
        self.metadata = dict(metadata or {})
        self.epoch = 0  # completed epochs
        self.history: dict[str, list] = {"train_loss": [], "epoch_times": []}
        self.best_score = float("inf") if monitor_mode == "min" else float("-inf")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.callbacks = list(callbacks)
        self.stop_training = False
        # Ids that tie a run to outside systems (the MLflow run), kept in last.pth so that a
        # resumed or retried run continues the same tracked run.
        self.tracking: dict[str, str] = {}

    # ---------------------------------------------------------------- subclass hooks
    def epoch_row(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; return at least ``train_loss`` and what else the history keeps."""
        raise NotImplementedError

    def validation_row(self) -> dict[str, Any]:
        """Frozen-weight validation metrics, keys prefixed ``val_``."""
        raise NotImplementedError

    def model_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def extra_payload(self, best_only: bool) -> dict[str, Any]:
        return {}

    def load_extra(self, ckpt: Mapping[str, Any]) -> None:
        pass

    # ---------------------------------------------------------------- the epoch loop
    def _record(self, key: str, value: Any) -> None:
        self.history.setdefault(key, []).append(value)

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate the frozen model, record everything, update the best."""
        epoch = self.epoch + 1
        t0 = time.perf_counter()
        trained = self.epoch_row(epoch)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": trained.pop("train_loss"),
            "lr": self.optimizer.param_groups[0]["lr"],  # the lr of the epoch's last step
            "epoch_times": seconds,
            **trained,
        }
        if self.has_validation:
            t1 = time.perf_counter()
            row.update(self.validation_row())
            row["eval_time"] = time.perf_counter() - t1
        row["rss_mb"] = _rss_mb()
        for key, value in row.items():
            self._record(key, value)
        self.epoch = epoch
        if self.monitor not in row:
            raise ValueError(
                f"monitor {self.monitor!r} is not a recorded metric; choose one of "
                f"{', '.join(sorted(row))}"
            )
        score = row[self.monitor]
        row["improved"] = MetricsTracker(self.history).has_improved(self.monitor, self.monitor_mode)
        if row["improved"]:
            self.best_score, self.best_epoch = float(score), epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
        if self.scheduler is not None:
            with warnings.catch_warnings():
                # The native engine updates the weights without calling optimizer.step(),
                # which torch's schedulers would otherwise warn about.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(score)
                else:
                    self.scheduler.step()
        return row

    def describe(self) -> None:
        """Log what is about to train (called once at the start of `train`)."""
        log.info("model: %s", getattr(self.model, "get_model_summary", lambda: self.model)())

    def train(
        self,
        num_epochs: int,
        save_dir: str | Path | None = "models",
        save_best: bool = True,
        save_last: bool = False,
    ) -> dict[str, list]:
        """Train until `num_epochs` epochs are complete (continuing a resumed trainer).

        The best checkpoint is chosen by `monitor` (a frozen validation metric when a
        validation split was given, the online training loss otherwise: the seed's choice,
        logged as such). Callbacks run in order; `save_dir` adds a ModelCheckpoint unless one
        is given.
        """
        callbacks = list(self.callbacks)
        has_ckpt = any(isinstance(c, ModelCheckpoint) for c in callbacks)
        if save_dir is not None and (save_best or save_last) and not has_ckpt:
            callbacks.append(
                ModelCheckpoint(
                    save_dir,
                    monitor=self.monitor,
                    mode=self.monitor_mode,
                    save_best=save_best,
                    save_last=save_last,
                )
            )
        self.describe()
        if self.monitor == "train_loss":
            log.warning(
                "no validation split: the best checkpoint is chosen by the online training "
                "loss, which can look good while the frozen model has learned nothing"
            )
        self.stop_training = False
        try:
            self._run_epochs(num_epochs, callbacks)
        except BaseException as exc:  # a failure or a kill: each callback closes what it owns
            for cb in callbacks:
                cb.on_exception(self, exc)
            raise
        return self.history

    def _run_epochs(self, num_epochs: int, callbacks: Sequence[Callback]) -> None:
        for cb in callbacks:
            cb.on_train_begin(self)
        while self.epoch < num_epochs and not self.stop_training:
            for cb in callbacks:
                cb.on_epoch_begin(self, self.epoch + 1)
            row = self.run_epoch()
            val = ""
            if self.monitor != "train_loss":
                val = f" {self.monitor} {row[self.monitor]:.6f}"
            log.info(
                "epoch %d/%d train_loss %.6f%s lr %.3g %.2fs%s",
                row["epoch"],
                num_epochs,
                row["train_loss"],
                val,
                row["lr"],
                row["epoch_times"],
                " *best*" if row["improved"] else "",
            )
            for cb in callbacks:
                cb.on_epoch_end(self, row["epoch"], row)
        for cb in callbacks:
            cb.on_train_end(self)

    # ---------------------------------------------------------------- checkpoints
    def state_payload(self, best_only: bool = False) -> dict[str, Any]:
        """Everything a run needs to resume; `best_only` gives the deployable best model."""
        weights = self.best_state if best_only and self.best_state else self.model.state_dict()
        payload: dict[str, Any] = {
            "epoch": self.best_epoch if best_only else self.epoch,
            "model_state_dict": weights,
            "model_args": self.model_args(),
            "history": self.history,
            "best": {"score": self.best_score, "epoch": self.best_epoch, "monitor": self.monitor},
            **self.extra_payload(best_only),
            **self.metadata,
        }
        if not best_only:
            payload["optimizer_state_dict"] = self.optimizer.state_dict()
            payload["scheduler_state_dict"] = (
                self.scheduler.state_dict() if self.scheduler is not None else None
            )
            payload["best_state_dict"] = self.best_state
            payload["rng"] = _rng_state()
            payload["tracking"] = dict(self.tracking)
        return payload

    def save_checkpoint(
        self,
        save_dir: str | Path,
        filename: str = "checkpoint.pth",
        epoch: int | None = None,
        loss: float | None = None,
        *,
        best_only: bool = False,
    ) -> Path:
        """Atomic write of the full resumable state (or of the best weights)."""
        payload = self.state_payload(best_only=best_only)
        if loss is not None:
            payload["loss"] = loss
        if epoch is not None:
            payload["epoch"] = epoch
        return save_checkpoint_file(payload, Path(save_dir) / filename)

    def load_checkpoint(self, checkpoint_path: str | Path) -> dict[str, Any]:
        """Restore model, optimizer, scheduler, history, best-so-far and RNG states.

        All or nothing: a checkpoint that fails half-way (a stray key, a malformed field)
        leaves the trainer exactly as it was (``load_state_dict`` copies every matching
        tensor before it raises), so a caller that then starts afresh really starts from
        the model built from its random seed.
        """
        ckpt = load_checkpoint_file(checkpoint_path, map_location=self.device)
        before = copy.deepcopy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "fields": {k: getattr(self, k) for k in _RESUMED_FIELDS},
                "rng": _rng_state(),
                "extra": self.extra_state(),
            }
        )
        try:
            self._restore(ckpt)
        except Exception as exc:
            self.model.load_state_dict(before["model"])
            self.optimizer.load_state_dict(before["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(before["scheduler"])
            for key, value in before["fields"].items():
                setattr(self, key, value)
            _set_rng_state(before["rng"])
            self.load_extra({"window_state": before["extra"]} if before["extra"] else {})
            detail = " ".join(str(exc).split())[:400] or type(exc).__name__
            stale = isinstance(exc, StaleCheckpointError)
            raise (StaleCheckpointError if stale else CheckpointError)(
                f"Checkpoint '{checkpoint_path}' does not fit this model or run "
                f"({self.model_args()}): {detail}"
            ) from None
        return ckpt

    def _restore(self, ckpt: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model_state_dict"])
        if ckpt.get("optimizer_state_dict"):
            self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        if self.scheduler is not None and ckpt.get("scheduler_state_dict"):
            self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        self.history = {k: list(v) for k, v in ckpt.get("history", self.history).items()}
        self.epoch = _count(ckpt.get("epoch", 0), "epoch")
        best = ckpt.get("best") or {}
        self.best_score = float(best.get("score", self.best_score))
        self.best_epoch = _count(best.get("epoch", 0), "best.epoch")
        self.best_state = ckpt.get("best_state_dict")
        if self.best_state is not None:
            missing = set(self.model.state_dict()) ^ set(self.best_state)
            if missing:
                raise ValueError(f"best_state_dict keys differ from the model's: {missing}")
        if ckpt.get("rng"):
            _set_rng_state(ckpt["rng"])
        tracking = ckpt.get("tracking") or {}
        self.tracking = {str(k): str(v) for k, v in dict(tracking).items()}
        self.load_extra(ckpt)

    def extra_state(self) -> Any:
        """Task-specific resumable state beyond the optimizer's (window training's curriculum)."""
        return None

    def save_history(self, save_path: str | Path) -> None:
        from .io import write_json

        write_json(self.history, save_path)
