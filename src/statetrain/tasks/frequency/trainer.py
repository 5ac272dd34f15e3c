"""The stateful trainer: the assignment's reference loop, its native twin, and frozen evaluation.

The reference loop is written plainly in PyTorch and is the oracle the native kernel is tested
against. Per chunk of ``tbptt_steps`` rows (1 = the reference loop): forward with the carried
state, MSE, backward, clip the gradient norm, optimizer step, detach the state. The state is
zeroed once per epoch (``state_reset="epoch"``, the seed) or at every stream start
(``"stream"``). A step whose loss or gradient is not finite is skipped and counted.

Model quality is never read off the online loss (the weights move every step, so it can look
good while the frozen model has learned nothing): after each epoch the frozen model is scored
on the validation split, and selection uses that score.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ...callbacks import Callback
from ...loop import EpochLoop, TrainingError, get_device, set_seed
from .data import FrequencyDataset, stream_columns, stream_starts
from .metrics import evaluate_streams, frequency_label

log = logging.getLogger("statetrain")
# `engine: auto` takes the native window kernel up to this size: measured 2.1-2.4× faster than
# PyTorch at 16 units and 2 sequences, 1.2-1.5× at 8, but 0.8× at 64 units and 8 sequences,
# where PyTorch's batched matrix products win (python scripts/bench_window.py).
WINDOW_NATIVE_MAX_HIDDEN = 32

STATE_RESETS = ("epoch", "stream")


def make_loss(name: str) -> nn.Module:
    """The per-step regression loss of `training.loss` (mse, l1, huber, smooth_l1)."""
    losses = {
        "mse": nn.MSELoss,
        "l1": nn.L1Loss,
        "huber": nn.HuberLoss,
        "smooth_l1": nn.SmoothL1Loss,
    }
    return losses[name]()


__all__ = [
    "EpochLoop",
    "Split",
    "StatefulTrainer",
    "TrainingError",
    "get_device",
    "predict",
    "set_seed",
]


@dataclass
class Split:
    """One split as arrays: what both engines consume, whatever loader it came from."""

    x: np.ndarray  # (N, n_inputs) float32
    y: np.ndarray  # (N,) float32
    starts: np.ndarray  # stream start rows
    columns: np.ndarray  # hot C column of each stream

    @classmethod
    def from_array(cls, array: np.ndarray) -> Split:
        array = np.ascontiguousarray(array, dtype=np.float32)
        return cls(
            x=np.ascontiguousarray(array[:, :-1]),
            y=np.ascontiguousarray(array[:, -1]),
            starts=stream_starts(array),
            columns=stream_columns(array),
        )

    @classmethod
    def from_loader(cls, loader: DataLoader | Iterable) -> Split:
        """Arrays from the assignment's DataLoader (batch 1, no shuffle) or any (x, y) dataset.

        A FrequencyDataset (or a Subset of one) hands over its arrays directly; anything else
        is read once, row by row, in order.
        """
        if isinstance(loader, DataLoader):
            if not isinstance(loader.sampler, torch.utils.data.SequentialSampler):
                raise ValueError(
                    "Stateful training needs rows in time order: build the DataLoader with "
                    "shuffle=False (the state carried from row t to row t+1 is meaningless "
                    "after shuffling)."
                )
            dataset = loader.dataset
        else:
            dataset = loader
        indices = None
        while isinstance(dataset, Subset):
            idx = np.asarray(dataset.indices)
            indices = idx if indices is None else idx[indices]
            dataset = dataset.dataset
        if isinstance(dataset, FrequencyDataset):
            data = dataset.data if indices is None else dataset.data[indices]
            return cls.from_array(data)
        rows = [(np.asarray(x).ravel(), np.asarray(y).ravel()) for x, y in dataset]
        array = np.concatenate(
            [np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])[:, :1]], axis=1
        )
        return cls.from_array(array)

    def __len__(self) -> int:
        return len(self.y)


def chunk_bounds(n_rows: int, starts: np.ndarray, k: int, state_reset: str) -> list[tuple]:
    """(first row, end row, reset state before?) of every TBPTT chunk of an epoch."""
    if state_reset == "epoch":
        return [(a, min(a + k, n_rows), a == 0) for a in range(0, n_rows, k)]
    ends = np.append(starts[1:], n_rows)
    return [
        (a, min(a + k, int(end)), a == int(start))
        for start, end in zip(starts, ends, strict=True)
        for a in range(int(start), int(end), k)
    ]


@torch.no_grad()
def predict(model: nn.Module, split: Split, state_reset: str = "epoch") -> np.ndarray:
    """Frozen-weight predictions with the state carried exactly as in training.

    With no weight updates, carrying the state step by step is the same computation as one
    LSTM call over the whole sequence, so this runs at sequence speed in plain PyTorch.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(split.x).to(device)
    try:
        if state_reset == "epoch":
            out, _ = model(x.unsqueeze(0), None)
            return out[0].float().cpu().numpy()
        ends = np.append(split.starts[1:], len(split))
        parts = [
            model(x[a:b].unsqueeze(0), None)[0][0].float().cpu().numpy()
            for a, b in zip(split.starts, ends, strict=True)
        ]
        return np.concatenate(parts)
    finally:
        model.train(was_training)


@dataclass
class EpochStats:
    loss: float
    rows: int
    updates: int
    grad_norm_mean: float
    clipped_fraction: float
    bad_steps: int
    h_norm: float
    c_norm: float
    extra: dict[str, Any] = field(default_factory=dict)


class StatefulTrainer(EpochLoop):
    """Train a FrequencyLSTM one step (or one TBPTT chunk) at a time with carried state.

    Seed-compatible: ``StatefulTrainer(model, train_loader, criterion, optimizer, device,
    clip_grad_norm)`` with ``train_epoch``, ``train``, ``save_checkpoint``, ``load_checkpoint``
    and ``save_history``. The keyword options below are off by default, so the default is the
    seed's loop exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: DataLoader | Iterable,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device | str = "cpu",
        clip_grad_norm: float | None = 1.0,
        *,
        val_loader: DataLoader | Iterable | None = None,
        tbptt_steps: int = 1,
        state_reset: str = "epoch",
        engine: str = "torch",
        scheduler: Any = None,
        max_bad_steps: int = 100,
        frequencies: Sequence[float] | None = None,
        progress: bool = True,
        metadata: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        monitor: str | None = None,
        monitor_mode: str = "min",
        window: Any = None,
    ) -> None:
        if state_reset not in STATE_RESETS:
            raise ValueError(f"state_reset must be one of {STATE_RESETS}, got {state_reset!r}")
        if tbptt_steps < 1:
            raise ValueError(f"tbptt_steps must be >= 1, got {tbptt_steps}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.criterion = criterion
        self.optimizer = optimizer
        self.clip_grad_norm = clip_grad_norm
        self.tbptt_steps = tbptt_steps
        self.state_reset = state_reset
        self.scheduler = scheduler
        self.max_bad_steps = max_bad_steps
        self.progress = progress
        self.train_split = (
            train_loader if isinstance(train_loader, Split) else Split.from_loader(train_loader)
        )
        self.val_split = None
        if val_loader is not None:
            self.val_split = (
                val_loader if isinstance(val_loader, Split) else Split.from_loader(val_loader)
            )
        n_streams = len(self.train_split.columns)
        self.frequencies = list(frequencies) if frequencies else list(range(1, 1 + n_streams))
        self.window = window  # a window.WindowCurriculum: whole-window training instead
        if window is not None and state_reset != "stream":
            raise ValueError(
                "window training starts every window from a zero state at the stream start, "
                "so it needs state_reset='stream' (frozen evaluation must carry state the same way)"
            )
        self.engine, self.engine_reason = self._resolve_engine(engine)
        self.has_validation = self.val_split is not None
        self._init_loop(
            metadata,
            callbacks,
            monitor or ("val_mse" if self.has_validation else "train_loss"),
            monitor_mode,
        )

    # ---------------------------------------------------------------- engine selection
    def _resolve_engine(self, requested: str) -> tuple[str, str]:
        if requested not in ("auto", "torch", "native"):
            raise ValueError(f"engine must be auto, torch or native, got {requested!r}")
        if requested == "torch":
            return "torch", "requested"
        hidden = getattr(self.model, "hidden_size", 0)
        if requested == "auto" and self.window is not None and hidden > WINDOW_NATIVE_MAX_HIDDEN:
            return "torch", (
                f"auto: PyTorch's sequence LSTM is faster for window training above "
                f"{WINDOW_NATIVE_MAX_HIDDEN} hidden units (scripts/bench_window.py)"
            )
        ok, why = self._native_supported()
        if ok:
            return "native", "requested" if requested == "native" else "auto: options supported"
        if requested == "native":
            log.warning("native engine requested but %s; falling back to the torch engine", why)
        return "torch", f"native unavailable: {why}"

    def _native_supported(self) -> tuple[bool, str]:
        if self.device.type != "cpu":
            return False, f"the native kernel runs on the CPU, not {self.device}"
        if self.window is not None:
            from .native_window import supports_window

            return supports_window(self.model, self.optimizer, self.criterion, self.clip_grad_norm)
        if self._native_class_weights() is None and (
            type(self.criterion) is not nn.MSELoss or self.criterion.reduction != "mean"
        ):
            return False, (
                "the native kernel implements MSELoss(reduction='mean') and class-weighted "
                "cross-entropy only"
            )
        try:
            from . import native
        except ImportError as exc:
            return False, f"the native module cannot be imported ({exc})"
        return native.supports(
            self.model,
            self.optimizer,
            tbptt_steps=self.tbptt_steps,
            state_reset=self.state_reset,
            clip_grad_norm=self.clip_grad_norm,
        )

    def _native_class_weights(self) -> np.ndarray | None:
        """The class weights of a per-step cross-entropy criterion the native kernel runs
        (one that declares ``native_loss = "cross_entropy"`` and holds ``weight``), else None."""
        if getattr(self.criterion, "native_loss", None) != "cross_entropy":
            return None
        return self.criterion.weight.detach().cpu().numpy().astype(np.float32)

    # ---------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> float:
        """One pass over the training rows; returns the online (moving-weights) MSE."""
        if self.window is not None:
            stats = self.window.run_epoch(self, epoch)
        elif self.engine == "native":
            stats = self._native_epoch()
        else:
            stats = self._torch_epoch(epoch)
        self.last_stats = stats
        if stats.extra.get("stopped_early"):
            raise TrainingError(
                f"epoch {epoch}: {self.max_bad_steps} consecutive steps had a non-finite loss or "
                "gradient, so training stopped; the weights and the last checkpoint are the last "
                "finite ones. Lower training.lr, keep clip_grad_norm on, and check the input data."
            )
        return stats.loss

    def _torch_epoch(self, epoch: int) -> EpochStats:
        """The reference loop, exactly the seed's for tbptt_steps=1 and state_reset='epoch'."""
        model, opt, split = self.model, self.optimizer, self.train_split
        model.train()
        x = torch.from_numpy(split.x).to(self.device)
        y = torch.from_numpy(split.y).to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        chunks = chunk_bounds(len(split), split.starts, self.tbptt_steps, self.state_reset)
        state = None
        sq_err = 0.0
        rows = updates = bad = consecutive_bad = clipped = 0
        grad_norms: list[float] = []
        h_norm = c_norm = 0.0
        stopped = False
        # disable=None: no bar where stderr is not a terminal (a log file, a pipe), whose
        # readers would get carriage-return bars instead of lines.
        bar = tqdm(
            chunks,
            desc=f"epoch {epoch}",
            disable=None if self.progress else True,
            mininterval=5,
            leave=False,
        )
        for a, b, reset in bar:
            if reset:
                state = None
            out, state = model(x[a:b].unsqueeze(0), state)
            loss = self.criterion(out[0], y[a:b])
            opt.zero_grad()
            loss.backward()
            if self.clip_grad_norm is not None:
                gn = float(nn.utils.clip_grad_norm_(params, self.clip_grad_norm))
            else:
                gn = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            loss_value = float(loss.detach())
            state = (state[0].detach(), state[1].detach())
            if not (np.isfinite(loss_value) and np.isfinite(gn)):
                bad += 1
                consecutive_bad += 1
                if not torch.isfinite(state[0]).all() or not torch.isfinite(state[1]).all():
                    state = None  # a poisoned state would poison every later step
                if consecutive_bad >= self.max_bad_steps:
                    stopped = True
                    break
                continue
            consecutive_bad = 0
            opt.step()
            updates += 1
            rows += b - a
            sq_err += loss_value * (b - a)
            grad_norms.append(gn)
            clipped += self.clip_grad_norm is not None and gn > self.clip_grad_norm
            h_norm += float(state[0].norm())
            c_norm += float(state[1].norm())
        n = max(updates, 1)
        return EpochStats(
            loss=sq_err / max(rows, 1),
            rows=rows,
            updates=updates,
            grad_norm_mean=float(np.mean(grad_norms)) if grad_norms else float("nan"),
            clipped_fraction=clipped / n,
            bad_steps=bad,
            h_norm=h_norm / n,
            c_norm=c_norm / n,
            extra={"stopped_early": stopped},
        )

    def _native_epoch(self) -> EpochStats:
        from . import native

        split = self.train_split
        res = native.train_epoch(
            self.model,
            self.optimizer,
            split.x,
            split.y,
            split.starts,
            tbptt_steps=self.tbptt_steps,
            state_reset=self.state_reset,
            clip_grad_norm=self.clip_grad_norm,
            max_bad_steps=self.max_bad_steps,
            class_weights=self._native_class_weights(),
        )
        h_norm, c_norm = res.state_norms
        return EpochStats(
            loss=res.loss,
            rows=res.rows,
            updates=res.updates,
            grad_norm_mean=res.grad_norm_mean,
            clipped_fraction=res.clipped_fraction,
            bad_steps=res.bad_steps,
            h_norm=float(h_norm),
            c_norm=float(c_norm),
            extra={"stopped_early": res.stopped_early},
        )

    # ---------------------------------------------------------------- evaluation
    def predict(self, split: Split) -> np.ndarray:
        """Frozen predictions (no updates), natively when the engine is native."""
        if self.engine == "native":
            from . import native

            return native.evaluate(self.model, split.x, split.starts, state_reset=self.state_reset)
        return predict(self.model, split, self.state_reset)

    def evaluate(self, split: Split) -> dict[str, dict[str, float]]:
        """Frozen-weight metrics, overall and per frequency."""
        pred = self.predict(split)
        return evaluate_streams(split.y, pred, split.starts, split.columns, self.frequencies)

    # ---------------------------------------------------------------- EpochLoop hooks
    def epoch_row(self, epoch: int) -> dict[str, Any]:
        loss = self.train_epoch(epoch)
        stats = self.last_stats
        return {
            "train_loss": loss,
            "grad_norm_mean": stats.grad_norm_mean,
            "clipped_fraction": stats.clipped_fraction,
            "bad_steps": stats.bad_steps,
            "h_norm": stats.h_norm,
            "c_norm": stats.c_norm,
            **{k: v for k, v in stats.extra.items() if k != "stopped_early"},
        }

    def validation_row(self) -> dict[str, Any]:
        metrics = self.evaluate(self.val_split)
        row = {"val_mse": metrics["overall"]["mse"]}
        for f in self.frequencies:
            label = frequency_label(f)
            if label in metrics:
                row[f"val_mse_{label}"] = metrics[label]["mse"]
        return row

    def describe(self) -> None:
        log.info("engine: %s (%s)", self.engine, self.engine_reason)
        super().describe()

    def model_args(self) -> dict[str, Any]:
        m = self.model
        return {
            "input_size": getattr(m, "input_size", 5),
            "hidden_size": getattr(m, "hidden_size", 64),
            "num_layers": getattr(m, "num_layers", 1),
        }

    def extra_payload(self, best_only: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"frequencies": self.frequencies, "state_reset": self.state_reset}
        if not best_only and self.window is not None:
            extra["window_state"] = self.window.state_dict()
        return extra

    def extra_state(self) -> Any:
        return self.window.state_dict() if self.window is not None else None

    def load_extra(self, ckpt: Mapping[str, Any]) -> None:
        if self.window is not None and ckpt.get("window_state"):
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.window.load_state_dict(ckpt["window_state"], params=params)
