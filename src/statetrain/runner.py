"""One training run of one grid point on one dataset, resumable: what the `train` rule runs.

Read top to bottom it is the whole recipe: threads and seed, data, model, optimizer, trainer,
resume from ``last.pth`` if it belongs to this run, the epoch loop, then the best weights scored
once on the test split and the declared outputs written atomically at the very end.

``last.pth`` is deliberately not a declared Snakemake output: Snakemake deletes declared
outputs before a job starts and after it fails, so only an undeclared file survives a crash.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    MLflowLogger,
    ModelCheckpoint,
    TensorBoardLogger,
    flatten,
)
from .checkpoint import CheckpointError, load_checkpoint_file
from .config import config_hash, identity
from .io import write_json
from .model import FrequencyLSTM
from .trainer import Split, StatefulTrainer, get_device, set_seed
from .validation import file_digest, load_array, validate_array
from .window import WindowCurriculum

log = logging.getLogger("statetrain")


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived: stop after saying where the run can resume from."""


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def load_split(path: str | Path, min_stream_length: int = 1) -> Split:
    array = load_array(path)
    validate_array(array, path=path, min_stream_length=min_stream_length)
    return Split.from_array(array)


LOSSES = {
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "huber": nn.HuberLoss,
    "smooth_l1": nn.SmoothL1Loss,
}


def make_optimizer(training: Mapping[str, Any], params: Any) -> torch.optim.Optimizer:
    name, lr, wd = training["optimizer"], training["lr"], training["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=training["momentum"], weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, momentum=training["momentum"], weight_decay=wd)


def make_scheduler(training: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """Stepped once per epoch (plateau: on the monitored frozen metric)."""
    sch = training["scheduler"]
    kind = sch["type"]
    if kind == "none":
        return None
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=training["monitor_mode"],
            factor=sch["factor"],
            patience=sch["patience"],
            min_lr=sch["min_lr"],
        )
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, sch["step_size"], gamma=sch["gamma"])
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=sch["t_max"] or training["epochs"], eta_min=sch["min_lr"]
    )


def build_trainer(
    training: Mapping[str, Any],
    train: Split,
    validation: Split | None,
    frequencies: Sequence[float],
    metadata: Mapping[str, Any] | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
    data_spec: Mapping[str, Any] | None = None,
) -> StatefulTrainer:
    """Model, loss, optimizer, scheduler and trainer from a `training` config section."""
    torch.set_num_threads(int(training["threads"]))
    set_seed(int(training["seed"]))
    device = get_device(training["device"])
    model = FrequencyLSTM(
        input_size=train.x.shape[1],
        hidden_size=training["hidden_size"],
        num_layers=training["num_layers"],
        forget_bias=training["forget_bias"],
    ).to(device)
    optimizer = make_optimizer(training, model.parameters())
    callbacks = list(callbacks)
    stopping = training["early_stopping"]
    if stopping["enabled"]:
        callbacks.append(
            EarlyStopping(
                monitor=training["monitor"],
                patience=stopping["patience"],
                min_delta=stopping["min_delta"],
                mode=training["monitor_mode"],
                restore_best_weights=stopping["restore_best_weights"],
            )
        )
    window = None
    if training["mode"] == "window":
        w = training["window"]
        window = WindowCurriculum(
            first=w["first"],
            growth=w["growth"],
            streak=w["streak"],
            threshold=w["threshold"],
            draws=w["draws"],
            iterations=w["iterations"],
            lr_floor=w["lr_floor"],
            seed=int(training["seed"]),
            spec=data_spec,
        )
    return StatefulTrainer(
        model,
        train,
        LOSSES[training["loss"]](),
        optimizer,
        device=device,
        clip_grad_norm=training["clip_grad_norm"],
        val_loader=validation,
        tbptt_steps=training["tbptt_steps"],
        state_reset=training["state_reset"],
        engine=training["engine"],
        scheduler=make_scheduler(training, optimizer),
        max_bad_steps=training["max_bad_steps"],
        frequencies=frequencies,
        progress=progress,
        metadata=metadata,
        callbacks=callbacks,
        monitor=training["monitor"] if validation is not None else None,
        monitor_mode=training["monitor_mode"],
        window=window,
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


def train_run(
    training: Mapping[str, Any],
    paths: Mapping[str, str | Path],
    out_dir: str | Path,
    frequencies: Sequence[float],
    *,
    min_stream_length: int = 1,
    labels: Mapping[str, Any] | None = None,
    progress: bool = False,
    logging_cfg: Mapping[str, Any] | None = None,
    data_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run into `out_dir`; return its metrics.

    `data_spec` (a config dataset scenario) lets window training draw fresh noise from the
    generator; without it, windows come from the training file.

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
    loggers = make_loggers(training, logging_cfg or {}, out_dir, labels or {})
    ckpt = training["checkpoint"]
    callbacks = [
        ModelCheckpoint(
            out_dir,
            monitor=training["monitor"],
            mode=training["monitor_mode"],
            save_best=False,  # the declared best_model.pth is written once, at the end
            save_last=True,
            every_n_epochs=ckpt["every_n_epochs"],
            save_top_k=ckpt["save_top_k"],
        ),
        CSVLogger(out_dir / "history.csv"),
        *loggers,
    ]
    if data_spec is not None and any(f"{s}_path" in data_spec for s in paths):
        data_spec = None  # a user's files: no generator to draw fresh noise from
    trainer = build_trainer(
        training, train, validation, frequencies, metadata, progress, callbacks, data_spec
    )
    last = out_dir / "last.pth"
    _try_resume(trainer, last, run_hash, int(training["epochs"]))

    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        trainer.train(int(training["epochs"]), save_dir=None)
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
    write_json(metrics, out_dir / "metrics.json")
    finish_loggers(loggers, trainer, validation, out_dir)
    log.info(
        "done in %.1fs: best epoch %d, validation MSE %.6f, test MSE %.6f",
        time.perf_counter() - t_start,
        trainer.best_epoch,
        metrics["validation"]["overall"]["mse"],
        metrics["test"]["overall"]["mse"],
    )
    return metrics


def make_loggers(
    training: Mapping[str, Any],
    logging_cfg: Mapping[str, Any],
    out_dir: Path,
    labels: Mapping[str, Any],
) -> list[Callback]:
    """TensorBoard and MLflow callbacks as the `logging` config section asks."""
    loggers: list[Callback] = []
    if logging_cfg.get("tensorboard"):
        loggers.append(TensorBoardLogger(out_dir / "tensorboard"))
    if logging_cfg.get("mlflow"):
        uri = (
            os.environ.get("MLFLOW_TRACKING_URI")
            or logging_cfg.get("mlflow_tracking_uri")
            or f"sqlite:///{Path('results/mlflow/mlflow.db').resolve()}"
        )
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        name = "/".join(str(v) for v in labels.values()) or out_dir.name
        params = flatten({"training": dict(training), "labels": dict(labels)})
        loggers.append(
            MLflowLogger(uri, logging_cfg.get("mlflow_experiment", "statetrain"), name, params)
        )
    return loggers


def finish_loggers(
    loggers: Sequence[Callback], trainer: StatefulTrainer, validation: Split, out_dir: Path
) -> None:
    """The prediction figure to TensorBoard; model, metrics and figure to MLflow."""
    if not loggers:
        return
    from . import plots

    array = np.column_stack([validation.x, validation.y])
    figure_path = out_dir / "validation_predictions.png"
    fig = plots.prediction_figure(
        array,
        trainer.predict(validation),
        validation.starts,
        validation.columns,
        trainer.frequencies,
        fs=1000.0,
        title="Frozen predictions of the best epoch (validation set)",
    )
    fig.savefig(figure_path, dpi=100, bbox_inches="tight")
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.add_figure("predictions/validation", fig, trainer.best_epoch)
        if isinstance(logger, MLflowLogger):
            logger.log_artifacts(
                [
                    out_dir / "best_model.pth",
                    out_dir / "metrics.json",
                    out_dir / "training_history.json",
                    out_dir / "history.csv",
                    figure_path,
                ]
            )
    plots.close(fig)


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
