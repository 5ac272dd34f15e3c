"""Callbacks: small hooks with one job each, called by StatefulTrainer.train.

Hooks: ``on_train_begin(trainer)``, ``on_epoch_begin(trainer, epoch)``,
``on_epoch_end(trainer, epoch, row)`` (``row`` holds the epoch's metrics) and
``on_train_end(trainer)``. A callback keeps no state that cannot be rebuilt from the trainer's
history, so a resumed run behaves exactly as an uninterrupted one.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .metrics import MetricsTracker

log = logging.getLogger("statetrain")


class Callback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, trainer: Any) -> None:
        pass

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        pass

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        """Training stopped by an exception (a failure, Ctrl-C, SIGTERM); it is re-raised."""


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.

    With ``level`` the patience counts only once the best value has reached it (below for
    mode min, above for max): window training sits on a plateau for thousands of iterations
    before it locks, and a plain patience would stop it there. With ``since`` (a history
    column, e.g. window training's ``polishing``) the patience counts only from the first
    epoch where that column is true: the cooling-lr phase swings too much to judge, the
    polishing phase is what the patience is for. With ``restore_best_weights``
    the trainer's model ends with the best epoch's weights. Everything is read from the
    history, so a resumed run stops exactly where an uninterrupted one would.
    """

    def __init__(
        self,
        monitor: str = "val_mse",
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best_weights: bool = True,
        level: float | None = None,
        since: str | None = None,
    ) -> None:
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.restore_best_weights = restore_best_weights
        self.level = level
        self.since = since
        self.stopped_epoch = 0

    def epochs_without_improvement(self, trainer: Any) -> int:
        tracker = MetricsTracker(trainer.history)
        values = tracker.get_history(self.monitor)
        best_epoch = tracker.get_best_epoch(self.monitor, self.mode, self.min_delta)
        if self.level is not None:
            best = values[best_epoch - 1] if best_epoch else None
            reached = best is not None and (
                best < self.level if self.mode == "min" else best > self.level
            )
            if not reached:
                return 0
        counted_from = 0  # epochs before this one do not count
        if self.since is not None:
            flags = trainer.history.get(self.since) or []
            first = next((i for i, flag in enumerate(flags) if flag), None)
            if first is None:
                return 0
            counted_from = first
        return len(values) - max(best_epoch, counted_from)

    def on_train_begin(self, trainer: Any) -> None:
        # A resumed run that had already stopped stays stopped, as an uninterrupted one would.
        if trainer.history.get(self.monitor) and self.epochs_without_improvement(trainer) >= (
            self.patience
        ):
            trainer.stop_training = True

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        if self.epochs_without_improvement(trainer) >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True
            log.info(
                "early stopping at epoch %d: %s has not improved by %g for %d epochs",
                epoch,
                self.monitor,
                self.min_delta,
                self.patience,
            )

    def on_train_end(self, trainer: Any) -> None:
        if self.restore_best_weights and trainer.best_state is not None:
            trainer.model.load_state_dict(trainer.best_state)


class ModelCheckpoint(Callback):
    """Checkpoints by a monitored metric: best, last, every N epochs, and the top k kept.

    Files: ``best_model.pth`` (best `monitor`), ``last.pth`` (resumable state),
    ``epoch_{N:04d}.pth`` every `every_n_epochs`, and ``top_{rank}.pth`` for the `save_top_k`
    best epochs (seed 004 keeps three).
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = "val_mse",
        mode: str = "min",
        save_best: bool = True,
        save_last: bool = True,
        every_n_epochs: int = 0,
        save_top_k: int = 0,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, mode
        self.save_best, self.save_last = save_best, save_last
        self.every_n_epochs, self.save_top_k = every_n_epochs, save_top_k
        self.top: list[tuple[float, int]] = []  # (score, epoch), best first

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        score = row.get(self.monitor)
        if self.save_best and row.get("improved"):
            trainer.save_checkpoint(self.dirpath, "best_model.pth", best_only=True)
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            trainer.save_checkpoint(self.dirpath, f"epoch_{epoch:04d}.pth")
        if self.save_top_k and score is not None and math.isfinite(score):
            self._update_top(trainer, float(score), epoch)
        if self.save_last:  # last, so that it also records the files written above
            trainer.save_checkpoint(self.dirpath, "last.pth")

    def on_train_begin(self, trainer: Any) -> None:
        # The ranking is rebuilt from the history, so a resumed run keeps the right files.
        scored = [
            (float(v), e)
            for e, v in enumerate(trainer.history.get(self.monitor, []), start=1)
            if v is not None and math.isfinite(v)
        ]
        self.top = sorted(scored, key=self._key)[: self.save_top_k]

    def _key(self, entry: tuple[float, int]) -> tuple[float, int]:
        return (entry[0] if self.mode == "min" else -entry[0], entry[1])

    def _update_top(self, trainer: Any, score: float, epoch: int) -> None:
        """Keep top_1.pth (best) .. top_k.pth: shift worse files down, write this epoch."""
        entry = (score, epoch)
        ranked = sorted([*self.top, entry], key=self._key)[: self.save_top_k]
        if entry not in ranked:
            return
        rank = ranked.index(entry) + 1
        for r in range(len(ranked), rank, -1):
            src = self.dirpath / f"top_{r - 1}.pth"
            if src.exists():
                src.replace(self.dirpath / f"top_{r}.pth")
        trainer.save_checkpoint(self.dirpath, f"top_{rank}.pth")
        self.top = ranked


class CSVLogger(Callback):
    """One CSV row per epoch, the file rewritten atomically from the history as each epoch
    ends: readable while training runs, complete after a resume, never half a row after a
    crash (a run has hundreds of epochs, so rewriting costs nothing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _write(self, trainer: Any) -> None:
        from .io import write_text

        rows = MetricsTracker(trainer.history).rows()
        buffer = io.StringIO(newline="")
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_text(buffer.getvalue(), self.path)

    def on_train_begin(self, trainer: Any) -> None:
        self._write(trainer)

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        self._write(trainer)


class TensorBoardLogger(Callback):
    """Scalars per epoch into TensorBoard event files (`tensorboard --logdir ...`)."""

    def __init__(self, log_dir: str | Path, hparams: Mapping[str, Any] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.writer = None
        # The grid point's settings: TensorBoard's HParams view compares grid points by them.
        self.hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in (hparams or {}).items()
        }

    def on_train_begin(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Rewrite from the history (purging older events) so a resumed run's log is complete.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=1)
        for past in MetricsTracker(trainer.history).rows():
            self.on_epoch_end(trainer, int(past["epoch"]), past)

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(key.replace("val_mse_", "val_mse/"), value, epoch)
        self.writer.flush()

    def add_images(self, paths: Sequence[str | Path], step: int) -> None:
        """PNG figures of the finished run, tagged by file name (works after on_train_end:
        the figures are made once training is over)."""
        import matplotlib.image
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(self.log_dir)) as writer:
            for path in paths:
                image = matplotlib.image.imread(str(path))[..., :3]
                writer.add_image(f"figures/{Path(path).stem}", image, step, dataformats="HWC")

    def on_train_end(self, trainer: Any) -> None:
        if self.writer is None:
            return
        if self.hparams:
            score = float(trainer.best_score)
            metrics = {f"hparam/best_{trainer.monitor}": score if math.isfinite(score) else 0.0}
            self.writer.add_hparams(self.hparams, metrics, run_name=".")
        self.writer.close()


@contextmanager
def _sqlite_setup_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock on `<db>.lock` beside a sqlite tracking store (nothing for others)."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MLflowLogger(Callback):
    """One MLflow run per training run: params and tags from the config, metrics per epoch,
    the run's files and the model at the end.

    The run id is kept in last.pth (`trainer.tracking`), so a resumed run, or a SLURM retry of
    a killed job, continues the same MLflow run instead of opening a new one; a run that ends
    by an exception is marked FAILED, one stopped by Ctrl-C or SIGTERM KILLED. The tracking
    URI defaults to a local sqlite file (no server); MLFLOW_TRACKING_URI or the
    `tracking_uri` argument override it.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.params = dict(params)
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.run_id: str | None = None

    def _existing(self, run_id: str | None) -> bool:
        import mlflow

        if not run_id:
            return False
        try:
            mlflow.get_run(run_id)
        except Exception:  # deleted, or another tracking store: start a new run
            return False
        return True

    def on_train_begin(self, trainer: Any) -> None:
        import mlflow

        with _sqlite_setup_lock(self.tracking_uri):
            # Parallel jobs (a grid on a cluster) opening a new sqlite store at once race in
            # MLflow's schema migrations ("table runs already exists"): one at a time creates
            # or migrates it, and opens its run; metrics are then written concurrently.
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_experiment(self.experiment)
            self._start(trainer)

    def _start(self, trainer: Any) -> None:
        import mlflow

        previous = trainer.tracking.get("mlflow_run_id")
        if self._existing(previous):
            mlflow.start_run(run_id=previous)
            self.run_id = previous
            logged = len(mlflow.get_run(previous).data.metrics) > 0
        else:
            run = mlflow.start_run(run_name=self.run_name, tags=self.tags)
            self.run_id = run.info.run_id
            trainer.tracking["mlflow_run_id"] = self.run_id
            mlflow.log_params({k: str(v)[:500] for k, v in self.params.items()})
            logged = False
        if not logged:  # a run resumed from another store re-logs its past epochs
            for row in MetricsTracker(trainer.history).rows():
                self._log(row)

    def _log(self, row: Mapping[str, Any]) -> None:
        import mlflow

        metrics = {
            k: float(v)
            for k, v in row.items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and k != "epoch"
            and math.isfinite(float(v))
        }
        mlflow.log_metrics(metrics, step=int(row["epoch"]))

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        self._log(row)

    def log_artifacts(self, paths: list[str | Path], model: Any = None) -> None:
        """The run's files (and the trained model, as an MLflow PyTorch model) at the end."""
        import mlflow

        if self.run_id is None:
            return
        with mlflow.start_run(run_id=self.run_id):
            for path in paths:
                if Path(path).exists():
                    mlflow.log_artifact(str(path))
            if model is not None:
                try:
                    import mlflow.pytorch
                    import torch

                    # "pickle": the traced pt2 format needs an input example per model kind;
                    # the pinned torch as the requirement skips MLflow's slow inference.
                    mlflow.pytorch.log_model(
                        model,
                        name="model",
                        serialization_format="pickle",
                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                    )
                except Exception as exc:  # the files above are the record; the model is extra
                    log.warning("MLflow could not log the model (%s); its files are logged", exc)

    def on_train_end(self, trainer: Any) -> None:
        import mlflow

        mlflow.end_run()

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        killed = isinstance(exc, (KeyboardInterrupt, SystemExit)) or type(exc).__name__ == (
            "Interrupted"
        )
        mlflow.end_run(status="KILLED" if killed else "FAILED")


class EpochProgress(Callback):
    """One line per epoch on the terminal: run, epoch/epochs, loss, validation metric, time left.

    Under Snakemake a rule's logging and stderr go to its log file (scripting.rule_logging),
    so without this line the terminal shows only "N of M steps done" for the whole of a long
    training job. The line is written to the process's own stderr (`sys.__stderr__`), which
    Snakemake passes through to its terminal (and SLURM to the job's output file), and is
    flushed at once. Where the `statetrain` logger already writes to that stream (the CLI's
    echo), the logger's epoch line is shown there and this callback stays quiet.

    The time left is the mean duration (training + frozen validation) of the last
    `window` epochs times the epochs to go, all read from the trainer's history, so a
    resumed run estimates as an uninterrupted one would; the first epoch's one-off costs
    (the native engine's compilation) leave the estimate after `window` epochs.
    """

    def __init__(
        self, name: str, epochs: int, stream: TextIO | None = None, window: int = 5
    ) -> None:
        self.name, self.epochs, self.window = name, int(epochs), max(1, int(window))
        self.stream = stream
        self.active = True

    def on_train_begin(self, trainer: Any) -> None:
        if self.stream is None:
            self.stream = sys.__stderr__
            self.active = self.stream is not None and not _logger_writes_to(self.stream)

    def on_epoch_end(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> None:
        if self.active and self.stream is not None:
            self.stream.write(self.line(trainer, epoch, row) + "\n")
            self.stream.flush()

    def line(self, trainer: Any, epoch: int, row: Mapping[str, Any]) -> str:
        """The epoch's line, e.g. ``spec/lr~0.001: epoch 3/30, train_loss 0.284646,
        val_mse 0.514874 (best 0.510021 at 2), 1.3 s/epoch, ~35 s left``."""
        parts = [f"{self.name}: epoch {epoch}/{self.epochs}"]
        parts.append(f"train_loss {_number(row.get('train_loss'))}")
        monitor = getattr(trainer, "monitor", "train_loss")
        if monitor != "train_loss" and monitor in row:
            best = f" (best {_number(trainer.best_score)} at {trainer.best_epoch})"
            parts.append(f"{monitor} {_number(row[monitor])}{best}")
        per_epoch = self.seconds_per_epoch(trainer)
        left = max(0, self.epochs - epoch)
        parts.append(f"{per_epoch:.1f} s/epoch")
        parts.append(f"~{_duration(per_epoch * left)} left" if left else "done")
        return ", ".join(parts)

    def seconds_per_epoch(self, trainer: Any) -> float:
        history = trainer.history
        train = history.get("epoch_times", [])[-self.window :]
        evals = history.get("eval_time", [])[-self.window :]
        if not train:
            return 0.0
        return (sum(train) + sum(evals)) / len(train)


def _logger_writes_to(stream: TextIO) -> bool:
    """Whether a handler of the `statetrain` logger (or the root logger) writes to `stream`."""
    loggers = [logging.getLogger("statetrain"), logging.getLogger()]
    return any(getattr(h, "stream", None) is stream for lg in loggers for h in lg.handlers)


def _number(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 2 h 07 min: what a person reads at a glance."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}: MLflow params are flat."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "EpochProgress",
    "MLflowLogger",
    "ModelCheckpoint",
    "TensorBoardLogger",
    "flatten",
]
