"""One run end to end in the library: outputs, resume after an interruption, restarts."""

import json
import logging

import pytest
import torch

from statetrain import runner
from statetrain.checkpoint import load_checkpoint_file
from statetrain.tasks.frequency.trainer import StatefulTrainer


def weights(path):
    return load_checkpoint_file(path)["model_state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)


def run(training_cfg, small_paths, out, **overrides):
    return runner.run(
        "frequency",
        {"frequencies": [1, 3, 5, 7]},
        {**training_cfg, **overrides},
        small_paths,
        out,
        labels={"dataset": "t", "grid_point": "g"},
    )


def test_a_run_writes_its_outputs_and_is_deterministic(training_cfg, small_paths, tmp_path):
    metrics = run(training_cfg, small_paths, tmp_path / "a")
    for name in (
        "best_model.pth",
        "training_history.json",
        "history.csv",
        "metrics.json",
        "last.pth",
    ):
        assert (tmp_path / "a" / name).is_file(), name
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["test"]["overall"]["mse"] == pytest.approx(metrics["test"]["overall"]["mse"])
    assert set(saved["test"]) == {"overall", "1hz", "3hz", "5hz", "7hz"}
    assert set(saved["test"]["overall"]) == {"mse", "rmse", "mae", "pearson_r", "r2", "snr_db"}
    history = json.loads((tmp_path / "a" / "training_history.json").read_text())
    assert saved["best_epoch"] == 1 + min(range(3), key=history["val_mse"].__getitem__)
    csv_lines = (tmp_path / "a" / "history.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("train_loss,epoch_times")

    run(training_cfg, small_paths, tmp_path / "b")
    assert_same_weights(
        weights(tmp_path / "a/best_model.pth"), weights(tmp_path / "b/best_model.pth")
    )
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert again["validation"] == saved["validation"] and again["test"] == saved["test"]


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    training_cfg, small_paths, tmp_path, monkeypatch, caplog
):
    run(training_cfg, small_paths, tmp_path / "straight")

    real = StatefulTrainer.run_epoch

    def crash_in_epoch_3(self):
        if self.epoch == 2:
            raise RuntimeError("simulated crash")
        return real(self)

    monkeypatch.setattr(StatefulTrainer, "run_epoch", crash_in_epoch_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(training_cfg, small_paths, tmp_path / "crashed")
    assert not (tmp_path / "crashed" / "best_model.pth").exists()
    assert load_checkpoint_file(tmp_path / "crashed" / "last.pth")["epoch"] == 2
    monkeypatch.setattr(StatefulTrainer, "run_epoch", real)

    with caplog.at_level(logging.INFO, logger="statetrain"):
        run(training_cfg, small_paths, tmp_path / "crashed")
    assert "resuming from last.pth at epoch 2 of 3" in caplog.text
    assert_same_weights(
        weights(tmp_path / "straight/best_model.pth"), weights(tmp_path / "crashed/best_model.pth")
    )
    a = json.loads((tmp_path / "straight/metrics.json").read_text())
    b = json.loads((tmp_path / "crashed/metrics.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def test_more_epochs_continue_and_other_changes_restart(
    training_cfg, small_paths, tmp_path, caplog
):
    out = tmp_path / "run"
    run(training_cfg, small_paths, out, epochs=2)
    with caplog.at_level(logging.INFO, logger="statetrain"):
        run(training_cfg, small_paths, out, epochs=3)
    assert "resuming from last.pth at epoch 2 of 3" in caplog.text
    run(training_cfg, small_paths, tmp_path / "three", epochs=3)
    assert_same_weights(weights(out / "last.pth"), weights(tmp_path / "three/last.pth"))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="statetrain"):
        run(training_cfg, small_paths, out, epochs=3, lr=3e-3)
    assert "belongs to a different configuration" in caplog.text
    assert (out / "last.pth.previous").is_file()
    assert load_checkpoint_file(out / "last.pth")["config"]["lr"] == 3e-3


def test_a_corrupt_last_checkpoint_is_set_aside(training_cfg, small_paths, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pth").write_bytes(b"\x80\x04 not a checkpoint")
    with caplog.at_level(logging.INFO, logger="statetrain"):
        run(training_cfg, small_paths, out, epochs=1)
    assert "cannot be loaded" in caplog.text
    assert (out / "last.pth.corrupt").read_bytes() == b"\x80\x04 not a checkpoint"
    assert load_checkpoint_file(out / "last.pth")["epoch"] == 1


def test_resume_after_sigkill_equals_an_uninterrupted_run(training_cfg, small_paths, tmp_path):
    """kill -9 at an arbitrary moment after the first epoch, then the same call again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = {**training_cfg, "epochs": 6, "engine": "torch"}  # slow enough to interrupt
    code = (
        "import json, sys; from statetrain import runner; "
        "runner.run('frequency', {'frequencies': [1, 3, 5, 7]}, json.loads(sys.argv[1]), "
        "json.loads(sys.argv[2]), sys.argv[3], labels={'dataset': 't', 'grid_point': 'g'})"
    )
    paths = json.dumps({k: str(v) for k, v in small_paths.items()})
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg), paths, str(out)])
    deadline = time.time() + 120
    while not (out / "last.pth").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside a later epoch, or inside a checkpoint write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    killed_at = load_checkpoint_file(out / "last.pth")["epoch"]
    assert 1 <= killed_at < 6

    run(cfg, small_paths, out)
    run(cfg, small_paths, tmp_path / "straight")
    assert_same_weights(
        weights(out / "best_model.pth"), weights(tmp_path / "straight/best_model.pth")
    )
    assert_same_weights(weights(out / "last.pth"), weights(tmp_path / "straight/last.pth"))
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "straight/metrics.json").read_text())
    assert a["test"] == b["test"] and a["validation"] == b["validation"]


def test_sigterm_stops_cleanly_and_the_run_resumes(training_cfg, small_paths, tmp_path):
    """A cluster's time limit sends SIGTERM: exit 143, say where to resume, lose nothing."""
    import signal
    import subprocess
    import sys
    import time

    cfg = {**training_cfg, "epochs": 6, "engine": "torch"}  # slow enough to interrupt
    code = (
        "import json, sys, logging; from statetrain import runner; "
        "logging.basicConfig(level=logging.INFO); "
        "runner.run('frequency', {'frequencies': [1, 3, 5, 7]}, json.loads(sys.argv[1]), "
        "json.loads(sys.argv[2]), sys.argv[3], labels={'dataset': 't', 'grid_point': 'g'})"
    )
    paths = json.dumps({k: str(v) for k, v in small_paths.items()})
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(cfg), paths, str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "last.pth").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received during epoch" in err and "run the same command again" in err
    assert not list(out.glob(".*.tmp*"))  # no half-written temporary file left behind
    run(cfg, small_paths, out)
    run(cfg, small_paths, tmp_path / "straight")
    assert_same_weights(
        weights(out / "best_model.pth"), weights(tmp_path / "straight/best_model.pth")
    )


def test_a_full_disk_keeps_the_previous_checkpoint(
    training_cfg, small_paths, tmp_path, monkeypatch
):
    import errno

    from statetrain.checkpoint import CheckpointError

    out = tmp_path / "run"
    run(training_cfg, small_paths, out, epochs=1)
    before = (out / "last.pth").read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("statetrain.checkpoint.torch.save", no_space)
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous checkpoint"):
        run(training_cfg, small_paths, out, epochs=2)
    assert (out / "last.pth").read_bytes() == before
    assert not list(out.glob(".*.tmp*"))
    monkeypatch.undo()
    run(training_cfg, small_paths, out, epochs=2)  # space is back: it resumes from epoch 1
    assert load_checkpoint_file(out / "last.pth")["epoch"] == 2
