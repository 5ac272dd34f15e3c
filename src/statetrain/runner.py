"""One training run of one grid point on one dataset, resumable: what the `train` rule runs.

Read top to bottom it is the whole recipe: threads and seed, data, model, optimizer, trainer,
resume from ``last.pth`` if it belongs to this run, the epoch loop, then the best weights scored
once on the test split and the declared outputs written atomically at the very end.

``last.pth`` is deliberately not a declared Snakemake output: Snakemake deletes declared
outputs before a job starts and after it fails, so only an undeclared file survives a crash.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint_file
from .config import config_hash, identity
from .io import write_json, write_text
from .model import FrequencyLSTM
from .trainer import Split, StatefulTrainer, set_seed
from .validation import file_digest, load_array, validate_array

log = logging.getLogger("statetrain")

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived: stop after saying where the run can resume from."""


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def load_split(path: str | Path, min_stream_length: int = 1) -> Split:
    array = load_array(path)
    validate_array(array, path=path, min_stream_length=min_stream_length)
    return Split.from_array(array)


def build_trainer(
    training: Mapping[str, Any],
    train: Split,
    validation: Split | None,
    frequencies: Sequence[float],
    metadata: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> StatefulTrainer:
    """Model, optimizer and trainer from a `training` config section (seeded)."""
    torch.set_num_threads(int(training["threads"]))
    set_seed(int(training["seed"]))
    model = FrequencyLSTM(
        input_size=train.x.shape[1],
        hidden_size=training["hidden_size"],
        num_layers=training["num_layers"],
        forget_bias=training["forget_bias"],
    )
    optimizer = OPTIMIZERS[training["optimizer"]](
        model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"]
    )
    return StatefulTrainer(
        model,
        train,
        nn.MSELoss(),
        optimizer,
        clip_grad_norm=training["clip_grad_norm"],
        val_loader=validation,
        tbptt_steps=training["tbptt_steps"],
        state_reset=training["state_reset"],
        engine=training["engine"],
        max_bad_steps=training["max_bad_steps"],
        frequencies=frequencies,
        progress=progress,
        metadata=metadata,
    )


def _try_resume(trainer: StatefulTrainer, last: Path, run_hash: str, epochs: int) -> None:
    """Continue from `last` when it is this run's; otherwise say why and start fresh."""
    if not last.exists():
        log.info("no %s: starting a fresh run", last.name)
        return
    try:
        ckpt = load_checkpoint_file(last)
    except CheckpointError as exc:
        aside = last.with_name(last.name + ".corrupt")
        last.replace(aside)
        log.warning("%s Moved it to %s; starting a fresh run.", exc, aside.name)
        return
    if ckpt.get("config_hash") != run_hash:
        aside = last.with_name(last.name + ".previous")
        last.replace(aside)
        log.warning(
            "%s belongs to a different configuration (hash %s, this run %s): something that "
            "affects training changed (data, model or optimizer settings). Moved it to %s; "
            "starting a fresh run.",
            last.name,
            ckpt.get("config_hash"),
            run_hash,
            aside.name,
        )
        return
    if int(ckpt.get("epoch", 0)) > epochs:
        log.warning(
            "%s has %s epochs, more than training.epochs = %d: starting a fresh run so that "
            "the result is that of a %d-epoch run.",
            last.name,
            ckpt.get("epoch"),
            epochs,
            epochs,
        )
        return
    try:
        trainer.load_checkpoint(last)
    except CheckpointError as exc:
        log.warning("%s Starting a fresh run.", exc)
        return
    log.info("resuming from %s at epoch %d of %d", last.name, trainer.epoch, epochs)


def history_csv(history: Mapping[str, list]) -> str:
    keys = [k for k, v in history.items() if isinstance(v, list)]
    n = max((len(history[k]) for k in keys), default=0)
    lines = [",".join(keys)]
    for i in range(n):
        cells = [repr(history[k][i]) if i < len(history[k]) else "" for k in keys]
        lines.append(",".join(c if c != "None" else "" for c in cells))
    return "\n".join(lines) + "\n"


def train_run(
    training: Mapping[str, Any],
    paths: Mapping[str, str | Path],
    out_dir: str | Path,
    frequencies: Sequence[float],
    *,
    min_stream_length: int = 1,
    labels: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or resume) one run into `out_dir`; return its metrics.

    Writes best_model.pth, training_history.json, history.csv and metrics.json (the declared
    outputs) at the end, and last.pth (the resumable state) after every epoch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train = load_split(paths["train"], min_stream_length)
    validation = load_split(paths["validation"], min_stream_length)
    digests = [file_digest(paths["train"]), file_digest(paths["validation"])]
    ident = identity(training, digests)
    run_hash = config_hash(ident)
    metadata = {"config": dict(training), "config_hash": run_hash, "labels": dict(labels or {})}
    trainer = build_trainer(training, train, validation, frequencies, metadata, progress)
    last = out_dir / "last.pth"
    _try_resume(trainer, last, run_hash, int(training["epochs"]))

    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        trainer.train(int(training["epochs"]), save_dir=out_dir, save_best=False, save_last=True)
    except Interrupted as exc:
        log.error(
            "%s received during epoch %d: %s holds epoch %d; run the same command again to "
            "resume from there.",
            exc,
            trainer.epoch + 1,
            last.name,
            trainer.epoch,
        )
        raise SystemExit(128 + signal.Signals[str(exc)].value) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # The deployable model is the best frozen-validation epoch, scored once on the test set.
    if trainer.best_state is not None:
        trainer.model.load_state_dict(trainer.best_state)
    test = load_split(paths["test"], min_stream_length)
    metrics = {
        **dict(labels or {}),
        "engine": trainer.engine,
        "engine_reason": trainer.engine_reason,
        "epochs": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "monitor": trainer.monitor,
        "config_hash": run_hash,
        "training": dict(training),
        "train_seconds": float(sum(trainer.history["epoch_times"])),
        "validation": trainer.evaluate(validation),
        "test": trainer.evaluate(test),
    }
    trainer.save_checkpoint(out_dir, "best_model.pth", best_only=True)
    write_json(trainer.history, out_dir / "training_history.json")
    write_text(history_csv(trainer.history), out_dir / "history.csv")
    write_json(metrics, out_dir / "metrics.json")
    log.info(
        "done in %.1fs: best epoch %d, validation MSE %.6f, test MSE %.6f",
        time.perf_counter() - t_start,
        trainer.best_epoch,
        metrics["validation"]["overall"]["mse"],
        metrics["test"]["overall"]["mse"],
    )
    return metrics


def load_model(path: str | Path) -> tuple[FrequencyLSTM, dict[str, Any]]:
    """A FrequencyLSTM with the weights of a statetrain checkpoint (data only, never code)."""
    ckpt = load_checkpoint_file(path)
    args = ckpt.get("model_args") or {}
    model = FrequencyLSTM(**args)
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match its own model_args {args}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    model.eval()
    return model, ckpt
