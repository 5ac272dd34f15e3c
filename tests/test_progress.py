"""Training progress on the terminal (one line per epoch) and readable log files.

Under Snakemake a train job's logging and stderr go to its log file; the EpochProgress
callback writes one line per epoch to the process's own stderr, which Snakemake shows. The
runs here happen in a subprocess whose stderr is a pipe, as under Snakemake or SLURM.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from statetrain.callbacks import EpochProgress, _duration

LINE = re.compile(
    r"^t/g: epoch (\d+)/3, train_loss [-+0-9.e]+, val_mse [-+0-9.e]+ \(best [-+0-9.e]+ at \d\), "
    r"[0-9.]+ s/epoch, (~.+ left|done)$"
)


def _train(tmp_path: Path, training: dict, paths: dict, *, echo: bool = False, progress=False):
    """A short run inside rule_logging, as the train rule runs it; returns (stderr, log)."""
    code = (
        "import json, sys\n"
        "from statetrain import runner, scripting\n"
        "training, paths, out, log, echo, progress = json.loads(sys.argv[1])\n"
        "with scripting.rule_logging(log, echo=echo):\n"
        "    runner.run('frequency', {'frequencies': [1, 3, 5, 7]}, training, paths, out,\n"
        "               progress=progress, labels={'dataset': 't', 'grid_point': 'g'})\n"
    )
    log = tmp_path / "train.log"
    args = [training, {k: str(v) for k, v in paths.items()}, str(tmp_path / "run")]
    args += [str(log), echo, progress]
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr, log.read_text()


def test_one_line_per_epoch_on_stderr_and_plain_lines_in_the_log(
    tmp_path: Path, training_cfg: dict, small_paths: dict
) -> None:
    stderr, log = _train(tmp_path, {**training_cfg, "epochs": 3}, small_paths)
    lines = [line for line in stderr.splitlines() if "s/epoch" in line]
    assert len(lines) == 3, stderr
    for epoch, line in enumerate(lines, start=1):
        match = LINE.match(line)
        assert match, line
        assert int(match.group(1)) == epoch
    assert lines[-1].endswith("done") and lines[0].endswith("left")
    # The log keeps the logger's lines (no progress line, no bar), one per epoch.
    assert "\r" not in log
    assert len(re.findall(r"INFO epoch \d/3 ", log)) == 3
    assert "s/epoch" not in log


def test_no_carriage_return_bars_when_stderr_is_not_a_terminal(
    tmp_path: Path, training_cfg: dict, small_paths: dict
) -> None:
    """The reference loop's tqdm bar (progress=True, as the CLI asks) is off on a pipe."""
    training = {**training_cfg, "epochs": 2, "engine": "torch"}
    stderr, log = _train(tmp_path, training, small_paths, echo=True, progress=True)
    assert "\r" not in stderr and "\r" not in log
    assert "it/s" not in stderr
    # With the logger echoing to the terminal (the CLI) its epoch lines are the progress;
    # EpochProgress stays quiet instead of repeating them.
    assert len(re.findall(r"INFO epoch \d/2 ", stderr)) == 2
    assert "s/epoch" not in stderr


class _Trainer:
    monitor = "val_mse"
    best_score, best_epoch = 0.25, 1

    def __init__(self, times: list[float], evals: list[float]) -> None:
        self.history = {"epoch_times": times, "eval_time": evals}


def test_time_left_uses_the_recent_epochs() -> None:
    """The first epoch's one-off cost (compilation) leaves the estimate after `window`."""
    stream = io.StringIO()
    cb = EpochProgress("spec/lr~0.001", 30, stream=stream, window=2)
    cb.on_train_begin(_Trainer([], []))
    trainer = _Trainer([20.0, 1.0, 1.0], [0.5, 0.5, 0.5])
    cb.on_epoch_end(trainer, 3, {"train_loss": 0.3, "val_mse": 0.26})
    line = stream.getvalue()
    assert line == (
        "spec/lr~0.001: epoch 3/30, train_loss 0.3, val_mse 0.26 (best 0.25 at 1), "
        "1.5 s/epoch, ~40 s left\n"
    )


def test_without_validation_the_line_has_no_metric() -> None:
    trainer = _Trainer([2.0], [])
    trainer.monitor = "train_loss"
    cb = EpochProgress("x", 1, stream=io.StringIO())
    assert (
        cb.line(trainer, 1, {"train_loss": 0.5})
        == "x: epoch 1/1, train_loss 0.5, 2.0 s/epoch, done"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (59.4, "59 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
)
def test_duration(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
