"""One training run of one grid point on one dataset, resumable: what the `train` rule runs.

Read top to bottom it is the whole recipe: threads and seed, data, model, optimizer, trainer,
resume from ``last.pth`` if it belongs to this run, the epoch loop, then the best weights scored
once on the test split and the declared outputs written atomically at the very end.

``last.pth`` is deliberately not a declared Snakemake output: Snakemake deletes declared
outputs before a job starts and after it fails, so only an undeclared file survives a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    EpochProgress,
    MLflowLogger,
    ModelCheckpoint,
    TensorBoardLogger,
    flatten,
)
from .checkpoint import CheckpointError, StaleCheckpointError, load_checkpoint_file, load_model
from .config import config_hash, identity
from .io import write_json
from .loop import EpochLoop, set_seed
from .validation import file_digest

log = logging.getLogger("statetrain")

__all__ = ["load_model", "run", "run_lock"]

RUN_FILES = (
    "best_model.pth",
    "metrics.json",
    "training_history.json",
    "history.csv",
    "loss_curves.png",
)


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived: stop after saying where the run can resume from."""


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _set_aside(last: Path, suffix: str, why: str) -> None:
    """Keep a checkpoint that cannot be resumed (never delete a user's training) and say so."""
    aside = last.with_name(last.name + suffix)
    last.replace(aside)
    log.warning("%s Moved it to %s; starting a fresh run from its random seed.", why, aside.name)


def _try_resume(trainer: EpochLoop, last: Path, run_hash: str, epochs: int) -> None:
    """Continue from `last` when it is this run's; otherwise set it aside and start fresh.

    Whatever goes wrong (unreadable, NaN weights, another configuration, a malformed field,
    a state that does not fit the model), last.pth is moved aside, so the next run does not
    fail on it again, and the trainer is left exactly as built from its random seed.
    """
    if not last.exists():
        log.info("no %s: starting a fresh run", last.name)
        return
    try:
        ckpt = load_checkpoint_file(last)
    except CheckpointError as exc:
        _set_aside(last, ".corrupt", str(exc))
        return
    if ckpt.get("config_hash") != run_hash:
        _set_aside(
            last,
            ".previous",
            f"{last.name} belongs to a different configuration (hash "
            f"{ckpt.get('config_hash')}, this run {run_hash}): something that affects training "
            "changed (data, model or optimizer settings).",
        )
        return
    epoch = ckpt.get("epoch", 0)
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > epochs:
        _set_aside(
            last,
            ".previous",
            f"{last.name} has {epoch} epochs, more than training.epochs = {epochs}: the result "
            f"must be that of a {epochs}-epoch run.",
        )
        return
    try:
        trainer.load_checkpoint(last)
    except StaleCheckpointError as exc:  # sound, but started from other init weights
        _set_aside(last, ".previous", str(exc))
        return
    except CheckpointError as exc:
        _set_aside(last, ".corrupt", str(exc))
        return
    log.info("resuming from %s at epoch %d of %d", last.name, trainer.epoch, epochs)


class RunLockedError(RuntimeError):
    """Another process is training in this run directory."""


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` while training in it.

    Two trainers in one directory (the workflow and a hand-typed ``statetrain train`` of the
    same grid point) would interleave their last.pth and history; the second one is refused,
    naming the first. The lock is the kernel's (flock), so a killed trainer never leaves a
    stale lock behind: its resume is never blocked.
    """
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ".lock"
    fh = open(path, "a+")  # noqa: SIM115 - held for the whole run, closed below
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise RunLockedError(
                f"Run directory '{out_dir}' is in use: {holder} is training in it. Wait for "
                "that run to finish (or stop it) and run again; two trainers in one run "
                "directory would corrupt its history."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def run(
    task_name: str,
    spec: Mapping[str, Any],
    training: Mapping[str, Any],
    paths: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    labels: Mapping[str, Any] | None = None,
    logging_cfg: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or resume) one run of any task into `out_dir`; return its frozen metrics.

    `spec` is the dataset scenario, `training` the validated training section of one grid
    point, `paths` the train/validation/test split files. Writes best_model.pth,
    training_history.json, history.csv, loss_curves.png and metrics.json (the declared
    outputs) at the end,
    and last.pth (the resumable state) after every epoch.
    """
    from .tasks import get_task

    out_dir = Path(out_dir)
    with run_lock(out_dir):
        t_start = time.perf_counter()
        torch.set_num_threads(int(training["threads"]))
        set_seed(int(training["seed"]))
        task = get_task(task_name, spec, training)
        splits = {s: task.read_split(paths[s]) for s in ("train", "validation")}
        run_hash, metadata = _identity(training, paths, labels, task_name)
        callbacks, loggers = _callbacks(training, logging_cfg, out_dir, labels)
        trainer = task.build_trainer(
            splits, metadata=metadata, callbacks=callbacks, progress=progress
        )
        _fit(trainer, training, out_dir, run_hash)
        # The deployable model is the best frozen-validation epoch, scored once on the test set.
        splits["test"] = task.read_split(paths["test"])
        scores = task.score(trainer, splits)
        metrics = _finish(trainer, training, out_dir, labels, run_hash, scores)
        if loggers:
            figures = task.log_figures(trainer, splits, out_dir)
            for logger in loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.add_images(figures, trainer.best_epoch)
            log_artifacts(loggers, out_dir, figures, trainer.model)
        key = task.selection_metric
        log.info(
            "done in %.1fs: best epoch %d, validation %s %.6g, test %s %.6g",
            time.perf_counter() - t_start,
            trainer.best_epoch,
            key,
            scores["validation"]["overall"][key],
            key,
            scores["test"]["overall"][key],
        )
        return metrics


def _identity(
    training: Mapping[str, Any],
    paths: Mapping[str, str | Path],
    labels: Mapping | None,
    task: str = "frequency",
) -> tuple[str, dict[str, Any]]:
    """The run's hash (training keys that shape the weights + the data) and its metadata."""
    digests = [file_digest(paths["train"]), file_digest(paths["validation"])]
    run_hash = config_hash(identity(training, digests, task))
    metadata = {"config": dict(training), "config_hash": run_hash, "labels": dict(labels or {})}
    return run_hash, metadata


def _callbacks(
    training: Mapping[str, Any],
    logging_cfg: Mapping[str, Any] | None,
    out_dir: Path,
    labels: Mapping[str, Any] | None,
) -> tuple[list[Callback], list[Callback]]:
    """last.pth every epoch (+ every-N/top-k), the CSV history, a progress line per epoch on
    the terminal, and the configured loggers."""
    loggers = make_loggers(training, logging_cfg or {}, out_dir, labels or {})
    name = "/".join(str(v) for v in (labels or {}).values()) or out_dir.name
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
        EpochProgress(name, training["epochs"]),
        *loggers,
        *_early_stopping(training),
    ]
    return callbacks, loggers


def _fit(trainer: EpochLoop, training: Mapping[str, Any], out_dir: Path, run_hash: str) -> None:
    """Resume from last.pth when it is this run's, train; SIGTERM/SIGINT → exit 128+signal."""
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
    if trainer.best_state is not None:
        trainer.model.load_state_dict(trainer.best_state)


def _finish(
    trainer: EpochLoop,
    training: Mapping[str, Any],
    out_dir: Path,
    labels: Mapping[str, Any] | None,
    run_hash: str,
    scores: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the declared outputs (best model, history, metrics) atomically, at the very end."""
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
        **scores,
    }
    trainer.save_checkpoint(out_dir, "best_model.pth", best_only=True)
    write_json(trainer.history, out_dir / "training_history.json")
    # The run's loss curves are drawn here, not by a job of their own: one job per grid point
    # instead of two keeps a 10,000-point sweep's plan (and its cluster queue) half as long.
    from .plots import loss_curves

    title = "/".join(str(v) for v in (labels or {}).values()) or out_dir.name
    loss_curves(trainer.history, out_dir / "loss_curves.png", title)
    write_json(metrics, out_dir / "metrics.json")
    return metrics


def _polishing_column(training: Mapping[str, Any]) -> str:
    """The history column whose first true epoch starts the patience of `after_polishing`:
    with L-BFGS polishing its first L-BFGS epoch (the Adam epochs of `lbfgs_after` before it
    remove the weights on S and may score worse first, which is not a plateau)."""
    window = training.get("window") or {}
    return "lbfgs" if window.get("polish_optimizer") == "lbfgs" else "polishing"


def _early_stopping(training: Mapping[str, Any]) -> list[Callback]:
    stopping = training["early_stopping"]
    if not stopping["enabled"]:
        return []
    return [
        EarlyStopping(
            monitor=training["monitor"],
            patience=stopping["patience"],
            min_delta=stopping["min_delta"],
            mode=training["monitor_mode"],
            level=stopping.get("level"),
            since=_polishing_column(training) if stopping.get("after_polishing") else None,
            # The deployed model is always the best epoch (best_model.pth), so the run has
            # nothing to restore: the last epoch's weights only continue in last.pth.
            restore_best_weights=False,
        )
    ]


def make_loggers(
    training: Mapping[str, Any],
    logging_cfg: Mapping[str, Any],
    out_dir: Path,
    labels: Mapping[str, Any],
) -> list[Callback]:
    """TensorBoard and MLflow callbacks as the `logging` config section asks."""
    loggers: list[Callback] = []
    params = flatten({"training": dict(training), "labels": dict(labels)})
    if logging_cfg.get("tensorboard"):
        loggers.append(TensorBoardLogger(out_dir / "tensorboard", hparams=params))
    if logging_cfg.get("mlflow"):
        uri = (
            os.environ.get("MLFLOW_TRACKING_URI")
            or logging_cfg.get("mlflow_tracking_uri")
            or f"sqlite:///{Path('results/mlflow/mlflow.db').resolve()}"
        )
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        name = "/".join(str(v) for v in labels.values()) or out_dir.name
        tags = {f"statetrain.{k}": v for k, v in labels.items()}
        loggers.append(
            MLflowLogger(
                uri, logging_cfg.get("mlflow_experiment") or "statetrain", name, params, tags
            )
        )
    return loggers


def log_artifacts(
    loggers: Sequence[Callback], out_dir: Path, extra: Sequence[Path] = (), model: Any = None
) -> None:
    """The run's declared outputs (and `extra` files, and the model) to MLflow."""
    files = [out_dir / n for n in RUN_FILES] + list(extra)
    for logger in loggers:
        if isinstance(logger, MLflowLogger):
            logger.log_artifacts(files, model)
