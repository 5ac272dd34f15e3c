"""Whole-window training: the recipe that makes the literal task learnable.

The reference loop (one optimizer step per time step) cannot learn the assignment's data: with
phase noise U(0, 2π) the mixture carries no instantaneous information about the target, so the
network must become an oscillator locked to the stream start, and per-step updates only chase
the slowly varying target (measured: frozen MSE 0.5). What works (../shared/research/
learnability.md) is backpropagation through whole windows that start at the stream start from
a zero state, on *fresh noise* every iteration (a fixed training file gets memorised), with a
window that grows only after the loss has held below a threshold for a streak of iterations,
and a learning rate that cools as the window grows.

One "epoch" here is `iterations` optimizer steps, so the rest of the system (frozen validation
after every epoch, best-epoch selection, checkpoints, resume) works unchanged. The curriculum's
state (window length, streak) travels in the checkpoint; the noise of iteration i of epoch e
comes from a generator seeded with (seed, e, i), so a resumed run draws the same batches.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import generate_dataset

log = logging.getLogger("statetrain")


def _penalise(weights: torch.Tensor, grad: torch.Tensor, decay: float) -> torch.Tensor:
    """Add the L2 penalty (decay / 2)·‖weights‖² to an objective whose gradient is ``grad``
    (in place) and return the penalty: weight decay in the form L-BFGS takes it (for plain
    SGD, the decoupled decay of ``signal_decay`` is exactly this penalty)."""
    if not decay:
        return torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        grad.add_(weights, alpha=decay)
        return 0.5 * decay * weights.double().pow(2).sum()


@dataclass
class WindowCurriculum:
    """Whole-window BPTT with a streak-gated growing window and a cooling learning rate."""

    first: int = 0  # first window (rows per stream); 0 = max(300, two periods of the slowest)
    growth: float = 1.25  # window × growth after a held streak
    streak: int = 5  # iterations in a row below `threshold` before the window grows
    threshold: float = 0.005  # training-loss level that counts towards the streak
    draws: int = 8  # fresh noise draws of every stream per iteration
    iterations: int = 100  # optimizer steps per epoch
    lr_floor: float = 2e-4  # lr = max(base_lr · (first / window) ** lr_power, lr_floor)
    lr_power: float = 0.5  # 0.5: the lr cools with the square root of the window's growth
    polish_lr: float = 0.0  # > 0: the flat lr once frozen validation has reached polish_at
    polish_at: float = 0.0  # the frozen validation MSE that starts polishing
    polish_streak: int = 1  # ... once that many validations in a row were below it
    polish_window: int = 0  # ... and the window has reached this many rows (or the stream)
    polish_draws: int = 0  # draws per iteration while polishing (0 = draws)
    polish_ema: float = 0.0  # > 0: while polishing, evaluate an EMA of the iterates (decay/it)
    signal_decay: float = 0.0  # decoupled decay of the weights on the signal S (input 0)
    polish_signal_decay: float = 0.0  # ... while polishing (0 = signal_decay)
    polish_optimizer: str = "adam"  # "lbfgs": polishing epochs are L-BFGS runs on one batch
    lbfgs_after: int = 0  # ... once this many polishing epochs have taken Adam steps
    seed: int = 0
    spec: Mapping[str, Any] | None = None  # data generator parameters; None = the training file
    window: int = 0  # current window (state)
    held: int = 0  # current streak (state)
    polishing: bool = False  # the final phase has begun (state)
    polished: int = 0  # polishing epochs run (state)
    average: list | None = None  # the EMA of the weights while polishing (state)
    raw: list | None = None  # the trained weights while the model holds the average (state)
    base_lr: float = field(default=0.0)

    @classmethod
    def from_config(
        cls, window: Mapping[str, Any], seed: int, spec: Mapping[str, Any] | None = None
    ) -> WindowCurriculum:
        """The curriculum of a validated `training.window` section (every task builds it so;
        a section saved before a key existed takes that key's default)."""
        keys = ("first", "growth", "streak", "threshold", "draws", "iterations", "lr_floor")
        keys += ("polish_lr", "polish_at", "polish_streak", "polish_window", "polish_draws")
        keys += ("polish_ema", "lr_power", "signal_decay", "polish_signal_decay")
        keys += ("polish_optimizer", "lbfgs_after")
        return cls(**{k: window[k] for k in keys if k in window}, seed=int(seed), spec=spec)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "held": self.held,
            "base_lr": self.base_lr,
            "polishing": self.polishing,
            "polished": self.polished,
            "average": self.average,
            "raw": self.raw,
        }

    def load_state_dict(self, state: Mapping[str, Any], params: list | None = None) -> None:
        """Restore the curriculum; ``params`` (the model's trainable tensors) check that saved
        weight lists fit the model before anything is changed."""
        lists = {}
        for key in ("average", "raw"):  # absent before polish_ema existed
            value = state.get(key)
            if value is not None and params is not None:
                shapes = [tuple(p.shape) for p in params]
                if (
                    not isinstance(value, list | tuple)
                    or [tuple(getattr(t, "shape", ())) for t in value] != shapes
                ):
                    raise ValueError(
                        f"window_state.{key} does not hold one tensor per trainable "
                        f"parameter of shapes {shapes}"
                    )
                if not all(
                    isinstance(t, torch.Tensor) and t.dtype == p.dtype
                    for t, p in zip(value, params, strict=True)
                ):
                    raise ValueError(f"window_state.{key} holds tensors of another dtype")
            lists[key] = [t.detach().clone() for t in value] if value is not None else None
        polished = state.get("polished", 0)  # absent before lbfgs_after existed
        if isinstance(polished, bool) or not isinstance(polished, int) or polished < 0:
            raise ValueError(f"window_state.polished must be a count of epochs, not {polished!r}")
        self.window = int(state["window"])
        self.held = int(state["held"])
        self.base_lr = float(state["base_lr"])
        self.polishing = bool(state.get("polishing", False))  # absent before polishing existed
        self.polished = polished
        self.average, self.raw = lists["average"], lists["raw"]

    def learning_rate(self, first: int) -> float:
        """The lr of the next iteration: cooling with the window, flat once polishing."""
        if self.polishing:
            return self.polish_lr
        ratio = first / self.window
        # math.sqrt for the default, so that it is the lr of before bit for bit
        scale = math.sqrt(ratio) if self.lr_power == 0.5 else ratio**self.lr_power
        return max(self.base_lr * scale, self.lr_floor)

    def signal_decay_rate(self) -> float:
        """The decay of the weights on S for the next iteration (per unit of lr).

        With phase noise U(0, 2π) S at each instant is independent of the target
        (learnability.md), so every weight on it only feeds noise into the oscillator: the
        8-draw test MSE of the session-6 experts was mostly that (7 Hz: variance 0.0005-0.0013
        of 0.0007-0.0015). A decoupled decay (AdamW's form, on S's column of W_ih only) lets
        training find that out: a weight S is useful to keeps its gradient against the decay.
        """
        if self.polishing and self.polish_signal_decay:
            return self.polish_signal_decay
        return self.signal_decay

    # ------------------------------------------------------------------ batches
    def _start_window(self, max_len: int) -> int:
        if self.first:
            return min(self.first, max_len)
        if self.spec is not None:
            slowest = min(self.spec.get("streams") or self.spec["frequencies"])
            return min(max(300, math.ceil(2 * self.spec["fs"] / slowest)), max_len)
        return min(300, max_len)

    def batch(self, trainer: Any, epoch: int, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """(x (B, L, n_inputs), y (B, L)): every stream's first L rows, per noise draw."""
        length = self.window
        if self.spec is None:  # a user's file: windows of the training file itself
            split = trainer.train_split
            xs = [split.x[s : s + length] for s in split.starts]
            ys = [split.y[s : s + length] for s in split.starts]
            return np.stack(xs), np.stack(ys)
        rng = np.random.default_rng([self.seed, epoch, iteration])
        spec = self.spec
        parts = []
        draws = self.polish_draws if self.polishing and self.polish_draws else self.draws
        for seed in rng.integers(0, 2**31 - 1, size=draws):
            data = generate_dataset(
                frequencies=spec["frequencies"],
                fs=spec["fs"],
                duration_s=length / spec["fs"],
                amplitude_range=spec["amplitude_range"],
                phase_jitter=spec["phase_jitter"],
                seed=int(seed),
                streams=spec.get("streams"),
            )
            parts.append(data.reshape(-1, length, data.shape[1]))
        data = np.concatenate(parts)
        return np.ascontiguousarray(data[..., :-1]), np.ascontiguousarray(data[..., -1])

    def _max_len(self, trainer: Any) -> int:
        if self.spec is not None:
            return round(self.spec["duration_s"] * self.spec["fs"])
        return int(np.diff(np.append(trainer.train_split.starts, len(trainer.train_split))).min())

    # ------------------------------------------------------------------ one epoch
    def _maybe_polish(self, trainer: Any, epoch: int, max_len: int) -> None:
        """Enter the polishing phase once the last ``polish_streak`` frozen validations were
        all below ``polish_at`` and the window holds ``polish_window`` rows (or the stream).

        The oscillator has locked over the whole stream by then, and the cooling lr (≈ 1e-3)
        would throw it about: frozen validation swings by orders of magnitude from one check
        to the next. A low flat lr keeps the locked state and refines it. One validation is
        not proof of a lock: at a 625-row window a 5 Hz expert scored 0.0015 once, polishing
        froze it there and it stayed a weak oscillator (test 0.0054; docs/research/
        assemble.md), hence the streak and the window: of 18 experts of 3, 5 and 7 Hz, those
        that began polishing at a window of about 3 periods tested 0.002-0.005, those at 10
        periods or more 0.0003-0.001. Read from the history, so a resumed run decides as an
        uninterrupted one did.
        """
        if self.window < min(self.polish_window, max_len):
            return
        values = trainer.history.get("val_mse") or []
        streak = max(self.polish_streak, 1)
        recent = values[-streak:]
        if self.polishing or not self.polish_lr or len(recent) < streak:
            return
        if not all(v < self.polish_at for v in recent):  # NaN counts as not below
            return
        log.info(
            "epoch %d: frozen validation below %g for %d epoch(s) (last %.6g), polishing at "
            "lr %g from here on",
            epoch,
            self.polish_at,
            len(recent),
            recent[-1],
            self.polish_lr,
        )
        self.polishing, self.held = True, 0

    @staticmethod
    def _swap(params: list, weights: list | None) -> None:
        """Copy ``weights`` (one tensor per trainable parameter) into the model, if any."""
        if weights is None:
            return
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)

    @staticmethod
    def _torch_step(
        trainer: Any, params: list, x: np.ndarray, y: np.ndarray, shrink: float = 0.0
    ) -> tuple[float, float]:
        """One iteration through PyTorch's sequence LSTM: (loss, gradient norm); the step is
        taken only when both are finite, and then the weights on S shrink by ``shrink``."""
        model, opt = trainer.model, trainer.optimizer
        loss = WindowCurriculum._torch_loss(trainer, params, x, y)
        clip = trainer.clip_grad_norm
        gn = float(nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf))
        value = float(loss.detach())
        if math.isfinite(value) and math.isfinite(gn):
            opt.step()
            if shrink:
                with torch.no_grad():  # the factor rounded to float32, as the kernel does
                    model.lstm.weight_ih_l0[:, 0].mul_(float(np.float32(1.0 - shrink)))
        return value, gn

    @staticmethod
    def _torch_loss(trainer: Any, params: list, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        """The window loss through PyTorch's sequence LSTM, every sequence from a zero state,
        its gradient left in ``params`` (the old one dropped first)."""
        for p in params:
            p.grad = None
        with torch.enable_grad():
            out, _ = trainer.model(torch.from_numpy(x).to(trainer.device), None)
            loss = trainer.criterion(out, torch.from_numpy(y).to(trainer.device))
            loss.backward()
        return loss

    def _lbfgs_epoch(
        self, trainer: Any, params: list, session: Any, x: np.ndarray, y: np.ndarray
    ) -> tuple[float, float, int, bool]:
        """``iterations`` L-BFGS iterations (strong-Wolfe line search) on the one batch (x, y):
        (final loss, its gradient norm, loss evaluations, applied).

        Why: once the weights on S have decayed (signal_decay) the loss hardly depends on the
        noise draw, and polishing is a deterministic, ill-conditioned fit that Adam at a
        flat 3e-5 crawls through (a 1 Hz expert: 0.0007 after 300 epochs). A quasi-Newton
        method on a fixed batch is made for that. The history starts afresh every epoch (a
        new batch), so nothing but the weights carries over and a resumed run is the
        uninterrupted one. An epoch that ends non-finite is undone.
        """
        if session is not None:  # the kernel's loss and gradient on its flat weights
            flat = torch.from_numpy(session.adam.theta)
            variables = [flat]
            grad = torch.from_numpy(session.grad)
            rows = session.signal_rows()
            w_s, g_s = flat[rows], grad[rows]

            def objective(decay: float) -> torch.Tensor:
                value = session.loss_and_grad(x, y)
                flat.grad = grad
                return torch.tensor(value, dtype=torch.float64) + _penalise(w_s, g_s, decay)
        else:
            variables = params
            weight = trainer.model.lstm.weight_ih_l0

            def objective(decay: float) -> torch.Tensor:
                loss = self._torch_loss(trainer, params, x, y).detach().double()
                return loss + _penalise(weight[:, 0], weight.grad[:, 0], decay)

        before = [v.detach().clone() for v in variables]
        lbfgs = torch.optim.LBFGS(
            variables,
            lr=1.0,
            max_iter=self.iterations,
            history_size=self.iterations,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )
        lbfgs.step(functools.partial(objective, self.signal_decay_rate()))
        evaluations = int(lbfgs.state[variables[0]]["func_evals"])
        value = float(objective(0.0))  # the MSE alone at the end, as Adam epochs report it
        gn = math.sqrt(sum(float((v.grad.double() ** 2).sum()) for v in variables))
        ok = math.isfinite(value) and all(bool(torch.isfinite(v).all()) for v in variables)
        if not ok:
            with torch.no_grad():
                for v, b in zip(variables, before, strict=True):
                    v.copy_(b)
        return value, gn, evaluations, ok

    def _grow_after_lbfgs(self, epoch: int, loss: float, max_len: int) -> None:
        """An L-BFGS epoch that ends below the threshold counts as a held streak: the window
        grows once, so polishing that began on a short window still reaches the stream."""
        if loss < self.threshold and self.window < max_len:
            grown = self._grown(max_len)
            log.info("epoch %d (L-BFGS): window %d → %d", epoch, self.window, grown)
            self.window = grown

    def _grown(self, max_len: int) -> int:
        """The next window: × growth, at least one row longer, at most the stream."""
        return min(max(int(self.window * self.growth), self.window + 1), max_len)

    def run_epoch(self, trainer: Any, epoch: int) -> Any:
        from .trainer import EpochStats

        model, opt = trainer.model, trainer.optimizer
        max_len = self._max_len(trainer)
        params = [p for p in model.parameters() if p.requires_grad]
        self._swap(params, self.raw)  # train the trained weights, not the average evaluated
        self.raw = None
        self._maybe_polish(trainer, epoch, max_len)
        if self.polishing and self.polish_ema > 0 and self.average is None:
            self.average = [p.detach().clone() for p in params]  # the average starts here
        if not self.window:
            self.window = self._start_window(max_len)
            self.base_lr = float(opt.param_groups[0]["lr"])
        first = self._start_window(max_len)
        model.train()
        session = None
        averaging = self.polishing and self.polish_ema > 0
        if trainer.engine == "native":  # one compiled call per iteration (native_window.py)
            from .native_window import WindowSession

            session = WindowSession(model, opt, trainer.clip_grad_norm)
            if averaging:
                session.start_average(params, self.average)
        losses, norms, clipped, bad = [], [], 0, 0
        lbfgs = (
            self.polishing
            and self.polish_optimizer == "lbfgs"
            and self.polished >= self.lbfgs_after
        )
        try:
            if lbfgs:
                for group in opt.param_groups:  # the history's lr: polish_lr, as with Adam
                    group["lr"] = self.learning_rate(first)
                x, y = self.batch(trainer, epoch, 0)
                value, gn, evaluations, ok = self._lbfgs_epoch(trainer, params, session, x, y)
                if ok:
                    losses, norms = [value] * evaluations, [gn]
                    self._grow_after_lbfgs(epoch, value, max_len)
                else:
                    bad = 1
            for it in range(0 if lbfgs else self.iterations):
                lr = self.learning_rate(first)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = self.batch(trainer, epoch, it)
                decay = self.signal_decay_rate()
                if session is not None:
                    value, gn, _ = session.step(
                        x, y, lr, average=1.0 - self.polish_ema, signal_decay=decay
                    )
                else:
                    value, gn = self._torch_step(trainer, params, x, y, lr * decay)
                if not (math.isfinite(value) and math.isfinite(gn)):
                    bad += 1
                    self.held = 0
                    continue
                if averaging and session is None:
                    with torch.no_grad():
                        for a, p in zip(self.average, params, strict=True):
                            a.lerp_(p.detach(), 1.0 - self.polish_ema)
                losses.append(value)
                norms.append(gn)
                clipped += trainer.clip_grad_norm is not None and gn > trainer.clip_grad_norm
                self.held = self.held + 1 if value < self.threshold else 0
                if self.held >= self.streak and self.window < max_len:
                    grown = self._grown(max_len)
                    log.info(
                        "epoch %d iteration %d: window %d → %d", epoch, it + 1, self.window, grown
                    )
                    self.window, self.held = grown, 0
        finally:
            if session is not None:
                session.close()
        self.polished += self.polishing
        if averaging:  # validation and the checkpoint see the average; next epoch trains on
            self.raw = [p.detach().clone() for p in params]
            self._swap(params, self.average)
        n = max(len(losses), 1)
        return EpochStats(
            loss=float(np.mean(losses)) if losses else float("nan"),
            rows=len(losses) * self.window * len(x),
            updates=len(losses),
            grad_norm_mean=float(np.mean(norms)) if norms else float("nan"),
            clipped_fraction=clipped / n,
            bad_steps=bad,
            h_norm=float("nan"),
            c_norm=float("nan"),
            extra={
                "stopped_early": bad >= trainer.max_bad_steps,
                "window": self.window,
                "polishing": self.polishing,
                "lbfgs": lbfgs,
            },
        )
